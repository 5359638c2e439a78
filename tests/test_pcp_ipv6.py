"""
PCPClient over IPv6 (P08, P24, P34, P47, P48) on a fake clock and an in-memory network: a
link-local router reached with its scope id, the client's global address in the client IP
field, pinholes reported as mappings, and a change of the global address followed.
"""

from __future__ import annotations

import errno
import functools
import random
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txnatpmp import (
    ClientStopped,
    Mapping,
    NATPMPClient,
    PCPClient,
    PCPSchedule,
    Router6,
)
import txnatpmp._pcp.client as pcp_client
from txnatpmp._pcp.wire import MapResponse, decode_request, encode
from txnatpmp.testing import FakeGateway, MemoryNetwork

ROUTER = "fe80::1"
SCOPE = 7
SERVER = (ROUTER, 5351)
GUA = "2001:db8:100::10"
NEW_GUA = "2001:db8:100::beef"
ROUTER6 = Router6(ROUTER, "eth0", SCOPE)


class Pinholes(SynchronousTestCase):
    """A link-local router, and a client bound to its global address as L{PCPClient.listen}
    binds it (P08)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = MemoryNetwork(self.clock)
        # An IPv6 PCP server grants a pinhole: the client's own address and port (P48).
        self.gateway = FakeGateway(self.clock, external_address=GUA, pcp=True)
        self.network.attach(self.gateway, SERVER)
        self.global_address = GUA
        self.patch(pcp_client, "global_address_toward", lambda server: self.global_address)
        self.patch(pcp_client, "check_assigned", self.check_assigned)
        self.vanished: set[str] = set()  # addresses this host lost (a link went down)
        self.patch(pcp_client, "_source_toward", lambda server: "fe80::10")  # what the kernel picks
        self.host = self.network.host(GUA)
        self.client = PCPClient(ROUTER6.host, reactor=self.host, rng=random.Random(1),
                                scope_id=SCOPE)
        self.port = self.client.listen(self.host)  # type: ignore[arg-type]

    def check_assigned(self, address: str) -> None:
        """The in-memory stand-in for binding a throwaway socket to C{address}."""
        if address in self.vanished:
            raise OSError(errno.EADDRNOTAVAIL, f"this host no longer has {address}")

    def requests(self) -> list[Any]:
        return [(d.source, decode_request(d.data)) for d in self.network.sent_to(SERVER)]

    def test_P47_requests_go_to_the_router_with_its_scope_id(self) -> None:
        self.assertEqual(self.client.destination, (ROUTER, 5351, 0, SCOPE))
        self.assertEqual((self.client.family, self.client.server), (6, SERVER))

    def test_P08_a_link_local_server_gets_the_client_bound_to_its_global_address(self) -> None:
        self.assertEqual(self.client.bind_address(), GUA)
        self.assertEqual(self.port.address[0], GUA)  # type: ignore[attr-defined]

    def test_P06_P08_the_client_ip_field_is_the_native_global_address(self) -> None:
        self.client.map_port("tcp", 60010)
        self.clock.advance(0)
        [(source, request)] = self.requests()
        self.assertEqual((source[0], request.client_address, request.external_address),
                         (GUA, GUA, "::"))
        self.assertEqual(self.network.sent_to(SERVER)[0].data[8:24],
                         bytes.fromhex("20010db8010000000000000000000010"))

    def test_P48_a_pinhole_is_a_mapping_of_the_own_address_and_internal_port(self) -> None:
        d = self.client.map_port("udp", 60011, lifetime=600)
        self.clock.advance(0)
        mapping = self.successResultOf(d)
        self.assertEqual(attrs.evolve(mapping, nonce=None),
                         Mapping("udp", 60011, 60011, 600, 0, method="pcp", external_address=GUA))

    def test_P24_answers_from_the_router_with_a_zone_and_scope_are_matched(self) -> None:
        d = self.client.map_port("tcp", 60012, lifetime=600)
        [(_source, request)] = self.requests()
        self.gateway.online = False
        answer = MapResponse(0, 600, 5, request.nonce, 6, 60012, 60012, GUA)
        self.client.datagramReceived(encode(answer), (f"{ROUTER}%eth0", 5351, 0, SCOPE))
        self.assertEqual(self.successResultOf(d).external_address, GUA)

    def test_P03_answers_from_another_link_local_address_are_ignored(self) -> None:
        self.gateway.online = False
        d = self.client.map_port("tcp", 60013, lifetime=600)
        [(_source, request)] = self.requests()
        answer = MapResponse(0, 600, 5, request.nonce, 6, 60013, 60013, GUA)
        self.client.datagramReceived(encode(answer), ("fe80::666", 5351, 0, SCOPE))
        self.client.datagramReceived(encode(answer), (ROUTER, 5350, 0, SCOPE))
        self.assertNoResult(d)

    def test_P08_renewal_from_a_new_global_address_rebinds_and_tells_observers(self) -> None:
        changes: list[tuple[str, str]] = []
        self.client.add_source_observer(lambda old, new: changes.append((old, new)))
        d = self.client.map_port("tcp", 60014, lifetime=600)
        self.clock.advance(0)
        mapping = self.successResultOf(d)
        self.assertIsNone(self.client.check_source())  # nothing changed yet
        self.global_address = NEW_GUA  # a privacy address rotated
        self.gateway.external_address = NEW_GUA
        pending = self.client.announce()  # in the queue while the client listens again
        renewed = self.client.renew(mapping)
        self.assertEqual(changes, [(GUA, NEW_GUA)])
        self.clock.advance(0)  # the ANNOUNCE in flight goes out again at once, from NEW_GUA
        self.assertIsInstance(self.successResultOf(pending), int)
        self.assertEqual(self.successResultOf(renewed).external_address, NEW_GUA)
        sources = [(source[0], request.client_address) for source, request in self.requests()]
        self.assertEqual(sources, [(GUA, GUA), (GUA, GUA), (NEW_GUA, NEW_GUA),
                                   (NEW_GUA, NEW_GUA)])  # map, announce, announce, renew
        self.assertEqual(self.client.source_address, NEW_GUA)
        self.assertEqual([address for address, _port in self.network.bound(GUA)], [NEW_GUA])

    def test_P08_requests_made_while_listening_again_go_out_once(self) -> None:
        """Those queued while the old port closes are sent when the new one opens: once each,
        not again by the retransmission of what was stranded in flight."""
        self.client.window = 2
        self.successResultOf(self._mapped())
        closing: Deferred[None] = Deferred()
        close = self.port.stopListening
        self.port.stopListening = lambda: (close(), closing)[1]  # type: ignore[method-assign]
        self.global_address = NEW_GUA
        self.assertEqual(self.client.check_source(), NEW_GUA)
        answers = [self.client.map_port("tcp", port, lifetime=600) for port in (60020, 60021)]
        self.assertEqual(len(self.requests()), 1)  # the first mapping only: nothing sent yet
        closing.callback(None)
        self.clock.advance(0)
        sent = [(source[0], request.internal_port) for source, request in self.requests()[1:]]
        self.assertEqual(sent, [(NEW_GUA, 60020), (NEW_GUA, 60021)])
        for answer in answers:
            self.assertEqual(self.successResultOf(answer).external_address, NEW_GUA)

    def test_P08_nothing_leaves_from_an_address_this_host_lost_until_it_is_back(self) -> None:
        """A link that went down took the bound address: the renewal waits, it is not sent
        from an address the router would answer in vain."""
        mapping = self.successResultOf(self._mapped())
        self.vanished.add(GUA)
        renewed = self.client.renew(mapping)
        self.clock.advance(10)  # the first transmission and two retransmissions, held back
        self.assertEqual(len(self.requests()), 1)
        self.vanished.clear()
        self.clock.advance(20)
        self.assertEqual(self.successResultOf(renewed).external_address, GUA)
        self.assertEqual(len(self.requests()), 2)

    def test_source_observers_can_be_removed(self) -> None:
        changes: list[Any] = []
        self.client.add_source_observer(changes.append)  # type: ignore[arg-type]
        self.client.remove_source_observer(changes.append)  # type: ignore[arg-type]
        self.successResultOf(self._mapped())
        self.global_address = NEW_GUA
        self.assertEqual(self.client.check_source(), NEW_GUA)
        self.assertEqual(changes, [])

    def test_a_failing_source_observer_does_not_break_the_renewal(self) -> None:
        def broken(old: str, new: str) -> None:
            raise RuntimeError("observer bug")

        self.client.add_source_observer(broken)
        mapping = self.successResultOf(self._mapped())
        self.global_address = NEW_GUA
        self.gateway.external_address = NEW_GUA
        renewed = self.client.renew(mapping)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(renewed).external_address, NEW_GUA)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stopping_still_fails_what_waits(self) -> None:
        self.gateway.online = False
        d = self.client.map_port("tcp", 60015)
        self.port.stopListening()
        self.failureResultOf(d, ClientStopped)

    def _mapped(self) -> Any:
        d = self.client.map_port("tcp", 60016, lifetime=600)
        self.clock.advance(0)
        return d


def test_P47_a_link_local_server_needs_its_interface() -> None:
    with pytest.raises(ValueError, match="needs its interface"):
        PCPClient("fe80::1", reactor=Clock())
    with pytest.raises(ValueError, match="needs its interface"):
        PCPClient("fe80::1%no-such-interface0", reactor=Clock())


def test_P47_the_zone_may_name_the_interface_or_its_index() -> None:
    assert PCPClient("fe80::1%lo", reactor=Clock()).destination == ("fe80::1", 5351, 0, 1)
    assert PCPClient("fe80::1%3", reactor=Clock()).destination == ("fe80::1", 5351, 0, 3)
    assert PCPClient(Router6("fe80::1", "", 9).host, reactor=Clock()).scope_id == 9


def test_a_global_or_ipv4_server_keeps_a_plain_destination() -> None:
    assert PCPClient("2001:db8:100::1", reactor=Clock()).destination == ("2001:db8:100::1", 5351)
    ipv4 = PCPClient("198.51.100.1", reactor=Clock())
    assert (ipv4.destination, ipv4.family, ipv4.bind_address()) == (("198.51.100.1", 5351), 4, "")


def test_P08_bind_address_with_a_configured_client_address() -> None:
    link_local = PCPClient("fe80::1%3", reactor=Clock(), client_address=GUA)
    assert link_local.bind_address() == GUA
    assert PCPClient("2001:db8:100::1", reactor=Clock(), client_address=GUA).bind_address() == "::"


def test_P08_no_global_address_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    import txnatpmp._source as source

    monkeypatch.setattr(pcp_client, "_source_toward", lambda server: "fe80::10")
    monkeypatch.setattr(source, "source_address_toward", lambda server: "fe80::10")
    monkeypatch.setattr(pcp_client, "global_address_toward", functools.partial(
        source.global_address_toward, if_inet6=str(tmp_path / "if_inet6")))
    (tmp_path / "if_inet6").write_text(
        "fe800000000000000000000000000010 03 40 20 80  eth0\n"
        "fd001234000000000000000000000010 03 40 00 80  eth0\n")
    client = PCPClient("fe80::1%3", reactor=Clock())
    with pytest.raises(ValueError, match="no global IPv6 address"):
        client.bind_address()
    with pytest.raises(ValueError, match="no global IPv6 address"):
        client.listen(Clock())  # type: ignore[arg-type]


@pytest.mark.parametrize("gateway", ["2001:db8:100::1", "fe80::1", "fe80::1%eth0", "::1"])
def test_P48_natpmp_is_never_sent_over_ipv6(gateway: str) -> None:
    with pytest.raises(ValueError, match="must be an IPv4 address"):
        NATPMPClient(gateway, reactor=Clock())


def test_P47_logs_name_a_link_local_server_with_its_zone() -> None:
    """Every interface has its own fe80::1: a log line names the one requests go out on."""
    assert PCPClient("fe80::1%lo", reactor=Clock()).host == "fe80::1%lo"
    assert PCPClient("fe80::1%1", reactor=Clock()).host == "fe80::1%1"
    assert PCPClient("fe80::1", reactor=Clock(), scope_id=1).host == "fe80::1%lo"
    assert PCPClient("fe80::1%no-such0", reactor=Clock(), scope_id=1).host == "fe80::1%lo"
    assert PCPClient("fe80::1", reactor=Clock(), scope_id=4000).host == "fe80::1%4000"
    assert PCPClient("2001:db8:100::1", reactor=Clock()).host == "2001:db8:100::1"
    assert PCPClient("198.51.100.1", reactor=Clock()).host == "198.51.100.1"


class SilentRouter(SynchronousTestCase):
    """A link-local router that answers nothing."""

    def test_P47_no_answer_names_the_routers_zone(self) -> None:
        events: list[Any] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        network = MemoryNetwork(clock)
        gateway = FakeGateway(clock, external_address=GUA, pcp=True)
        gateway.online = False
        network.attach(gateway, SERVER)
        self.patch(pcp_client, "global_address_toward", lambda server: GUA)
        self.patch(pcp_client, "check_assigned", lambda address: None)
        client = PCPClient("fe80::1%lo", reactor=network.host(GUA),
                           schedule=PCPSchedule(initial=1, max_count=2))
        client.listen(network.host(GUA))  # type: ignore[arg-type]
        failed: list[Any] = []
        client.map_port("tcp", 60000).addErrback(failed.append)
        clock.pump([1] * 10)
        logged = [formatEvent(event) for event in events]
        self.assertIn("no answer from fe80::1%lo yet, retrying, attempt 2", logged)
        self.assertEqual(repr(client), "<PCPClient for [fe80::1%lo]:5351>")
        self.assertIn("no answer from [fe80::1%lo]:5351 after 2 attempts", str(failed[0].value))
