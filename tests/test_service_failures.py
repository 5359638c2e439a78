"""
MappingService under the failures found by running it as a hostile network would (issue 11,
items 1-11), on a fake clock with the in-memory network.  Each test failed on the service as it
was before the state-machine redesign.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txnatpmp import (
    EventKind,
    GatewayNotFound,
    GatewayTimeout,
    MappingEvent,
    MappingService,
    NATPMPClient,
    RetransmitSchedule,
)
from txnatpmp._mapper.shared import mappers_in_use
from txnatpmp._service.machine import TRANSITIONS, Input, State
from txnatpmp._service.status import check_status_file
from txnatpmp._wire import ExternalAddressRequest, ExternalAddressResponse, MappingRequest, encode
from txnatpmp.testing import GatewayRig, gateway_rig

GROUP = ("224.0.0.1", 5350)


class Rigged(SynchronousTestCase):
    def setUp(self) -> None:
        self.rig: GatewayRig = gateway_rig()
        self.gateway = self.rig.gateway
        self.events: list[MappingEvent] = []
        self.logged: list[LogEvent] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def service(self, **kwargs: Any) -> MappingService:
        service = MappingService(self.rig.gateway_address, reactor=self.rig.host,
                                 rng=random.Random(1), **kwargs)
        service.add_observer(self.events.append)
        return service

    def start(self, service: MappingService, *specs: str) -> list[Deferred[Any]]:
        firsts = [service.add_mapping(spec) for spec in specs]
        for first in firsts:
            first.addErrback(lambda _: None)
        service.startService()
        self.rig.clock.advance(0)
        return firsts

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]

    def messages(self, level: LogLevel | None = None) -> list[str]:
        return [formatEvent(e) for e in self.logged
                if e.get("log_namespace", "").startswith("txnatpmp")
                and (level is None or e.get("log_level") == level)]

    def table(self) -> list[tuple[str, int]]:
        return sorted((m.protocol, m.internal_port) for m in self.gateway.mappings)

    def map_requests_after(self, time: float) -> list[MappingRequest]:
        return [r.request for r in self.gateway.received
                if r.time > time and isinstance(r.request, MappingRequest) and not r.dropped]


class TheMachine(SynchronousTestCase):
    def test_every_state_and_input_pair_is_declared_once(self) -> None:
        self.assertEqual(set(TRANSITIONS), {(s, i) for s in State for i in Input})

    def test_every_action_the_table_names_exists(self) -> None:
        from txnatpmp._service.link import GatewayLink

        actions = {action for _, action in TRANSITIONS.values() if action}
        self.assertEqual([a for a in sorted(actions) if not callable(getattr(GatewayLink, a, None))],
                         [])

    def test_r19_wait_is_not_cut_short_by_anything_but_stop(self) -> None:
        for event in Input:
            after, _ = TRANSITIONS[(State.RECOVERING, event)]
            expected = {Input.TIMER: State.CONNECTED, Input.STOP: State.STOPPING}
            self.assertEqual(after, expected.get(event, State.RECOVERING), event)


class SendErrors(Rigged):
    """Item 1: a send error used to escape a renewal timer and lose the mapping for good."""

    def test_link_down_through_a_renewal_then_up_keeps_the_mapping(self) -> None:
        service = self.service(lifetime=60)
        self.start(service, "tcp:60010")
        self.rig.run_for(25)
        self.rig.host.link_up = False  # the renewal at 30 s cannot be sent
        self.rig.run_for(10)
        self.rig.host.link_up = True
        self.rig.run_for(40)  # past the first lifetime's end (60 s)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.table(), [("tcp", 60010)])
        self.assertIn(EventKind.RENEWED, self.kinds())
        self.assertNotIn(EventKind.EXPIRED, self.kinds())
        self.assertEqual(len(service.mappings), 1)
        warnings = self.messages(LogLevel.warn)
        self.assertEqual([m for m in warnings if "Cannot send" in m],
                         ["Cannot send to 198.51.100.1: Network is unreachable; retrying on "
                          "schedule"])

    def test_a_send_error_fails_nothing_and_is_retried_on_schedule(self) -> None:
        client = NATPMPClient(self.rig.gateway_address, reactor=self.rig.host,
                              schedule=RetransmitSchedule(0.25, 4))
        self.rig.host.listenUDP(0, client)
        self.rig.host.link_up = False
        d = client.get_external_address()
        self.rig.clock.advance(0.25 + 0.5)  # two transmissions lost at the sender
        self.assertNoResult(d)
        self.rig.host.link_up = True
        self.rig.clock.advance(1)  # the third goes out
        self.assertEqual(self.successResultOf(d).address, "80.100.100.1")

    def test_a_request_that_could_never_be_sent_says_so(self) -> None:
        client = NATPMPClient(self.rig.gateway_address, reactor=self.rig.host,
                              schedule=RetransmitSchedule(0.25, 2))
        self.rig.host.listenUDP(0, client)
        self.rig.host.link_up = False
        d = client.get_external_address()
        self.rig.run_for(1)
        error = self.failureResultOf(d, GatewayTimeout).value
        self.assertIn("sending failed: Network is unreachable", str(error))


class StoppingUnderLoss(Rigged):
    """Item 2: one delete that lost its transmissions used to cancel all the others."""

    def test_stop_at_30_percent_loss_leaves_nothing_on_the_gateway(self) -> None:
        left = []
        for seed in range(10):
            self.rig = gateway_rig(seed=seed)
            self.gateway = self.rig.gateway
            service = self.service()
            self.start(service, *[f"tcp:{port}" for port in range(61000, 61020)])
            self.rig.run_for(5)
            self.assertEqual(len(self.table()), 20)
            self.gateway.drop_rate = 0.3
            stopped = service.stopService()
            self.rig.run_for(10)
            self.successResultOf(stopped)
            left.append(len(self.table()))
        self.assertEqual(left, [0] * 10)

    def test_stop_is_bounded_by_its_budget_when_nearly_everything_is_lost(self) -> None:
        service = self.service(stop_timeout=4)
        self.start(service, *[f"tcp:{port}" for port in range(61000, 61020)])
        self.gateway.drop_rate = 0.9
        stopped = service.stopService()
        self.rig.run_for(4.25)
        self.successResultOf(stopped)
        self.assertEqual(self.rig.clock.getDelayedCalls(), [])


class Resources(Rigged):
    """Item 3: every retry while offline used to open a new client and listener."""

    def test_open_ports_stay_flat_while_offline(self) -> None:
        self.rig.host.link_up = False
        service = self.service(schedule=RetransmitSchedule(0.25, 3))
        self.start(service, "tcp:60010", "udp:60011")
        open_ports = []
        for _ in range(120):
            self.rig.run_for(5)
            open_ports.append(len(self.rig.network.bound(self.rig.host_address)))
        # At most the discovery's two sockets (the PCP probe, the SSDP search), never more.
        self.assertLessEqual(max(open_ports), 2)
        self.rig.host.link_up = True
        self.rig.run_for(70)
        self.assertEqual(self.table(), [("tcp", 60010), ("udp", 60011)])

    def test_stop_closes_everything(self) -> None:
        service = self.service()
        self.start(service, "tcp:60010")
        service.stopService()
        self.rig.clock.advance(0)
        self.assertEqual(self.rig.network.bound(self.rig.host_address), [])
        self.assertEqual(self.rig.clock.getDelayedCalls(), [])


class StatusFiles(Rigged):
    """Item 5: an unwritable status file used to be accepted and leak temporary files."""

    def setUp(self) -> None:
        super().setUp()
        self.folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.folder)

    def test_unwritable_paths_are_refused_before_anything_is_sent(self) -> None:
        for path in ["", str(self.folder), str(self.folder / "missing" / "status.json"),
                     "/proc/x.json", "/dev/null"]:
            with self.assertRaises(ValueError, msg=path):
                check_status_file(path)
            with self.assertRaises(ValueError, msg=path):
                self.service(status_file=path)
        self.assertEqual(self.gateway.received, [])

    def test_a_write_that_fails_later_leaves_no_temporary_file_and_is_logged_once(self) -> None:
        path = self.folder / "status.json"
        service = self.service(status_file=str(path))
        path.mkdir()  # now the file cannot be replaced
        self.start(service, "tcp:60010", "udp:60011")
        self.rig.run_for(10)
        self.assertEqual(os.listdir(self.folder), ["status.json"])
        errors = [m for m in self.messages(LogLevel.error) if "Cannot write status file" in m]
        self.assertEqual(len(errors), 1)
        path.rmdir()
        service.stopService()
        self.rig.clock.advance(0)
        self.assertEqual(os.listdir(self.folder), ["status.json"])
        self.assertTrue(path.is_file())


class Announcements(Rigged):
    """Item 6: forged announcements used to stick, and draft-era ones were not heard."""

    def announce(self, address: str, epoch: int, source: tuple[str, int],
                 destination: tuple[str, int] = GROUP) -> None:
        data = encode(ExternalAddressResponse(0, epoch, address))
        self.rig.network.deliver(data, source, destination)

    def test_announcements_from_another_port_of_the_gateway_are_ignored(self) -> None:
        service = self.service()
        self.start(service, "tcp:60010")
        self.announce("6.6.6.6", self.gateway.epoch, (self.rig.gateway_address, 9999))
        self.assertEqual(service.external_address, "80.100.100.1")

    def test_a_forged_external_address_heals_within_a_renewal_cycle(self) -> None:
        service = self.service(lifetime=120)
        self.start(service, "tcp:60010")
        self.rig.run_for(10)
        self.announce("6.6.6.6", self.gateway.epoch, (self.rig.gateway_address, 5351))
        self.assertEqual(service.external_address, "6.6.6.6")
        self.rig.run_for(60)  # the renewal at 60 s asks for the address again
        self.assertEqual(service.external_address, "80.100.100.1")
        changes = [e.external_address for e in self.events if e.kind is EventKind.ADDRESS_CHANGED]
        self.assertEqual(changes, ["6.6.6.6", "80.100.100.1"])

    def test_draft_era_announcements_to_port_5351_are_heard(self) -> None:
        service = self.service()
        self.start(service, "tcp:60010")
        self.gateway.external_address = "80.100.100.9"
        self.announce("80.100.100.9", self.gateway.epoch, (self.rig.gateway_address, 5351),
                      ("224.0.0.1", 5351))
        self.assertEqual(service.external_address, "80.100.100.9")


class Recovery(Rigged):
    """Item 7: a reboot announced while a probe was in flight skipped R19's random wait."""

    def test_R19_wait_is_kept_when_a_reboot_is_announced_during_a_probe(self) -> None:
        service = self.service(schedule=RetransmitSchedule(0.25, 3), lifetime=600)
        self.start(service, "tcp:60010")
        self.gateway.online = False
        self.rig.run_for(305)  # the renewal at 300 s times out: silent, then probing
        self.assertIn(service.state, (State.SILENT, State.PROBING))
        while service.state is not State.PROBING:
            self.rig.clock.advance(0.25)
        self.gateway.online = True
        self.gateway.reboot()  # announces with epoch 0, while the probe waits for an answer
        rebooted = self.rig.clock.seconds()
        self.rig.clock.advance(0)
        self.assertIs(service.state, State.RECOVERING)
        delay = random.Random(1).uniform(0, 5)
        self.rig.clock.advance(delay - 0.01)
        self.assertEqual(self.map_requests_after(rebooted), [])
        self.rig.clock.advance(0.02)
        self.assertEqual(self.table(), [("tcp", 60010)])
        self.assertIn(EventKind.RECREATED, self.kinds())


