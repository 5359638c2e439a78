"""
MappingService on a fake clock, against FakeGateway on an in-memory network.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txnatpmp import (
    EventKind,
    GatewayTimeout,
    Mapping,
    MappingEvent,
    MappingService,
    NotAuthorized,
    RetransmitSchedule,
    hold_mapping,
)
from txnatpmp._wire import MappingRequest
from txnatpmp.testing import FakeGateway, gateway_rig

GATEWAY = "198.51.100.1"
HOST = "198.51.100.10"


class ServiceTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        rig = gateway_rig(GATEWAY, HOST)  # announcements to 224.0.0.1:5350, in memory only
        self.clock, self.network, self.gateway, self.host = (
            rig.clock, rig.network, rig.gateway, rig.host)
        self.events: list[MappingEvent] = []
        self.service = self.make_service()

    def make_service(self, **kwargs: Any) -> MappingService:
        service = MappingService(GATEWAY, reactor=self.host, rng=random.Random(1), **kwargs)
        service.add_observer(self.events.append)
        return service

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]

    def start(self, *specs: str) -> list[Deferred[Mapping]]:
        firsts = [self.service.add_mapping(spec) for spec in specs]
        self.service.startService()
        self.clock.advance(0)
        return firsts

    def table(self) -> list[tuple[str, int, int]]:
        return sorted((m.protocol, m.internal_port, m.external_port) for m in self.gateway.mappings)

    def map_requests(self) -> list[tuple[float, MappingRequest]]:
        return [(r.time, r.request) for r in self.gateway.received
                if not r.dropped and isinstance(r.request, MappingRequest)]

    def run_for(self, seconds: float, step: float = 0.25) -> None:
        self.clock.pump([step] * int(seconds / step))


class Creating(ServiceTestCase):
    def test_add_before_start_fires_with_the_first_mapping(self) -> None:
        first, = self.start("tcp:60010")
        self.assertEqual(self.successResultOf(first), Mapping("tcp", 60010, 60010, 7200, 0))
        self.assertEqual(self.table(), [("tcp", 60010, 60010)])
        self.assertEqual(self.kinds(), [EventKind.MAPPED])
        self.assertEqual(self.service.external_address, "80.100.100.1")

    def test_add_after_start(self) -> None:
        self.start()
        d = self.service.add_mapping("udp", 5353, lifetime=600)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d).lifetime, 600)

    def test_mappings_are_created_one_request_at_a_time(self) -> None:
        self.gateway.delay = 0.1
        self.start(*[f"tcp:{p}" for p in range(61000, 61020)])
        self.run_for(3, 0.05)
        self.assertEqual(len(self.table()), 20)
        self.assertEqual(self.gateway.max_outstanding, 1)

    def test_bad_and_duplicate_specs_raise(self) -> None:
        self.service.add_mapping("tcp:60010")
        for bad in ["tcp:60010", "sctp:1", "tcp:0", "tcp:65536", "tcp", "tcp:x"]:
            self.assertRaises(ValueError, self.service.add_mapping, bad)
        self.assertRaises(ValueError, self.service.add_mapping, "tcp:1", lifetime=0)
        self.assertRaises(ValueError, self.service.remove_mapping, "udp:60010")

    def test_log_tells_the_story_in_plain_words(self) -> None:
        lines: list[str] = []

        def collect(event: LogEvent) -> None:
            if event.get("log_namespace", "").startswith("txnatpmp"):
                lines.append(formatEvent(event))

        globalLogPublisher.addObserver(collect)
        self.addCleanup(globalLogPublisher.removeObserver, collect)
        self.start("tcp:60010")
        self.assertIn("tcp 60010 is reachable at 80.100.100.1:60010 for 7200 s", lines)


class Renewing(ServiceTestCase):
    def test_R15_renewal_at_half_the_granted_lifetime(self) -> None:
        self.gateway.max_lifetime = 600  # grants less than the 7200 asked for (R14)
        self.start("tcp:60010")
        self.run_for(299)
        self.assertEqual(len(self.map_requests()), 1)
        self.run_for(1)
        times = [t for t, _ in self.map_requests()]
        self.assertEqual(times, [0, 300])
        self.run_for(900)
        self.assertEqual([t for t, _ in self.map_requests()], [0, 300, 600, 900, 1200])
        self.assertEqual(self.kinds(), [EventKind.MAPPED] + [EventKind.RENEWED] * 4)
        self.assertEqual(self.table(), [("tcp", 60010, 60010)])

    def test_R15_renewal_suggests_the_previously_mapped_port(self) -> None:
        self.gateway.max_lifetime = 100
        self.gateway.reserved_ports = {60010}
        first, = self.start("tcp:60010")
        granted = self.successResultOf(first).external_port
        self.assertNotEqual(granted, 60010)
        self.run_for(50)
        self.assertEqual([r.external_port for _, r in self.map_requests()], [0, granted])

    def test_another_external_port_on_renewal_is_followed(self) -> None:
        self.gateway.max_lifetime = 100
        self.start("tcp:60010")
        self.gateway.reboot(announce=False)  # forgets the mapping...
        self.gateway.reserved_ports = {60010}  # ...and someone else took its port
        self.clock.advance(1)  # not enough elapsed for R18 to call this a reboot
        self.run_for(50)
        self.assertEqual(self.kinds()[-1], EventKind.PORT_CHANGED)
        event = self.events[-1]
        assert event.mapping is not None and event.previous is not None
        self.assertEqual(event.previous.external_port, 60010)
        self.assertEqual(event.mapping.external_port, self.table()[0][2])

    def test_refused_mapping_is_retried_with_backoff_until_it_works(self) -> None:
        self.gateway.refuse_with = 2
        first, = self.start("tcp:60010")
        self.failureResultOf(first, NotAuthorized)
        self.run_for(60)
        times = [t for t, _ in self.map_requests()]
        self.assertEqual(times[:5], [0, 2, 6, 14, 30])  # 2, 4, 8, 16 s apart
        self.gateway.refuse_with = None
        self.run_for(60)
        self.assertEqual(self.table(), [("tcp", 60010, 60010)])
        self.assertIn(EventKind.FAILED, self.kinds())
        self.assertEqual(self.kinds()[-1], EventKind.MAPPED)


class GatewayReboots(ServiceTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.start("tcp:60010", "udp:60011", "tcp:60012")
        self.run_for(600)  # the gateway has been up a while
        self.assertEqual(len(self.table()), 3)

    def test_R18_R19_reboot_noticed_from_an_announcement(self) -> None:
        self.gateway.reboot()  # announces with epoch 0
        self.assertEqual(self.table(), [])
        self.assertIn(EventKind.STATE_LOST, self.kinds())
        rebooted_at = self.clock.seconds()
        self.run_for(5)
        self.assertEqual(len(self.table()), 3)
        recreated = [t for t, _ in self.map_requests() if t >= rebooted_at]
        self.assertEqual(len(recreated), 3)
        self.assertTrue(all(rebooted_at <= t <= rebooted_at + 5 for t in recreated))
        self.assertEqual(self.gateway.max_outstanding, 1)

    def test_R19_recovery_waits_a_random_time_up_to_five_seconds(self) -> None:
        jitter = random.Random(1).uniform(0, 5)  # the service's first draw (see make_service)
        self.gateway.reboot()
        rebooted_at = self.clock.seconds()
        self.run_for(5, 0.01)
        first = min(t for t, _ in self.map_requests() if t >= rebooted_at)
        self.assertLessEqual(abs(first - rebooted_at - jitter), 0.011)

    def test_R18_reboot_noticed_from_a_renewal_reply(self) -> None:
        self.gateway.reboot(announce=False)
        self.run_for(3600 + 5)  # the first renewal reply shows the epoch went back
        self.assertIn(EventKind.STATE_LOST, self.kinds())
        self.assertEqual(len(self.table()), 3)

    def test_R22_external_address_change_is_reported(self) -> None:
        self.gateway.set_external_address("80.100.100.2")
        self.assertEqual(self.events[-1], MappingEvent(EventKind.ADDRESS_CHANGED,
                                                       external_address="80.100.100.2"))
        self.assertEqual(self.service.external_address, "80.100.100.2")
        self.assertNotIn(EventKind.STATE_LOST, self.kinds())

    def test_R23_pcp_announce_reboot_signal(self) -> None:
        self.gateway.reboot(announce=False)
        self.gateway.announce(pcp=True)
        self.run_for(5)
        self.assertIn(EventKind.STATE_LOST, self.kinds())
        self.assertEqual(len(self.table()), 3)

    def test_announcements_from_others_are_ignored(self) -> None:
        impostor = FakeGateway(self.clock)
        impostor.announce_to = [("224.0.0.1", 5350)]
        self.network.attach(impostor, ("198.51.100.66", 5351))
        impostor.announce()
        self.assertNotIn(EventKind.STATE_LOST, self.kinds())
        self.assertEqual(self.service.external_address, "80.100.100.1")

    def test_gateway_gone_ten_minutes_then_back(self) -> None:
        self.gateway.online = False
        self.run_for(3600 + 600)  # renewals time out while it is gone
        self.assertIn(EventKind.FAILED, self.kinds())
        self.gateway.reboot(announce=False)  # it comes back empty, without announcing
        self.gateway.online = True
        self.run_for(200)
        self.assertEqual(len(self.table()), 3)
        # While silent, one probe at a time stood for all three mappings.
        self.assertEqual(self.gateway.max_outstanding, 1)

    def test_R20_gateway_back_is_noticed_at_once_from_its_announcement(self) -> None:
        self.gateway.online = False
        self.run_for(3600 + 200)
        self.gateway.online = True
        self.gateway.reboot()
        self.run_for(1)
        self.assertEqual(len(self.table()), 3)


class Stopping(ServiceTestCase):
    def test_stop_deletes_every_mapping(self) -> None:
        self.start("tcp:60010", "udp:60011")
        stopped = self.service.stopService()
        self.clock.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(self.table(), [])
        self.assertEqual(self.kinds()[-2:], [EventKind.REMOVED] * 2)

    def test_stop_with_the_gateway_gone_is_bounded(self) -> None:
        self.start(*[f"tcp:{p}" for p in range(62000, 62050)])
        self.gateway.online = False
        stopped = self.service.stopService()
        self.run_for(3.5)  # nothing answers for 3.5 s after the stop began: the gateway is gone
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_remove_mapping_deletes_it(self) -> None:
        self.start("tcp:60010", "tcp:60011")
        removed = self.service.remove_mapping("tcp:60010")
        self.clock.advance(0)
        self.successResultOf(removed)
        self.assertEqual(self.table(), [("tcp", 60011, 60011)])

    def test_restart_after_stop_maps_again(self) -> None:
        self.start("tcp:60010")
        self.service.stopService()
        self.clock.advance(0)
        self.service.startService()
        self.clock.advance(0)
        self.assertEqual(self.table(), [("tcp", 60010, 60010)])


class StatusFile(ServiceTestCase):
    def test_status_file_follows_the_mappings(self) -> None:
        folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, folder)
        path = folder / "status.json"
        self.service = self.make_service(status_file=str(path))
        self.clock.advance(1000)
        self.start("tcp:60010")
        status = json.loads(path.read_text())
        self.assertEqual(status["external_address"], "80.100.100.1")
        self.assertEqual(status["mappings"], [{"protocol": "tcp", "internal_port": 60010,
                                               "external_port": 60010, "lifetime": 7200,
                                               "method": "natpmp", "family": 4,
                                               "external_address": "80.100.100.1",
                                               "expires": 8200.0}])
        self.service.stopService()
        self.clock.advance(0)
        self.assertEqual(json.loads(path.read_text())["mappings"], [])
        self.assertEqual(list(path.parent.iterdir()), [path])  # no temporary files left


class Holding(ServiceTestCase):
    async def use(self, fail: bool) -> tuple[int, str | None]:
        async with hold_mapping("tcp:8080", GATEWAY, reactor=self.host, lifetime=120,
                                announcements=False) as held:
            assert held.mapping is not None
            seen = (held.mapping.external_port, held.external_address)
            if fail:
                raise RuntimeError("the block failed")
            return seen

    def test_held_during_the_block_and_deleted_after(self) -> None:
        d = Deferred.fromCoroutine(self.use(fail=False))
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), (8080, "80.100.100.1"))
        self.assertEqual(self.table(), [])

    def test_deleted_when_the_block_raises(self) -> None:
        d = Deferred.fromCoroutine(self.use(fail=True))
        self.clock.advance(0)
        self.failureResultOf(d, RuntimeError)
        self.assertEqual(self.table(), [])

    def test_renewed_while_the_block_runs(self) -> None:
        block_done: Deferred[None] = Deferred()

        async def long_block() -> list[int]:
            async with hold_mapping("udp:9000", GATEWAY, reactor=self.host, lifetime=120,
                                    announcements=False):
                await block_done
            return [round(t) for t, r in self.map_requests() if r.lifetime]

        d = Deferred.fromCoroutine(long_block())
        self.run_for(200)
        self.assertEqual(len(self.table()), 1)
        block_done.callback(None)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), [0, 60, 120, 180])
        self.assertEqual(self.table(), [])

    def test_entering_fails_when_the_gateway_never_answers(self) -> None:
        self.gateway.online = False

        async def block() -> None:
            async with hold_mapping("tcp:8080", GATEWAY, reactor=self.host, announcements=False,
                                    schedule=RetransmitSchedule(0.25, 2)):
                raise AssertionError("entered without a mapping")

        d = Deferred.fromCoroutine(block())
        self.run_for(7)  # the PCP probe gives up after 3 s, auto's UPnP search 3.5 s later
        self.failureResultOf(d, GatewayTimeout)
