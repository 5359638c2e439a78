"""
Listening for a PCP server's IPv6 announcements (P34): an unsolicited ANNOUNCE to
C{[ff02::1]:5350}, heard on the interface toward the router and accepted only from the router's
link-local address and port 5351 (miniupnpd sends it from C{fe80::...} even when requests go to
its global address).  Only PCP is accepted: NAT-PMP is never spoken over IPv6 (P48).  Only
listening happens here; nothing is ever sent.

Twisted's C{joinGroup} is IPv4-only, so the socket is made here (address and port reuse, the
group joined on one interface) and handed to the reactor with C{adoptDatagramPort}.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.interfaces import IListeningPort, IReactorSocket

from ._announce import Announcement, AnnouncementListener
from ._gateway6 import Router6
from ._reactor import global_reactor
from ._wire import ANNOUNCE_PORT, SERVER_PORT, PCPAnnounce

if TYPE_CHECKING:
    from ._pcp.client import PCPClient

#: All nodes on the link: where a PCP server announces over IPv6 (RFC 6887 section 14.1.3).
ANNOUNCE_GROUP6 = "ff02::1"


def multicast_socket6(group: str, port: int, scope_id: int) -> socket.socket:
    """
    A non-blocking UDP socket on C{[::]:port}, shared with other listeners (C{SO_REUSEADDR},
    C{SO_REUSEPORT}), that has joined C{group} on the interface C{scope_id}.

    @raise OSError: when the socket cannot be made or the group joined.
    """
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", port))
        membership = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", scope_id)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, membership)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def pcp_announcement_listener6(router: Router6,
                               received: Callable[[PCPAnnounce], object]) -> AnnouncementListener:
    """
    An L{AnnouncementListener} that passes the PCP ANNOUNCEs from C{router}'s address and port
    5351 to C{received}, and drops everything else (NAT-PMP's 12-byte announcement included).
    """

    def pcp_only(announcement: Announcement) -> None:
        if isinstance(announcement, PCPAnnounce):
            received(announcement)

    return AnnouncementListener((router.address, SERVER_PORT), pcp_only)


def listen_for_announcements6(
    listener: AnnouncementListener,
    router: Router6,
    reactor: IReactorSocket | None = None,
    port: int = ANNOUNCE_PORT,
    group: str = ANNOUNCE_GROUP6,
) -> IListeningPort:
    """
    Start C{listener} on C{[group]:port}, joined on C{router}'s interface (P34).

    @raise ValueError: if C{router} has no interface index (see L{find_gateway6}).
    @raise OSError: when the socket cannot be made.
    """
    if not router.scope_id:
        raise ValueError(f"the IPv6 router {router.address} has no interface index to listen on")
    if reactor is None:
        reactor = global_reactor()
    assert reactor is not None
    sock = multicast_socket6(group, port, router.scope_id)
    try:
        listening: Any = reactor.adoptDatagramPort(sock.fileno(), socket.AF_INET6, listener,
                                                   maxPacketSize=2048)
    finally:
        sock.close()  # the reactor holds its own descriptor, with the membership
    return listening  # type: ignore[no-any-return]


def watch_announcements6(client: PCPClient, router: Router6,
                         reactor: IReactorSocket | None = None,
                         port: int = ANNOUNCE_PORT) -> IListeningPort:
    """
    Feed C{client} (a L{PCPClient} for C{router}) the router's IPv6 announcements: each one
    goes to C{client.observe_announce(epoch)}, which checks the epoch and tells its observers.
    """

    def heard(announcement: PCPAnnounce) -> None:
        if announcement.result == 0:
            client.observe_announce(announcement.epoch)

    listener = pcp_announcement_listener6(router, heard)
    return listen_for_announcements6(listener, router, reactor, port)
