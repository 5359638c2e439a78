"""
The announcement listener (R21-R23).
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase

from txnatpmp._announce import Announcement, AnnouncementListener, listen_for_announcements
from txnatpmp._wire import ExternalAddressResponse, MappingResponse, PCPAnnounce, encode
from txnatpmp.testing import FakeGateway

GATEWAY = "198.51.100.1"


class Listener(SynchronousTestCase):
    def setUp(self) -> None:
        self.heard: list[Announcement] = []
        self.listener = AnnouncementListener(GATEWAY, self.heard.append)

    def test_R21_only_the_gateway_is_heard(self) -> None:
        data = encode(ExternalAddressResponse(0, 5, "80.100.100.9"))
        self.listener.datagramReceived(data, ("198.51.100.66", 5351))
        self.assertEqual(self.heard, [])
        self.listener.datagramReceived(data, (GATEWAY, 5351))
        self.assertEqual(self.heard, [ExternalAddressResponse(0, 5, "80.100.100.9")])

    def test_only_the_gateways_server_port_is_heard(self) -> None:
        """A gateway announces from its server port, 5351; another port of the same address is
        some other program there (issue 11, item 6)."""
        data = encode(ExternalAddressResponse(0, 5, "6.6.6.6"))
        for port in (5350, 5352, 1900, 40000):
            self.listener.datagramReceived(data, (GATEWAY, port))
        self.assertEqual(self.heard, [])

    def test_R22_natpmp_announcement(self) -> None:
        self.listener.datagramReceived(encode(ExternalAddressResponse(0, 0, "80.100.100.1")),
                                       (GATEWAY, 5351))
        self.assertEqual(self.heard, [ExternalAddressResponse(0, 0, "80.100.100.1")])

    def test_R23_pcp_announce_is_an_epoch_signal(self) -> None:
        self.listener.datagramReceived(encode(PCPAnnounce(0, 0)), (GATEWAY, 5351))
        self.assertEqual(self.heard, [PCPAnnounce(0, 0)])

    def test_R23_anything_else_is_ignored_without_raising(self) -> None:
        for data in [b"", b"\x02", b"\x02" * 1101, encode(MappingResponse("tcp", 0, 1, 2, 3, 4)),
                     bytes(24), b"\x02\x81" + bytes(22)]:
            self.listener.datagramReceived(data, (GATEWAY, 5351))
        self.assertEqual(self.heard, [])

    def test_a_failing_callback_is_logged_not_raised(self) -> None:
        def explode(announcement: Announcement) -> None:
            raise RuntimeError("observer bug")

        listener = AnnouncementListener(GATEWAY, explode)
        listener.datagramReceived(encode(PCPAnnounce(0, 0)), (GATEWAY, 5351))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


@pytest_twisted.ensureDeferred
async def test_R21_two_listeners_can_bind_the_same_port() -> None:
    """Address reuse lets two programs bind the announcement port.  Unicast on loopback here
    (nothing is multicast from the host's own network); the lab shows multicast reaching both."""
    heard: defer.Deferred[Announcement] = defer.Deferred()
    gateway = FakeGateway(external_address="80.100.100.1")
    gateway_port = gateway.listen()
    source = ("127.0.0.1", gateway_port.getHost().port)
    first = listen_for_announcements(AnnouncementListener(source, heard.callback), reactor,
                                     port=0, group=None, interface="127.0.0.1")
    port = first.getHost().port
    second = listen_for_announcements(AnnouncementListener(source, heard.callback), reactor,
                                      port=port, group=None, interface="127.0.0.1")
    try:
        gateway.announce_to.append(("127.0.0.1", port))
        gateway.announce(pcp=True)
        assert await heard == PCPAnnounce(0, gateway.epoch)
    finally:
        first.stopListening()
        second.stopListening()
        gateway_port.stopListening()
