"""
Closing the pinholes made for an IPv6 address this host has moved away from (P08): a pinhole
belongs to one address, and one left open for an address that rotated away stays a hole in the
firewall until its lifetime ends.  While the old address is still assigned (a rotated privacy
address stays a while, deprecated), a client bound to it can still delete them.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import Logger

from .._mapper.pcp import PCPMapper
from .._pcp.client import PCPClient
from .._results import Mapping
from .._spec import Gateway, MappingSpec

log = Logger(namespace="txnatpmp._service")


async def close_pinholes(reactor: Any, router: Gateway, old: str,
                         pinholes: Sequence[Mapping]) -> None:
    """
    Delete C{pinholes} (made for C{old}, with their nonces) from a socket bound to C{old}, or
    shorten the ones the router will not delete (L{PCPMapper.delete}).  Where C{old} is gone
    already, say how long they stay open.
    """
    if not pinholes:
        return
    client = PCPClient(router.host, router.port, reactor, client_address=old)
    try:
        port = reactor.listenUDP(0, client, interface=old)
    except Exception as error:  # CannotListenError: the old address is gone
        log.warn("Cannot close the {count} {pinholes} for {old} any more ({error}): they stay "
                 "open up to {seconds} s, until their lifetime ends", count=len(pinholes),
                 pinholes=_plural(len(pinholes)),
                 old=old, error=error, seconds=max(m.lifetime for m in pinholes))
        return
    mapper = PCPMapper(client, gateway=router)
    try:
        outcomes = await DeferredList(
            [mapper.delete(MappingSpec(m.protocol, m.internal_port), m) for m in pinholes],
            consumeErrors=True)
    finally:
        await maybeDeferred(port.stopListening)
    closed = sum(1 for ok, _ in outcomes if ok)
    if closed == len(pinholes):
        log.info("Closed {count} {pinholes} for {old}", count=closed,
                 pinholes=_plural(closed), old=old)
    else:
        log.warn("Closed {closed} of the {count} pinholes for {old}; the rest stay open until "
                 "their lifetime ends", closed=closed, count=len(pinholes), old=old)


def _plural(count: int) -> str:
    return "pinhole" if count == 1 else "pinholes"
