"""
L{NATPMPMapper}: NAT-PMP (RFC 6886) behind L{IPortMapper}.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.internet.defer import Deferred
from zope.interface import implementer

from .._client import NATPMPClient
from .._results import ExternalAddress, Mapping
from .._schedule import DELETE_SCHEDULE, RetransmitSchedule
from .._spec import Gateway, MappingSpec
from .interface import IPortMapper


@implementer(IPortMapper)
class NATPMPMapper:
    """
    Maps through a L{NATPMPClient}: renewals at half the lifetime (R15), suggesting the mapped
    external port; requests cut short to C{within} keep the RFC's doubling (R07).
    """

    method = "natpmp"
    reports_address = False  #: mappings do not carry the external address: ask for it

    def __init__(self, client: NATPMPClient, schedule: RetransmitSchedule | None = None) -> None:
        """
        @param client: The client, which may be shared with other mappers (one queue, R08).
        @param schedule: Retransmissions for this mapper's requests; the client's by default.
        """
        self.client = client
        self.schedule = schedule if schedule is not None else client.schedule
        self.gateway = Gateway(*client.gateway)

    def __repr__(self) -> str:
        return f"<NATPMPMapper for {self.gateway}>"

    @property
    def last_heard(self) -> float | None:
        return self.client.last_heard

    @property
    def silence_after(self) -> float:
        return self.schedule.total

    def _cut(self, schedule: RetransmitSchedule, within: float | None) -> RetransmitSchedule:
        return schedule if within is None else schedule.within(within)

    def map(self, spec: MappingSpec, lifetime: int, previous: Mapping | None = None,
            within: float | None = None) -> Deferred[Mapping]:
        suggested = previous.external_port if previous is not None else spec.external_port
        return self.client.map_port(spec.protocol, spec.internal_port, suggested, lifetime,
                                    schedule=self._cut(self.schedule, within))

    def renew(self, mapping: Mapping, lifetime: int,
              within: float | None = None) -> Deferred[Mapping]:
        return self.client.map_port(mapping.protocol, mapping.internal_port,
                                    mapping.external_port, lifetime,
                                    schedule=self._cut(self.schedule, within))

    def delete(self, spec: MappingSpec, mapping: Mapping | None = None,
               within: float | None = None) -> Deferred[Mapping]:
        return self.client.unmap_port(spec.protocol, spec.internal_port,
                                      schedule=self._cut(DELETE_SCHEDULE, within))

    def external_address(self) -> Deferred[ExternalAddress]:
        return self.client.get_external_address(schedule=self.schedule)

    def probe(self) -> Deferred[Any]:
        """One cheap request that any NAT-PMP gateway answers: the external address."""
        return self.client.get_external_address(schedule=self.schedule)

    def renewal_times(self, lifetime: float, rng: random.Random) -> list[float]:
        return [lifetime / 2]  # then keep trying until the lifetime runs out

    def observe_announcement(self, epoch: int) -> None:
        self.client.epoch.observe(epoch)

    def add_state_lost_observer(self, observer: Callable[[int, float], None]) -> None:
        self.client.epoch.add_observer(observer)

    def remove_state_lost_observer(self, observer: Callable[[int, float], None]) -> None:
        self.client.epoch.remove_observer(observer)