class SilentGateway(Rigged):
    """Item 8: a stop used to wait two minutes behind the start-up address request."""

    def test_stop_with_the_gateway_silent_since_start_is_prompt(self) -> None:
        self.gateway.online = False
        service = self.service()
        self.start(service, "tcp:60010", "udp:60011", "tcp:60012")
        self.rig.run_for(1)
        stopped = service.stopService()
        self.rig.run_for(10)
        self.successResultOf(stopped)
        self.assertEqual(self.rig.clock.getDelayedCalls(), [])

    def test_silence_is_reported_honestly(self) -> None:
        service = self.service(schedule=RetransmitSchedule(0.25, 3))
        self.start(service, "tcp:60010")
        self.rig.run_for(5)
        self.gateway.online = False
        service.remove_mapping("tcp:60010").addErrback(lambda _: None)
        service.add_mapping("udp:60011").addErrback(lambda _: None)
        self.rig.run_for(5)
        warnings = self.messages(LogLevel.warn)
        self.assertTrue(any("it last answered" in m for m in warnings), warnings)
        self.assertFalse(any("may not support NAT-PMP" in m for m in warnings), warnings)

    def test_discarded_replies_are_named_as_the_reason(self) -> None:
        self.gateway.rewrite_reply = lambda data: data[:-1]  # every reply one byte short
        client = NATPMPClient(self.rig.gateway_address, reactor=self.rig.host,
                              schedule=RetransmitSchedule(0.25, 2))
        self.rig.host.listenUDP(0, client)
        d = client.get_external_address()
        self.rig.run_for(1)
        message = str(self.failureResultOf(d, GatewayTimeout).value)
        self.assertIn("2 replies from it were discarded as malformed", message)
        self.assertNotIn("may not support", message)


