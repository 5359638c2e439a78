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
    NotAuthorized,
    OutOfResources,
    ResultError,
    UnsupportedOpcode,
    UnsupportedVersion,
)
from ._gateway import find_gateway
from ._results import ExternalAddress, Mapping
from ._schedule import DELETE_SCHEDULE, RFC_SCHEDULE, RetransmitSchedule

__all__ = [
    "ClientStopped",
    "DecodeError",
    "DELETE_SCHEDULE",
    "EpochTracker",
    "ExternalAddress",
    "GatewayNotFound",
    "GatewayTimeout",
    "Mapping",
    "NATPMPClient",
    "NATPMPError",
    "NetworkFailure",
    "NotAuthorized",
    "OutOfResources",
    "RFC_SCHEDULE",
    "ResultError",
    "RetransmitSchedule",
    "UnsupportedOpcode",
    "UnsupportedVersion",
    "find_gateway",
]

__version__ = "0.1.0"
