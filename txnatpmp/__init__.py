"""
txnatpmp: NAT-PMP (RFC 6886) port mapping for Twisted.

Ask a home or office NAT gateway to forward a port to this host, keep it forwarded, and learn
the public address, all without blocking the reactor.
"""

from ._client import NATPMPClient
from ._epoch import EpochTracker
from ._errors import (
    ClientStopped,
    DecodeError,
    GatewayNotFound,
    GatewayTimeout,
    NATPMPError,
    NetworkFailure,
    NoLifetimeGranted,
    NotAuthorized,
    OutOfResources,
    ResultError,
    UnsupportedOpcode,
    UnsupportedVersion,
)
from ._events import EventKind, MappingEvent
from ._gateway import find_gateway
from ._hold import HeldMapping, hold_mapping
from ._results import ExternalAddress, Mapping
from ._schedule import DELETE_SCHEDULE, RFC_SCHEDULE, RetransmitSchedule, RetryBackoff
from ._service import MappingService
from ._upnp import UPnPClient
from ._spec import Gateway, MappingSpec, parse_gateway, parse_spec

__all__ = [
    "ClientStopped",
    "DecodeError",
    "DELETE_SCHEDULE",
    "EpochTracker",
    "EventKind",
    "ExternalAddress",
    "Gateway",
    "GatewayNotFound",
    "GatewayTimeout",
    "HeldMapping",
    "Mapping",
    "MappingEvent",
    "MappingService",
    "MappingSpec",
    "NATPMPClient",
    "NATPMPError",
    "NetworkFailure",
    "NoLifetimeGranted",
    "NotAuthorized",
    "OutOfResources",
    "RFC_SCHEDULE",
    "ResultError",
    "RetransmitSchedule",
    "RetryBackoff",
    "UPnPClient",
    "UnsupportedOpcode",
    "UnsupportedVersion",
    "find_gateway",
    "hold_mapping",
    "parse_gateway",
    "parse_spec",
]

# PCP (RFC 6887)
from ._errors import (  # noqa: E402
    AddressMismatch,
    CannotProvideExternal,
    ExcessiveRemotePeers,
    MalformedOption,
    MalformedRequest,
    UnsupportedOption,
    UnsupportedProtocol,
    UserQuotaExceeded,
)
from ._pcp.client import PCPClient  # noqa: E402
from ._pcp.epoch import PCPEpochTracker  # noqa: E402
from ._pcp.schedule import RFC_PCP_SCHEDULE, PCPSchedule  # noqa: E402

__all__ += [
    "AddressMismatch",
    "CannotProvideExternal",
    "ExcessiveRemotePeers",
    "MalformedOption",
    "MalformedRequest",
    "PCPClient",
    "PCPEpochTracker",
    "PCPSchedule",
    "RFC_PCP_SCHEDULE",
    "UnsupportedOption",
    "UnsupportedProtocol",
    "UserQuotaExceeded",
]

__version__ = "0.1.0"

# UPnP-IGD errors (the client lives in txnatpmp._upnp until packaging lists it).
from ._errors import IGDNotFound, IGDUnreachable, PortConflict, UPnPFault  # noqa: E402

__all__ += ["IGDNotFound", "IGDUnreachable", "PortConflict", "UPnPFault"]

# IPv6 through PCP (issue 15): the IPv6 default router, and the global source address (P08).
from ._gateway6 import Router6, find_gateway6  # noqa: E402
from ._source import NoGlobalAddress  # noqa: E402

__all__ += ["NoGlobalAddress", "Router6", "find_gateway6"]