class RenewalsUnderLoss(Rigged):
    """Item 9: renewals used to starve silently; a lapse was never reported."""

    def test_a_lifetime_that_runs_out_is_reported_then_the_mapping_is_recreated(self) -> None:
        service = self.service(lifetime=8)
        self.start(service, "tcp:60010")
        self.gateway.online = False  # the renewal at 4 s and its retries are all lost
        self.rig.run_for(8.5)
        self.assertEqual(self.kinds()[-1], EventKind.EXPIRED)
        self.assertEqual(service.mappings, [])
        warnings = self.messages(LogLevel.warn)
        self.assertIn("The lifetime of tcp 60010 ran out before it could be renewed: "
                      "re-creating it", warnings)
        self.gateway.online = True
        self.rig.run_for(10)
        self.assertIn(EventKind.RECREATED, self.kinds())
        self.assertEqual(len(service.mappings), 1)

    def test_renewals_keep_trying_through_the_rest_of_the_lifetime(self) -> None:
        service = self.service(lifetime=60)
        self.start(service, "tcp:60010")
        self.gateway.drop_next = 6  # the renewal at 30 s loses six transmissions (15.75 s)
        self.rig.run_for(59)
        self.assertEqual(self.kinds(), [EventKind.MAPPED, EventKind.RENEWED])
        times = [r.time for r in self.gateway.received if isinstance(r.request, MappingRequest)]
        self.assertEqual(times[1:], [30, 30.25, 30.75, 31.75, 33.75, 37.75, 45.75])

    def test_100_mappings_at_30_percent_loss_never_lapse(self) -> None:
        self.gateway.drop_rate = 0.3
        service = self.service(lifetime=120)
        self.start(service, *[f"udp:{port}" for port in range(62000, 62100)])
        self.rig.run_for(600, step=0.5)
        self.assertEqual(len(service.mappings), 100)
        self.assertNotIn(EventKind.EXPIRED, self.kinds())
        self.assertNotIn(EventKind.FAILED, self.kinds())


