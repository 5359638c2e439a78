"""
MappingService with IPv6 pinholes (issue 15; P08, P34, P47, P48): C{families=(6,)} and
C{(4, 6)}, on a fake clock and an in-memory network with an IPv4 gateway and a link-local IPv6
router, each a FakeGateway.  Tests are named after shared/rfc6887-client.md.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import tempfile
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

import txnatpmp._pcp.client as pcp_client
import txnatpmp._service.link as link_module
from txnatpmp._service.link import SOURCE_CHECK_EVERY
from txnatpmp import EventKind, GatewayTimeout, Mapping, MappingEvent, MappingService, PCPClient
from txnatpmp._mapper.shared import mappers_in_use
from txnatpmp._pcp.wire import AnnounceRequest, MapRequest
from txnatpmp._source import NoGlobalAddress
from txnatpmp._spec import check_families, parse_gateway
from txnatpmp._wire import MappingRequest
from txnatpmp.endpoints import NATPMPListeningPort
from txnatpmp.testing import FakeGateway, MemoryNetwork, gateway_rig

GATEWAY = "198.51.100.1"
HOST = "198.51.100.10"
ROUTER = "fe80::1"
SCOPE = 7
ROUTER_HOST = f"{ROUTER}%{SCOPE}"  # as find_gateway6 gives it: the zone names the interface
GUA = "2001:db8:100::10"
NEW_GUA = "2001:db8:100::20"


class FamiliesTestCase(SynchronousTestCase):
    """An IPv4 gateway (NAT-PMP and PCP) and an IPv6 router (PCP, miniupnpd's quirks) on one
    in-memory network; the host has the global address L{GUA}."""

    families: Any = (4, 6)

    def setUp(self) -> None:
        rig = gateway_rig(GATEWAY, HOST, pcp=True)
        self.clock, self.network, self.gateway, self.host = (
            rig.clock, rig.network, rig.gateway, rig.host)
        self.router = FakeGateway(self.clock, external_address="::", pcp="miniupnpd")
        self.router.announce_to = [("ff02::1", 5350)]
        self.network.attach(self.router, (ROUTER, 5351))
        self.global_address = GUA
        self.patch(pcp_client, "global_address_toward", lambda server: self.global_address)
        self.patch(pcp_client, "check_assigned", self.check_assigned)
        self.vanished: set[str] = set()  # addresses this host lost (a link went down)
        self.patch(pcp_client, "_source_toward", lambda server: "fe80::10")
        self.patch(link_module, "listen6", self.listen6)
        self.listening6: list[Any] = []
        self.events: list[MappingEvent] = []
        self.log_events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.log_events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)
        self.service = self.make_service()

    @property
    def logged(self) -> list[str]:
        """Every log line so far, as written."""
        return [formatEvent(event) for event in self.log_events]

    def check_assigned(self, address: str) -> None:
        """The in-memory stand-in for binding a throwaway socket to C{address}."""
        if address in self.vanished:
            raise OSError(errno.EADDRNOTAVAIL, f"this host no longer has {address}")

    def listen6(self, listener: Any, router: Any, reactor: Any, port: int) -> Any:
        """The in-memory stand-in for joining ff02::1 on the router's interface."""
        self.listening6.append(router)
        return self.network.attach(listener, ("ff02::1", port), HOST)

    def make_service(self, **options: Any) -> MappingService:
        options.setdefault("families", self.families)
        gateways = {4: GATEWAY, 6: ROUTER_HOST}
        chosen = check_families(options["families"])
        service = MappingService(gateways[chosen[0]], reactor=self.host, rng=random.Random(1),
                                 gateway6=ROUTER_HOST if chosen == (4, 6) else None, **options)
        service.add_observer(self.events.append)
        return service

    def start(self, *specs: str) -> list[Deferred[Mapping]]:
        firsts = [self.service.add_mapping(spec) for spec in specs]
        self.service.startService()
        self.clock.advance(0)
        return firsts

    def pinholes(self) -> list[tuple[str, int, str]]:
        return sorted((m.protocol, m.internal_port, m.client) for m in self.router.mappings)

    def nat(self) -> list[tuple[str, int]]:
        return sorted((m.protocol, m.internal_port) for m in self.gateway.mappings)

    def run_for(self, seconds: float, step: float = 0.25) -> None:
        self.clock.pump([step] * int(seconds / step))

    def stop(self) -> None:
        stopped = self.service.stopService()
        self.run_for(12)
        self.successResultOf(stopped)


class BothFamilies(FamiliesTestCase):
    def test_P48_each_spec_gets_an_ipv4_mapping_and_an_ipv6_pinhole(self) -> None:
        first, = self.start("tcp:8080")
        mapping = self.successResultOf(first)
        self.assertEqual((mapping.family, mapping.external_address), (4, "80.100.100.1"))
        four, six = self.service.mappings_for(self.service.specs[0])
        self.assertEqual((four.family, four.external_address, four.method), (4, "80.100.100.1",
                                                                              "pcp"))
        self.assertEqual((six.family, six.external_address, six.external_port, six.method),
                         (6, GUA, 8080, "pcp"))
        self.assertEqual(self.nat(), [("tcp", 8080)])
        self.assertEqual(self.pinholes(), [("tcp", 8080, GUA)])
        self.assertEqual(sorted((e.kind.value, e.family) for e in self.events),
                         [("mapped", 4), ("mapped", 6)])
        self.assertEqual(self.service.external_address_for(6), GUA)
        self.assertEqual(self.service.gateway_for(6), ROUTER_HOST)

    def test_P48_each_family_has_its_own_nonce_and_client(self) -> None:
        self.start("udp:5353")
        four, six = self.service.mappings_for(self.service.specs[0])
        self.assertNotEqual(four.nonce, six.nonce)
        self.assertIsNotNone(six.nonce)
        self.assertEqual(mappers_in_use(self.host), 2)
        self.assertIsNot(self.service._lane(4).mapper.client,  # type: ignore[union-attr]
                         self.service._lane(6).mapper.client)  # type: ignore[union-attr]

    def test_P48_no_nat_pmp_and_nothing_ipv4_reaches_the_ipv6_router(self) -> None:
        self.start("tcp:8080")
        self.run_for(7200)  # many renewals
        for datagram in self.network.sent_to((ROUTER, 5351)):
            self.assertEqual(datagram.data[0], 2)  # PCP version 2, never NAT-PMP's 0
            self.assertEqual(datagram.source[0], GUA)  # from the global address (P08)
        self.assertTrue(self.router.pcp and all(
            isinstance(r, MapRequest) and r.client_address == GUA
            for r in self.router.pcp.requests))
        self.assertEqual(self.pinholes(), [("tcp", 8080, GUA)])

    def test_add_mapping_fires_only_when_every_family_has_its_mapping(self) -> None:
        self.router.online = False
        first, = self.start("tcp:8080")
        self.assertNoResult(first)
        self.assertEqual(self.nat(), [("tcp", 8080)])
        self.router.online = True
        self.run_for(4)  # the next retransmission (3 s) reaches it
        self.assertEqual(self.successResultOf(first).family, 4)
        self.assertEqual(len(self.service.mappings), 2)

    def test_add_mapping_fails_with_the_first_familys_error(self) -> None:
        self.router.online = False
        first, = self.start("tcp:8080")
        self.run_for(200)  # the IPv6 router answers nothing for a whole schedule
        failure = self.failureResultOf(first, GatewayTimeout)
        self.assertIn(ROUTER, str(failure.value))
        # The IPv4 mapping is kept meanwhile; IPv6 is asked again with one probe at a time.
        self.assertEqual(self.nat(), [("tcp", 8080)])
        self.assertIn((EventKind.FAILED, 6), [(e.kind, e.family) for e in self.events])
        self.assertNotIn((EventKind.FAILED, 4), [(e.kind, e.family) for e in self.events])

    def test_P48_both_are_renewed(self) -> None:
        self.start("tcp:8080")
        self.run_for(7200 * 2)
        renewed = [e.family for e in self.events if e.kind is EventKind.RENEWED]
        self.assertGreaterEqual(renewed.count(4), 2)
        self.assertGreaterEqual(renewed.count(6), 2)
        self.assertEqual(len(self.service.mappings), 2)

    def test_stop_deletes_both(self) -> None:
        self.start("tcp:8080", "udp:5353")
        self.stop()
        self.assertEqual((self.nat(), self.pinholes()), ([], []))
        removed = sorted((e.spec.internal_port, e.family) for e in self.events  # type: ignore
                         if e.kind is EventKind.REMOVED)
        self.assertEqual(removed, [(5353, 4), (5353, 6), (8080, 4), (8080, 6)])
        self.assertEqual(mappers_in_use(self.host), 0)

    def test_remove_mapping_deletes_both(self) -> None:
        self.start("tcp:8080", "udp:5353")
        removed = self.service.remove_mapping("tcp:8080")
        self.clock.advance(0)
        self.successResultOf(removed)
        self.assertEqual((self.nat(), self.pinholes()), ([("udp", 5353)], [("udp", 5353, GUA)]))

    def test_miniupnpd_a_renewed_pinhole_it_refuses_to_delete_is_shortened_instead(self) -> None:
        self.start("tcp:8080", "udp:5353")
        self.run_for(7200)  # renewed: this router forgets the nonces then
        self.stop()
        self.assertEqual(self.nat(), [])
        for pinhole in self.router.mappings:
            left = pinhole.expires - self.clock.seconds()
            self.assertTrue(107 <= left <= 108.5, left)  # 120 s (its shortest) from the stop
        refused = [line for line in self.logged if "refuses to delete renewed pinholes" in line]
        self.assertEqual(len(refused), 1, self.logged)  # said once for the router
        self.assertIn("shortest lifetime (120 s)", refused[0])
        for spec in ("tcp 8080", "udp 5353"):
            self.assertEqual(sum(f"Let go of {spec} (IPv6): the gateway keeps it 120 s more"
                                 in line for line in self.logged), 1, self.logged)
        removed = [(e.family, e.mapping.lifetime if e.mapping else 0) for e in self.events
                   if e.kind is EventKind.REMOVED]
        self.assertEqual(sorted(removed), [(4, 0), (4, 0), (6, 120), (6, 120)])
        self.run_for(120)
        self.assertEqual(self.pinholes(), [])

    def test_miniupnpd_a_pinhole_left_by_an_earlier_process_is_taken_over_and_closed(
            self) -> None:
        """An earlier process (another nonce) left tcp 8080's pinhole: the MAP suggests the
        internal port, so the port is right; the delete is refused and the pinhole shortened."""
        earlier = PCPClient(ROUTER_HOST, reactor=self.host)
        earlier.listen(self.host)  # type: ignore[arg-type]
        self.clock.advance(0)
        left = earlier.map_port("tcp", 8080, lifetime=7200)
        self.clock.advance(0)
        self.successResultOf(left)
        first, = self.start("tcp:8080")
        self.successResultOf(first)
        pinhole = self.service.mapping_for(self.service.specs[0], family=6)
        assert pinhole is not None
        self.assertEqual((pinhole.external_address, pinhole.external_port), (GUA, 8080))
        self.stop()
        self.run_for(121)
        self.assertEqual(self.pinholes(), [])

    def test_P48_the_endpoints_port_tells_both_public_addresses(self) -> None:
        first, = self.start("tcp:8080")
        self.successResultOf(first)
        listening = NATPMPListeningPort(None, self.service,  # type: ignore[arg-type]
                                        self.service.specs[0])
        self.assertEqual(listening.public_addresses, [("80.100.100.1", 8080), (GUA, 8080)])
        self.assertEqual((listening.public_address, listening.public_port),
                         ("80.100.100.1", 8080))
        self.router.online = False  # the pinhole lapses: only the IPv4 mapping is left
        self.run_for(3 * 7200)
        self.assertEqual(listening.public_addresses, [("80.100.100.1", 8080)])

    def test_the_status_file_lists_both_families(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "status.json")
        self.service = self.make_service(status_file=path)
        self.start("tcp:8080")
        with open(path) as written:
            status = json.load(written)
        self.assertEqual([(m["family"], m["external_address"]) for m in status["mappings"]],
                         [(4, "80.100.100.1"), (6, GUA)])
        self.assertEqual([(link["family"], link["gateway"], link["state"])
                          for link in status["links"]],
                         [(4, GATEWAY, "connected"), (6, ROUTER_HOST, "connected")])


class IPv6Only(FamiliesTestCase):
    families = 6

    def test_P48_family_6_makes_pinholes_only(self) -> None:
        first, = self.start("udp:60000")
        mapping = self.successResultOf(first)
        self.assertEqual((mapping.external_address, mapping.external_port), (GUA, 60000))
        self.assertEqual((self.nat(), self.pinholes()), ([], [("udp", 60000, GUA)]))
        self.assertEqual(self.network.sent_to((GATEWAY, 5351)), [])
        self.assertEqual(self.service.gateway, ROUTER_HOST)
        self.assertEqual(self.service.mapper.method, "pcp")  # type: ignore[union-attr]

    def test_P34_an_announcement_on_ff02_1_from_the_router_is_heard(self) -> None:
        self.start("tcp:8080")
        self.assertEqual([r.address for r in self.listening6], [ROUTER])
        self.assertEqual(self.listening6[0].scope_id, SCOPE)
        self.run_for(60)
        self.router.reboot(announce=False)
        self.router.announce(pcp=True)
        self.clock.advance(0)
        self.assertIn(EventKind.STATE_LOST, [e.kind for e in self.events])
        self.run_for(6)  # R19's random wait, then re-created
        self.assertIn(EventKind.RECREATED, [e.kind for e in self.events])
        self.assertEqual(self.pinholes(), [("tcp", 8080, GUA)])

    def test_P34_an_announcement_from_another_address_is_ignored(self) -> None:
        self.start("tcp:8080")
        self.run_for(60)
        other = FakeGateway(self.clock, pcp=True)
        other.announce_to = [("ff02::1", 5350)]
        self.network.attach(other, ("fe80::666", 5351))
        other.reboot(announce=False)
        other.announce(pcp=True)
        self.clock.advance(0)
        self.assertNotIn(EventKind.STATE_LOST, [e.kind for e in self.events])

    def test_P08_pinholes_follow_a_change_of_the_global_address(self) -> None:
        self.start("tcp:8080", "udp:5353")
        self.global_address = NEW_GUA  # a privacy address rotated
        self.run_for(SOURCE_CHECK_EVERY + 1)  # seen within that, not at the next renewal
        self.assertIn((EventKind.ADDRESS_CHANGED, 6, NEW_GUA),
                      [(e.kind, e.family, e.external_address) for e in self.events])
        assert self.router.pcp is not None
        from_new = [r.internal_port for r in self.router.pcp.requests
                    if isinstance(r, MapRequest) and r.client_address == NEW_GUA]
        self.assertEqual(sorted(from_new), [5353, 8080])  # each once
        self.assertEqual(sorted(m.external_address for m in self.service.mappings),
                         [NEW_GUA, NEW_GUA])
        # The old address still works (deprecated): its pinholes are closed from it.
        self.assertEqual(self.pinholes(), [("tcp", 8080, NEW_GUA), ("udp", 5353, NEW_GUA)])
        self.assertEqual(self.service.external_address_for(6), NEW_GUA)

    def test_P08_pinholes_for_an_address_already_gone_are_said_to_stay_open(self) -> None:
        self.start("tcp:8080", "udp:5353")
        listen = self.host.listenUDP

        def gone(port: int, protocol: Any, interface: str = "", **kw: Any) -> Any:
            if interface == GUA:
                raise CannotListenError(interface, port, OSError(99, "Cannot assign"))
            return listen(port, protocol, interface, **kw)

        self.host.listenUDP = gone  # type: ignore[method-assign]
        self.global_address = NEW_GUA
        self.run_for(SOURCE_CHECK_EVERY + 1)
        said = [line for line in self.logged if "Cannot close the 2 pinholes for" in line]
        self.assertEqual(len(said), 1, self.logged)
        self.assertIn("stay open up to 7200 s", said[0])
        self.assertEqual(self.pinholes(), [("tcp", 8080, GUA), ("tcp", 8080, NEW_GUA),
                                           ("udp", 5353, GUA), ("udp", 5353, NEW_GUA)])

    def test_P08_the_global_address_seen_by_a_renewal_moves_every_pinhole_once(self) -> None:
        self.start("tcp:8080", "udp:5353")
        self.run_for(SOURCE_CHECK_EVERY - 1)
        self.global_address = NEW_GUA
        # A renewal noticing it first: the link's own check then finds nothing new.
        keeper = self.service._lane(6).keeper(self.service.specs[0])
        assert keeper is not None
        keeper.refresh()
        self.clock.advance(0)
        assert self.router.pcp is not None
        from_new = [r.internal_port for r in self.router.pcp.requests
                    if isinstance(r, MapRequest) and r.client_address == NEW_GUA]
        self.assertEqual(sorted(from_new), [5353, 8080])  # each once, the renewal's included
        self.run_for(SOURCE_CHECK_EVERY)
        self.assertEqual([e.kind for e in self.events].count(EventKind.ADDRESS_CHANGED), 1)

    def test_P08_losing_the_global_address_is_said_once(self) -> None:
        self.start("tcp:8080")

        def none(server: Any) -> str:
            raise NoGlobalAddress("this host has no global IPv6 address")

        self.patch(pcp_client, "global_address_toward", none)
        self.run_for(10 * SOURCE_CHECK_EVERY)
        lost = [line for line in self.logged if "Could not look up this host's address" in line]
        self.assertEqual(len(lost), 1, self.logged)
        self.patch(pcp_client, "global_address_toward", lambda server: GUA)
        self.run_for(SOURCE_CHECK_EVERY)
        back = [line for line in self.logged if "has an address toward" in line]
        self.assertEqual(len(back), 1, self.logged)

    def test_P08_without_a_global_address_nothing_is_sent_and_the_service_keeps_trying(
            self) -> None:
        def none(server: Any) -> str:
            raise NoGlobalAddress("this host has no global IPv6 address")

        self.patch(pcp_client, "global_address_toward", none)
        first, = self.start("tcp:8080")
        self.run_for(120)
        self.assertEqual(self.network.sent_to((ROUTER, 5351)), [])
        self.failureResultOf(first, NoGlobalAddress)  # the first error, as add_mapping says
        self.assertTrue(any("no global IPv6 address" in line for line in self.logged))
        self.patch(pcp_client, "global_address_toward", lambda server: GUA)  # one came
        self.run_for(61)  # the longest wait between attempts
        self.assertEqual([m.external_address for m in self.service.mappings], [GUA])
        self.assertEqual(self.pinholes(), [("tcp", 8080, GUA)])

    def test_P47_the_router_is_found_when_not_given(self) -> None:
        found: list[Any] = []

        def finder(reactor: Any) -> Deferred[str]:
            found.append(reactor)
            return succeed(ROUTER_HOST)

        self.service = MappingService(reactor=self.host, families=6, gateway_finder6=finder,
                                      gateway_finder=lambda r: self.fail("IPv4 looked for"))
        first = self.service.add_mapping("tcp:8080")
        self.service.startService()
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(first).external_address, GUA)
        self.assertEqual(found, [self.host])


