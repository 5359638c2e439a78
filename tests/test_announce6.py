"""
Listening for a PCP server's IPv6 announcements on [ff02::1]:5350 (P34): only PCP ANNOUNCEs from
the router's link-local address and port 5351 count; nothing is ever sent.  Real multicast is
exercised in the lab (tests/integration/test_ipv6_lab.py); here the filter, and the socket
joined on loopback (joining is harmless).
"""

from __future__ import annotations

import socket
import struct

import pytest
from twisted.internet import reactor
from twisted.internet.task import Clock

from txnatpmp import PCPClient, Router6
from txnatpmp._announce6 import (
    listen_for_announcements6,
    multicast_socket6,
    pcp_announcement_listener6,
    watch_announcements6,
)
from txnatpmp._wire import PCPAnnounce

ROUTER = Router6("fe80::1", "eth0", 7)
PCP_ANNOUNCE = bytes([2, 0x80, 0, 0]) + struct.pack("!II", 0, 42) + bytes(12)
NATPMP_ANNOUNCE = bytes([0, 128, 0, 0]) + struct.pack("!I", 42) + bytes([203, 0, 113, 1])


def heard_from(*datagrams: tuple[bytes, tuple[object, ...]]) -> list[PCPAnnounce]:
    heard: list[PCPAnnounce] = []
    listener = pcp_announcement_listener6(ROUTER, heard.append)
    for data, source in datagrams:
        listener.datagramReceived(data, source)
    return heard


def test_P34_a_pcp_announce_from_the_routers_link_local_address_is_heard() -> None:
    assert heard_from((PCP_ANNOUNCE, ("fe80::1", 5351))) == [PCPAnnounce(0, 42)]


@pytest.mark.parametrize("source", [("fe80::2", 5351), ("fe80::1", 5350),
                                    ("2001:db8:100::1", 5351)])
def test_P34_announcements_from_anyone_else_are_ignored(source: tuple[str, int]) -> None:
    assert heard_from((PCP_ANNOUNCE, source)) == []


def test_P48_a_natpmp_announcement_over_ipv6_is_ignored() -> None:
    assert heard_from((NATPMP_ANNOUNCE, ("fe80::1", 5351))) == []


def test_malformed_announcements_are_ignored_without_raising() -> None:
    assert heard_from((b"\x02", ("fe80::1", 5351)), (b"", ("fe80::1", 5351)),
                      (PCP_ANNOUNCE[:20], ("fe80::1", 5351))) == []


def test_P34_the_socket_shares_the_port_and_joins_on_the_interface() -> None:
    sock = multicast_socket6("ff02::1", 0, socket.if_nametoindex("lo"))
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert sock.getsockname()[0] == "::"
    finally:
        sock.close()


def test_a_router_without_an_interface_index_cannot_be_listened_for() -> None:
    with pytest.raises(ValueError, match="no interface index"):
        listen_for_announcements6(pcp_announcement_listener6(Router6("fe80::1"), print),
                                  Router6("fe80::1"))


def test_P34_an_adopted_listener_feeds_the_clients_epoch_check() -> None:
    client = PCPClient(ROUTER.host, reactor=Clock(), scope_id=ROUTER.scope_id)
    epochs: list[int] = []
    client.add_announce_observer(epochs.append)
    router = Router6("fe80::1", "lo", socket.if_nametoindex("lo"))
    port = watch_announcements6(client, router, reactor, port=0)  # type: ignore[arg-type]
    try:
        listener = port.protocol  # type: ignore[attr-defined]
        listener.datagramReceived(PCP_ANNOUNCE, ("fe80::1", 5351))
        assert epochs == [42]
        assert port.getHost().port != 0
    finally:
        port.stopListening()