class OneQueuePerGateway(Rigged):
    """Item 10: two services (two endpoints) in one process used to have two queues."""

    def test_two_services_share_one_client_and_one_request_in_flight(self) -> None:
        self.gateway.delay = 0.01
        first, second = self.service(), self.service()
        self.start(first, *[f"tcp:{port}" for port in range(60100, 60110)])
        self.start(second, *[f"udp:{port}" for port in range(60100, 60110)])
        self.rig.run_for(2, step=0.01)
        self.assertIs(first.client, second.client)
        self.assertEqual(mappers_in_use(self.rig.host), 1)
        self.assertEqual(len(self.table()), 20)
        self.assertEqual(self.gateway.max_outstanding, 1)
        first.stopService()
        self.rig.run_for(1, step=0.01)
        self.assertEqual(mappers_in_use(self.rig.host), 1)  # the second still uses it
        self.assertEqual(len(self.table()), 10)
        second.stopService()
        self.rig.run_for(1, step=0.01)
        self.assertEqual(mappers_in_use(self.rig.host), 0)


class HonestLogs(Rigged):
    """Item 11: misleading lines."""

    def test_repeated_reboot_signals_during_recovery_are_said_once(self) -> None:
        service = self.service()
        self.start(service, "tcp:60010")
        self.rig.run_for(100)
        for _ in range(3):
            self.gateway.reboot()  # each announces epoch 0 while the first recovery waits
            self.rig.clock.advance(0.1)
        self.rig.run_for(10)
        recreating = [m for m in self.messages() if "re-creating 1 in" in m]
        self.assertEqual(len(recreating), 1)
        self.assertEqual(self.kinds().count(EventKind.STATE_LOST), 1)

    def test_the_gateway_answering_again_is_said_once(self) -> None:
        service = self.service(schedule=RetransmitSchedule(0.25, 3))
        self.start(service, "tcp:60010")
        self.gateway.online = False
        self.rig.run_for(7200)
        self.gateway.online = True
        self.rig.run_for(120)
        back = [m for m in self.messages() if "answers again" in m]
        self.assertEqual(back, ["Gateway 198.51.100.1 answers again: refreshing 1 mappings"])
        self.assertEqual(self.table(), [("tcp", 60010)])
        address_requests = [r for r in self.gateway.received
                            if isinstance(r.request, ExternalAddressRequest)]
        self.assertLess(len(address_requests), 7200 / 60 * 3 + 5)  # one probe at a time, backoff


