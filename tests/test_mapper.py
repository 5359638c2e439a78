"""
The mapper layer: IPortMapper over NAT-PMP and PCP, discovery (P42-P46), and the service on
each protocol (P27, P30, P38), on a fake clock with the in-memory network.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txnatpmp import EventKind, MappingEvent, MappingService, NATPMPClient, PCPClient
from txnatpmp._mapper import IPortMapper, NATPMPMapper, PCPMapper, check_methods
from txnatpmp._mapper.shared import VERDICT_MEMORY, mappers_in_use
from txnatpmp._pcp import wire as pcp_wire
from txnatpmp._service import State
from txnatpmp.testing import GatewayRig, gateway_rig


def versions(rig: GatewayRig) -> list[int]:
    """The version byte of every datagram that reached the gateway, in order."""
    return [r.data[0] for r in rig.gateway.received if r.data]


def pcp_requests(rig: GatewayRig) -> list[Any]:
    return [pcp_wire.decode_request(r.data) for r in rig.gateway.received
            if r.data[:1] == b"\x02" and not r.dropped]


class Mappers(SynchronousTestCase):
    def test_both_clients_provide_the_interface(self) -> None:
        rig = gateway_rig()
        verifyObject(IPortMapper, NATPMPMapper(NATPMPClient(rig.gateway_address,
                                                            reactor=rig.host)))
        verifyObject(IPortMapper, PCPMapper(PCPClient(rig.gateway_address, reactor=rig.host)))

    def test_methods_are_checked_before_anything_is_sent(self) -> None:
        self.assertEqual(check_methods("auto"), ("pcp", "natpmp", "upnp"))
        self.assertEqual(check_methods("upnp"), ("upnp",))
        self.assertEqual(check_methods(("natpmp", "pcp")), ("pcp", "natpmp"))
        self.assertEqual(check_methods("natpmp"), ("natpmp",))
        for bad in ["", "upnp ", "NATPMP", ("pcp", "pcp"), (), "tcp"]:
            with self.assertRaises(ValueError, msg=bad):
                check_methods(bad)  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            MappingService("198.51.100.1", methods="carrier-pigeon")

    def test_P27_pcp_renewal_points(self) -> None:
        mapper = PCPMapper(PCPClient("198.51.100.1", reactor=gateway_rig().host))
        for seed in range(50):
            times = mapper.renewal_times(7200, random.Random(seed))
            self.assertTrue(3600 <= times[0] <= 4500, times[0])
            self.assertTrue(5400 <= times[1] <= 5400 + 450, times[1])
            self.assertTrue(6300 <= times[2] <= 6300 + 225, times[2])
            self.assertTrue(all(b - a >= 4 for a, b in zip(times, times[1:])))
            self.assertLess(times[-1], 7200)

    def test_R15_natpmp_renews_at_half_the_lifetime(self) -> None:
        mapper = NATPMPMapper(NATPMPClient("198.51.100.1", reactor=gateway_rig().host))
        self.assertEqual(mapper.renewal_times(7200, random.Random(0)), [3600])


class ServiceCase(SynchronousTestCase):
    def rig(self, **gateway_options: Any) -> GatewayRig:
        self.r = gateway_rig(**gateway_options)
        self.events: list[MappingEvent] = []
        return self.r

    def service(self, **kwargs: Any) -> MappingService:
        service = MappingService(self.r.gateway_address, reactor=self.r.host,
                                 rng=random.Random(1), **kwargs)
        service.add_observer(self.events.append)
        return service

    def start(self, service: MappingService, *specs: str) -> list[Deferred[Any]]:
        firsts = [service.add_mapping(spec) for spec in specs]
        service.startService()
        self.r.run_for(1)
        return firsts


class Discovery(ServiceCase):
    def test_P42_auto_uses_pcp_where_the_gateway_speaks_it_and_never_natpmp(self) -> None:
        self.rig(pcp=True)
        service = self.service()
        first, = self.start(service, "tcp:60010")
        mapping = self.successResultOf(first)
        self.assertEqual((mapping.method, mapping.external_address), ("pcp", "80.100.100.1"))
        self.assertEqual(service.mapper.method, "pcp")  # type: ignore[union-attr]
        self.assertEqual(service.external_address, "80.100.100.1")
        self.assertEqual(versions(self.r), [2, 2])  # the ANNOUNCE probe, the MAP
        self.assertIsInstance(pcp_requests(self.r)[0], pcp_wire.AnnounceRequest)

    def test_P42_P46_auto_falls_back_to_natpmp_after_one_exchange(self) -> None:
        self.rig()  # a NAT-PMP-only gateway: the 8-byte version-0 answer to PCP
        service = self.service()
        first, = self.start(service, "tcp:60010")
        self.assertEqual(self.successResultOf(first).method, "natpmp")
        self.assertEqual(versions(self.r), [2, 0, 0])  # probe; address request; map
        self.assertEqual(self.events[0].mapping.method, "natpmp")  # type: ignore[union-attr]

    def test_natpmp_only_behaves_as_before_discovery_existed(self) -> None:
        self.rig(pcp=True)
        service = self.service(methods=("natpmp",))
        first, = self.start(service, "tcp:60010")
        self.assertEqual(self.successResultOf(first).method, "natpmp")
        self.assertEqual(versions(self.r), [0, 0])

    def test_pcp_only_sends_no_probe(self) -> None:
        self.rig(pcp=True)
        service = self.service(methods="pcp")
        first, = self.start(service, "tcp:60010")
        self.assertEqual(self.successResultOf(first).method, "pcp")
        self.assertEqual(versions(self.r), [2])

    def test_one_probe_per_gateway_not_per_mapping_nor_per_service(self) -> None:
        self.rig()
        services = [self.service() for _ in range(3)]
        for port, service in enumerate(services, 60010):
            self.start(service, f"tcp:{port}", f"udp:{port}")
        self.assertEqual(versions(self.r).count(2), 1)
        self.assertEqual(len(self.r.gateway.mappings), 6)
        self.assertEqual(mappers_in_use(self.r.host), 1)

    def test_P43_natpmp_verdict_is_remembered_for_30_minutes_then_pcp_asked_again(self) -> None:
        self.rig()
        service = self.service(lifetime=7200)
        self.start(service, "tcp:60010")
        self.r.run_for(VERDICT_MEMORY - 10, step=5)
        self.assertEqual(versions(self.r).count(2), 1)
        self.r.run_for(20, step=1)
        self.assertEqual(versions(self.r).count(2), 2)  # asked again, still NAT-PMP only
        self.assertEqual(service.mapper.method, "natpmp")  # type: ignore[union-attr]
        self.assertIs(service.state, State.CONNECTED)

    def test_P43_a_gateway_that_starts_speaking_pcp_gets_the_mappings_moved(self) -> None:
        self.rig()
        service = self.service()
        self.start(service, "tcp:60010", "udp:60011")
        old_port = service.client.transport.getHost().port
        # The router is upgraded and says so with a PCP ANNOUNCE to the group.
        from txnatpmp._pcp.fake_server import PCPServer

        self.r.gateway.pcp = PCPServer(self.r.gateway)
        self.r.gateway.announce_to = [("224.0.0.1", 5350)]
        self.r.gateway.announce(pcp=True)
        self.r.run_for(2)
        self.assertEqual(service.mapper.method, "pcp")  # type: ignore[union-attr]
        self.assertEqual(sorted(m.method for m in service.mappings), ["pcp", "pcp"])
        self.assertNotEqual(service.client.transport.getHost().port, old_port)
        self.assertEqual(mappers_in_use(self.r.host), 1)  # the NAT-PMP one was let go
        stopped = service.stopService()
        self.r.run_for(1)
        self.successResultOf(stopped)
        self.assertEqual(self.r.gateway.mappings, [])

    def test_a_gateway_silent_from_the_start_is_probed_again_and_stop_is_prompt(self) -> None:
        self.rig(pcp=True)
        self.r.gateway.online = False
        service = self.service()
        first, = self.start(service, "tcp:60010")
        self.r.run_for(7)  # the PCP probe gives up after 3 s, auto's UPnP search 3.5 s later
        self.assertIn(service.state, (State.SILENT, State.PROBING))
        self.failureResultOf(first)
        self.r.gateway.online = True
        self.r.run_for(10)
        self.assertIs(service.state, State.CONNECTED)
        self.assertEqual(service.mappings[0].method, "pcp")
        stopped = service.stopService()
        self.r.run_for(1)
        self.successResultOf(stopped)
        self.assertEqual(self.r.gateway.mappings, [])


class KeepingThroughPCP(ServiceCase):
    def test_P27_renewals_at_the_rfc_points_without_flooding(self) -> None:
        self.rig(pcp=True)
        service = self.service(lifetime=600)
        service.add_mapping("udp:60011", lifetime=60)  # answered all along: not a silent gateway
        self.start(service, "tcp:60010")

        def lose_tcp_60010(reply: bytes) -> bytes | None:  # its renewals all go unanswered
            response = pcp_wire.decode_response(reply)
            lost = isinstance(response, pcp_wire.MapResponse) and response.protocol == 6
            return None if lost else reply

        self.r.gateway.rewrite_reply = lose_tcp_60010
        self.r.run_for(599, step=0.5)
        times = [r.time for r in self.r.gateway.received if r.data[:1] == b"\x02"
                 and getattr(pcp_wire.decode_request(r.data), "protocol", None) == 6][1:]
        # The first renewal at 1/2-5/8 of the lifetime, the next at 3/4-13/16, then 7/8-29/32.
        self.assertTrue(300 <= times[0] - 1 <= 375, times)
        self.assertTrue(any(450 <= t - 1 <= 487.5 for t in times), times)
        self.assertTrue(any(525 <= t - 1 <= 543.75 for t in times), times)
        # Retransmissions spaced by the timer (IRT 3 s, doubling), cut at the next point: no
        # flood, even where one request gives up and the next renewal starts.
        self.assertTrue(all(b - a >= 0.5 for a, b in zip(times, times[1:])), times)
        self.r.run_for(2)
        kinds = [(e.kind, e.spec and e.spec.protocol) for e in self.events]
        self.assertIn((EventKind.EXPIRED, "tcp"), kinds)
        self.assertNotIn((EventKind.EXPIRED, "udp"), kinds)

    def test_P22_P38_a_reboot_is_recovered_with_the_same_nonce_and_port(self) -> None:
        self.rig(pcp=True)
        service = self.service()
        self.start(service, "tcp:60010")
        before = service.mappings[0]
        self.r.run_for(100)
        self.r.gateway.reboot()
        self.r.run_for(10)
        after = service.mappings[0]
        self.assertEqual((after.nonce, after.external_port), (before.nonce, before.external_port))
        self.assertIn(EventKind.RECREATED, [e.kind for e in self.events])
        maps = [r for r in pcp_requests(self.r) if isinstance(r, pcp_wire.MapRequest)]
        self.assertEqual({r.nonce for r in maps}, {before.nonce})

    def test_P29_P30_stop_deletes_with_the_nonce_that_made_it_on_miniupnpd(self) -> None:
        self.rig(pcp="miniupnpd")
        service = self.service()
        self.start(service, "tcp:60010", "udp:60011")
        self.assertEqual(len(self.r.gateway.mappings), 2)
        stopped = service.stopService()
        self.r.run_for(1)
        self.successResultOf(stopped)
        self.assertEqual(self.r.gateway.mappings, [])
        self.assertEqual(versions(self.r).count(0), 0)  # never a NAT-PMP delete (P30)

    def test_status_and_events_carry_the_method_and_external_address(self) -> None:
        import json
        import tempfile
        from pathlib import Path

        folder = Path(tempfile.mkdtemp())
        self.rig(pcp=True)
        service = self.service(status_file=str(folder / "status.json"))
        self.start(service, "tcp:60010")
        status = json.loads((folder / "status.json").read_text())
        self.assertEqual([(m["method"], m["external_address"]) for m in status["mappings"]],
                         [("pcp", "80.100.100.1")])
        event = self.events[0]
        self.assertEqual((event.kind, event.mapping.method, event.external_address),  # type: ignore[union-attr]
                         (EventKind.MAPPED, "pcp", "80.100.100.1"))
        service.stopService()
        self.r.run_for(1)
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


class FoundInReview(ServiceCase):
    """Defects a review of the redesign reproduced on the fake clock."""

    def test_started_again_while_a_stop_is_deleting_it_maps_again_afterwards(self) -> None:
        self.rig(pcp=True)
        service = self.service()
        self.start(service, "tcp:8080")
        self.r.gateway.delay = 0.5  # the deletes take a while
        service.stopService()
        service.startService()
        self.r.run_for(10)
        self.assertIs(service.state, State.CONNECTED)
        self.assertEqual([m.internal_port for m in self.r.gateway.mappings], [8080])

    def upgraded(self) -> None:
        from txnatpmp._pcp.fake_server import PCPServer

        self.r.gateway.pcp = PCPServer(self.r.gateway)

    def test_P43_pcp_is_asked_again_after_a_silent_spell(self) -> None:
        self.rig()
        service = self.service()
        self.start(service, "tcp:8080")
        self.r.run_for(1500, step=5)
        self.r.gateway.online = False  # silent when the verdict runs out (at 1800 s)
        self.r.run_for(450, step=1)
        self.r.gateway.online = True
        self.upgraded()  # and it speaks PCP now, without announcing it
        self.r.run_for(2400, step=5)
        self.assertEqual(service.mapper.method, "pcp")  # type: ignore[union-attr]

    def test_P43_a_failed_check_for_pcp_is_not_retried_at_once(self) -> None:
        self.rig()
        service = self.service()
        self.start(service, "tcp:8080")
        self.r.run_for(1700, step=5)
        self.r.gateway.online = False
        before = versions(self.r).count(2)
        self.r.run_for(400, step=1)
        self.assertLessEqual(versions(self.r).count(2) - before, 6)  # a probe or two, not 200

    def test_a_stop_during_discovery_leaves_no_timer_and_no_socket(self) -> None:
        self.rig(pcp=True)
        self.r.gateway.online = False
        service = self.service()
        service.add_mapping("tcp:8080").addErrback(lambda _: None)
        service.startService()
        self.r.clock.advance(0.1)
        stopped = service.stopService()
        self.r.clock.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(self.r.clock.getDelayedCalls(), [])
        self.assertEqual(self.r.network.bound(self.r.host_address), [])

    def test_a_pcp_timeout_on_a_link_that_is_down_says_so(self) -> None:
        from txnatpmp import GatewayTimeout
        from txnatpmp._pcp.schedule import PCPSchedule

        self.rig(pcp=True)
        client = PCPClient(self.r.gateway_address, reactor=self.r.host)
        self.r.host.listenUDP(0, client)
        self.r.host.link_up = False
        d = client.announce(schedule=PCPSchedule(initial=1.0, max_duration=3.0))
        self.r.run_for(4)
        message = str(self.failureResultOf(d, GatewayTimeout).value)
        self.assertIn("sending failed: Network is unreachable", message)
        self.assertNotIn("may not support", message)

    def test_one_natpmp_queue_per_gateway_whatever_methods_each_service_asked_for(self) -> None:
        from txnatpmp import GatewayTimeout, RetransmitSchedule

        self.rig()
        self.r.gateway.delay = 0.01
        auto, told = self.service(), self.service(methods="natpmp")
        self.start(auto, *[f"tcp:{port}" for port in range(60100, 60105)])
        self.start(told, *[f"udp:{port}" for port in range(60100, 60105)])
        self.r.run_for(2, step=0.01)
        self.assertIs(auto.client, told.client)
        self.assertEqual(self.r.gateway.max_outstanding, 1)
        impatient = self.service(methods="natpmp", schedule=RetransmitSchedule(0.25, 2))
        self.r.gateway.online = False
        first, = self.start(impatient, "tcp:60200")
        self.r.run_for(1)  # its own schedule (0.75 s), not the others' (128 s)
        self.failureResultOf(first, GatewayTimeout)

    def test_P41_up_to_eight_pcp_requests_in_flight_once_the_server_speaks_pcp(self) -> None:
        self.rig(pcp=True)
        self.r.gateway.delay = 0.1
        service = self.service()
        self.start(service, *[f"udp:{port}" for port in range(61000, 61030)])
        self.r.run_for(3, step=0.01)
        self.assertEqual(len(service.mappings), 30)
        self.assertEqual(self.r.gateway.max_outstanding, 8)
