"""
What a L{MappingService} tells its observers.
"""

from __future__ import annotations

from enum import Enum

from attrs import frozen

from ._results import Mapping
from ._spec import MappingSpec


class EventKind(Enum):
    """The kinds of L{MappingEvent}."""

    MAPPED = "mapped"  #: a mapping exists for the first time (C{mapping})
    RENEWED = "renewed"  #: renewed with the same external port
    RECREATED = "re-created"  #: made again after the gateway lost it (reboot, lapse)
    PORT_CHANGED = "port changed"  #: renewed or re-created on another external port (C{previous})
    EXPIRED = "expired"  #: a granted lifetime ran out before a renewal succeeded (C{previous})
    ADDRESS_CHANGED = "address changed"  #: the external address changed (C{external_address})
    STATE_LOST = "gateway lost state"  #: the gateway rebooted; mappings are being re-created
    FAILED = "mapping failed"  #: a request for C{spec} failed with C{error}; it will be retried
    REMOVED = "removed"  #: C{spec}'s mapping was deleted (or let go: C{mapping} is what the
    #: gateway keeps a while, a busy PCP mapping or a pinhole it would only shorten)


@frozen
class MappingEvent:
    """
    Something that happened to the service's mappings.

    @ivar spec: The mapping concerned, or C{None} for gateway-wide events.
    @ivar mapping: The mapping as now granted (MAPPED, RENEWED, PORT_CHANGED); for REMOVED,
        what the gateway still keeps, if anything.
    @ivar previous: The mapping before (RENEWED, PORT_CHANGED, REMOVED).
    @ivar external_address: The gateway's external address when known.
    @ivar error: What went wrong (FAILED).
    @ivar family: The address family concerned: 4, or 6 for an IPv6 pinhole and the IPv6
        router's events.
    """

    kind: EventKind
    spec: MappingSpec | None = None
    mapping: Mapping | None = None
    previous: Mapping | None = None
    external_address: str | None = None
    error: BaseException | None = None
    family: int = 4