class FoundInTheLab(Rigged):
    """What an adversarial run against the real gateway found after the redesign."""

    def test_no_default_route_is_a_failure_to_retry_not_a_crash(self) -> None:
        routes: list[str] = []

        def finder(reactor: Any) -> Any:
            if not routes:
                raise GatewayNotFound("no default IPv4 route in /proc/net/route")  # synchronous
            return routes[0]

        service = MappingService(reactor=self.rig.host, gateway_finder=finder,
                                 rng=random.Random(1))
        first = service.add_mapping("tcp:60010")
        service.startService()
        self.failureResultOf(first, GatewayNotFound)
        self.assertIs(service.state, State.SILENT)
        routes.append(self.rig.gateway_address)  # the link comes up
        self.rig.run_for(5)
        self.assertEqual(self.table(), [("tcp", 60010)])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_find_gateway_without_a_default_route_fails_its_deferred(self) -> None:
        from txnatpmp._gateway import _read_proc_net_route

        folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, folder)
        routes = folder / "route"
        routes.write_text("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n")
        self.failureResultOf(_read_proc_net_route(str(routes)), GatewayNotFound)

    def test_stop_at_60_percent_loss_keeps_going_while_the_gateway_answers_some(self) -> None:
        for seed in range(5):
            self.rig = gateway_rig(seed=seed, pcp=True)
            self.gateway = self.rig.gateway
            self.logged.clear()
            service = self.service()
            self.start(service, *[f"tcp:{port}" for port in range(61000, 61020)])
            self.rig.run_for(5)
            self.gateway.drop_rate = 0.6
            stopped = service.stopService()
            self.rig.run_for(10)
            self.successResultOf(stopped)
            self.assertLessEqual(len(self.table()), 1, seed)  # 11 tries each in 10 s: 0.6**11
            self.assertFalse(any("does not answer" in m for m in self.messages()), seed)

    def test_a_reboot_reports_no_lapse_for_the_mappings_it_took(self) -> None:
        service = self.service(lifetime=4)  # shorter than R19's wait can be
        self.start(service, "tcp:60010", "udp:60011")
        self.rig.run_for(10)
        self.gateway.reboot()
        self.rig.run_for(10)
        self.assertNotIn(EventKind.EXPIRED, self.kinds())
        self.assertEqual(self.kinds().count(EventKind.RECREATED), 2)