class Refused(SynchronousTestCase):
    """Bad family arguments: a ValueError with a message, before anything is sent."""

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.host = MemoryNetwork(self.clock).host(HOST)

    def refused(self, message: str, *args: Any, **kwargs: Any) -> None:
        with self.assertRaises(ValueError) as caught:
            MappingService(*args, reactor=self.host, **kwargs)
        self.assertIn(message, str(caught.exception))

    def test_bad_families(self) -> None:
        for bad in (5, "64x", "", (4, 4), True, "٤"):
            self.refused("family must be 4, 6 or 46", families=bad)

    def test_P48_ipv6_needs_pcp(self) -> None:
        self.refused("IPv6 pinholes need PCP", families=(4, 6), methods="natpmp")
        self.refused("IPv6 pinholes need PCP", families=6, methods=("upnp",))

    def test_gateway_of_a_family_not_kept(self) -> None:
        self.refused("is IPv6, but the service keeps only IPv4", ROUTER_HOST)
        self.refused("is IPv4, but the service keeps only IPv6", GATEWAY, families=6)

    def test_two_gateways_of_one_family(self) -> None:
        self.refused("two IPv6 gateways", ROUTER_HOST, families=46, gateway6="fe80::2%7")

    def test_gateway6_must_be_ipv6(self) -> None:
        self.refused("gateway6 must be the IPv6 router's address", GATEWAY, families=46,
                     gateway6="198.51.100.2")

    def test_a_link_local_router_needs_its_interface(self) -> None:
        self.refused("needs its interface", ROUTER, families=6)

    def test_gateway_strings(self) -> None:
        self.assertEqual(parse_gateway("[fe80::1%eth0]:5351").host, "fe80::1%eth0")
        self.assertEqual(str(parse_gateway("2001:db8::1")), "[2001:db8::1]:5351")


class Silent(FamiliesTestCase):
    def test_a_silent_ipv6_router_does_not_disturb_ipv4(self) -> None:
        self.start("tcp:8080")
        self.router.online = False
        self.run_for(3 * 7200)
        four = [e for e in self.events if e.family == 4]
        self.assertNotIn(EventKind.FAILED, [e.kind for e in four])
        self.assertNotIn(EventKind.EXPIRED, [e.kind for e in four])
        self.assertEqual(self.nat(), [("tcp", 8080)])
        # The router back: the pinhole is made again.
        self.router.online = True
        self.run_for(600)
        self.assertEqual(len(self.service.mappings_for(self.service.specs[0])), 2)
        requests = [r.request for r in self.router.received if not r.dropped]
        self.assertFalse(any(isinstance(r, MappingRequest) for r in requests))  # no NAT-PMP
        self.assertFalse(any(isinstance(r, AnnounceRequest) and r.client_address != GUA
                             for r in (self.router.pcp.requests if self.router.pcp else [])))
