"""
The values NATPMPClient requests produce.
"""

from __future__ import annotations

from attrs import frozen

from ._wire import Protocol


@frozen
class ExternalAddress:
    """
    The gateway's external IPv4 address.

    @ivar address: Dotted-quad string; C{"0.0.0.0"} when the gateway has no external link yet.
    @ivar epoch: The gateway's seconds since start of epoch when it answered.
    """

    address: str
    epoch: int


@frozen
class Mapping:
    """
    A port mapping as the gateway granted it.

    @ivar external_port: The port actually mapped, which may differ from the one suggested (R13);
        0 for a deleted mapping.
    @ivar lifetime: Seconds granted, which may differ from those asked for (R14); 0 once deleted.
    """

    protocol: Protocol
    internal_port: int
    external_port: int
    lifetime: int
    epoch: int
