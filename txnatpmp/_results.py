"""
The values NATPMPClient requests produce.
"""

from __future__ import annotations

from typing import Literal

from attrs import field, frozen

from ._wire import Protocol

#: The protocols a mapping can be made with.
Method = Literal["natpmp", "pcp", "upnp"]


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
    @ivar epoch: The gateway's epoch when it answered (0 where the protocol has none).
    @ivar method: The protocol that made the mapping, and that must renew and delete it.
    @ivar external_address: The external address, where the protocol reports it per mapping
        (PCP, UPnP); C{None} for NAT-PMP, which reports it separately.
    @ivar nonce: PCP's 96-bit mapping nonce, needed to renew and delete it; C{None} otherwise.
    """

    protocol: Protocol
    internal_port: int
    external_port: int
    lifetime: int
    epoch: int
    method: Method = "natpmp"
    external_address: str | None = None
    nonce: bytes | None = field(default=None, repr=False)

    @property
    def family(self) -> int:
        """6 for an IPv6 pinhole (its external address is IPv6), else 4."""
        return 6 if self.external_address is not None and ":" in self.external_address else 4
