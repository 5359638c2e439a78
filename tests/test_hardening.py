"""
Hostile, broken and changing networks: fuzzing, gateway misbehaviour, rediscovery, shutdown and
resource bounds.  All on a fake clock.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txnatpmp import (
    EventKind,
    GatewayTimeout,
    Mapping,
    MappingEvent,
    MappingService,
    NATPMPClient,
    NoLifetimeGranted,
    ResultError,
    RetransmitSchedule,
)
from txnatpmp._announce import AnnouncementListener
from txnatpmp._errors import DecodeError, error_for_result
from txnatpmp._wire import (
    ExternalAddressResponse,
    MappingResponse,
    PCPAnnounce,
    decode_announcement,
    decode_request,
    decode_response,
    encode,
)
from txnatpmp.testing import FakeGateway, MemoryNetwork, gateway_rig

GATEWAY = ("198.51.100.1", 5351)
CLIENT = ("198.51.100.10", 40000)
SHORT = RetransmitSchedule(0.25, 3)


def valid_replies() -> list[bytes]:
    return [
        encode(MappingResponse("tcp", 0, 100, 8080, 8080, 7200)),
        encode(MappingResponse("udp", 0, 100, 8080, 8080, 7200)),
        encode(MappingResponse("tcp", 2, 100, 8080, 0, 0)),
        encode(ExternalAddressResponse(0, 100, "80.100.100.1")),
        encode(PCPAnnounce(0, 0)),
        bytes.fromhex("0080 0001 00000064"),
    ]


@st.composite
def mutated(draw: Any) -> bytes:
    data = bytearray(draw(st.sampled_from(valid_replies())))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "cut", "grow"]))
        if action == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif action == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif action == "grow":
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


datagrams = st.lists(st.one_of(st.binary(max_size=1100), mutated()), max_size=25)
sources = st.sampled_from([GATEWAY, ("198.51.100.1", 5352), ("198.51.100.66", 5351)])


class Fuzzing(SynchronousTestCase):
    def setup(self) -> tuple[Clock, MemoryNetwork, FakeGateway, NATPMPClient]:
        rig = gateway_rig(*GATEWAY[:1], announce=False)
        clock, network, gateway = rig.clock, rig.network, rig.gateway
        client = NATPMPClient(*GATEWAY, reactor=clock, schedule=SHORT)
        network.attach(client, CLIENT)
        return clock, network, gateway, client

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(["idle", "waiting", "retransmitting", "after a timeout"]),
           st.lists(st.tuples(sources, st.one_of(st.binary(max_size=1100), mutated())),
                    max_size=25))
    def test_client_survives_any_datagrams_in_every_state(
        self, state: str, noise: list[tuple[tuple[str, int], bytes]]
    ) -> None:
        clock, network, gateway, client = self.setup()
        gateway.online = False
        pending: Deferred[Mapping] | None = None
        if state == "after a timeout":
            failed = client.map_port("tcp", 8080)
            clock.pump([0.25] * 7)
            self.failureResultOf(failed, GatewayTimeout)
        elif state != "idle":
            pending = client.map_port("tcp", 8080)
            if state == "retransmitting":
                clock.advance(0.25)
        results: list[object] = []
        if pending is not None:
            pending.addBoth(results.append)
        for source, data in noise:
            network.deliver(data, source, CLIENT)  # never raises
        self.assertEqual(self.flushLoggedErrors(), [])
        # A result, if any, came from a datagram that really answers the request from the
        # gateway's own address.
        for result in results:
            genuine = [decode_response(d) for s, d in noise if s == GATEWAY and _decodes(d)]
            if isinstance(result, Mapping):
                self.assertTrue(any(
                    isinstance(r, MappingResponse) and r.result == 0
                    and (r.internal_port, r.external_port, r.lifetime)
                    == (result.internal_port, result.external_port, result.lifetime)
                    for r in genuine))
            else:
                self.assertTrue(any(getattr(r, "result", 0) for r in genuine), result)
        # The queue keeps draining: genuine replies complete what is pending and what follows.
        gateway.online = True
        after = client.get_external_address()
        clock.pump([0.25] * 8)
        self.assertEqual(self.successResultOf(after).address, "80.100.100.1")
        if pending is not None and not results:
            self.assertEqual(self.successResultOf(pending).internal_port, 8080)
        self.assertEqual(client.pending, 0)

    @settings(max_examples=5000, deadline=None)
    @given(st.one_of(st.binary(max_size=1100), mutated()))
    def test_decoders_only_ever_raise_decode_error(self, data: bytes) -> None:
        for decode in (decode_response, decode_request, decode_announcement):
            try:
                decode(data)  # type: ignore[operator]
            except DecodeError:
                pass

    @settings(max_examples=500, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from([("198.51.100.1", 5351), ("198.51.100.1", 5350),
                                               ("198.51.100.66", 5351)]),
                              st.one_of(st.binary(max_size=1100), mutated())), max_size=20))
    def test_announcement_listener_passes_on_only_what_decodes(
        self, noise: list[tuple[tuple[str, int], bytes]]
    ) -> None:
        heard: list[object] = []
        listener = AnnouncementListener("198.51.100.1", heard.append)
        for source, data in noise:
            listener.datagramReceived(data, source)
        expected = [decode_announcement(d) for source, d in noise
                    if source == ("198.51.100.1", 5351) and _decodes(d, decode_announcement)]
        self.assertEqual(heard, expected)


def _decodes(data: bytes, decode: Any = decode_response) -> bool:
    try:
        decode(data)
    except DecodeError:
        return False
    return True


class GatewayMisbehaviour(SynchronousTestCase):
    """Each case: what the client (and the service) does about it, as the README says."""

    def setUp(self) -> None:
        rig = gateway_rig(*GATEWAY[:1], announce=False)
        self.clock, self.network, self.gateway = rig.clock, rig.network, rig.gateway
        self.client = NATPMPClient(*GATEWAY, reactor=self.clock, schedule=SHORT)
        self.network.attach(self.client, CLIENT)

    def test_duplicate_replies_are_ignored(self) -> None:
        self.gateway.duplicate_replies = True
        first = self.client.map_port("tcp", 1001)
        second = self.client.map_port("tcp", 1002)
        self.clock.pump([0, 0, 0])
        self.assertEqual(self.successResultOf(first).internal_port, 1001)
        self.assertEqual(self.successResultOf(second).internal_port, 1002)

    def test_wrong_opcode_truncated_or_oversized_replies_are_ignored(self) -> None:
        for rewrite in [lambda r: bytes([0, 0x83]) + r[2:], lambda r: r[:-1],
                        lambda r: r + b"\0", lambda r: bytes([2]) + r[1:]]:
            self.gateway.rewrite_reply = rewrite
            d = self.client.map_port("tcp", 8080)
            self.clock.pump([0.25] * 7)
            self.failureResultOf(d, GatewayTimeout)

    def test_every_result_code_fails_with_its_error(self) -> None:
        for code in [1, 2, 3, 4, 5, 6, 128, 65535]:
            self.gateway.refuse_with = code
            d = self.client.map_port("tcp", 8080)
            self.clock.advance(0)
            error = self.failureResultOf(d, ResultError).value
            self.assertEqual((type(error), error.code), (type(error_for_result(code)), code))

    def test_granted_lifetime_zero(self) -> None:
        self.gateway.grant_lifetime = 0
        d = self.client.map_port("tcp", 8080)
        self.clock.pump([0.25] * 7)
        self.failureResultOf(d, NoLifetimeGranted)

    def test_epoch_far_forwards_is_accepted_and_back_again_is_a_reboot(self) -> None:
        lost: list[int] = []
        self.client.epoch.add_observer(lambda received, expected: lost.append(received))
        self.clock.advance(100)
        self.client.get_external_address()
        self.clock.advance(0)
        self.gateway.epoch_offset = 10**6
        self.client.get_external_address()
        self.clock.advance(0)
        self.assertEqual(lost, [])
        self.gateway.epoch_offset = 0
        self.client.get_external_address()
        self.clock.advance(0)
        self.assertEqual(lost, [100])

    def test_external_address_zero_means_no_wan_link_yet(self) -> None:
        self.gateway.external_address = "0.0.0.0"
        d = self.client.get_external_address()
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d).address, "0.0.0.0")

    def test_service_with_no_wan_address_learns_it_later(self) -> None:
        self.gateway.external_address = "0.0.0.0"
        self.gateway.announce_to = [("224.0.0.1", 5350)]
        service = MappingService(GATEWAY[0], reactor=self.network.host("198.51.100.11"),
                                 lifetime=100)
        service.add_mapping("tcp:8080")
        service.startService()
        self.clock.advance(0)
        self.assertIsNone(service.external_address)
        self.assertEqual(len(service.mappings), 1)
        self.gateway.external_address = "80.100.100.1"
        self.clock.pump([1] * 51)  # the renewal asks for the address again
        self.assertEqual(service.external_address, "80.100.100.1")

    def test_service_retries_a_gateway_that_grants_nothing(self) -> None:
        self.gateway.grant_lifetime = 0
        events: list[MappingEvent] = []
        service = MappingService(GATEWAY[0], reactor=self.network.host("198.51.100.11"),
                                 schedule=SHORT, announcements=False)
        service.add_observer(events.append)
        service.add_mapping("tcp:8080").addErrback(lambda _: None)
        service.startService()
        self.clock.pump([0.25] * 8)
        self.assertIsInstance(events[0].error, NoLifetimeGranted)
        self.gateway.grant_lifetime = None
        self.clock.pump([0.25] * 40)
        self.assertEqual(events[-1].kind, EventKind.MAPPED)


class ChangingNetworks(SynchronousTestCase):
    def test_R20_service_follows_a_new_default_gateway(self) -> None:
        clock = Clock()
        network = MemoryNetwork(clock)
        old, new = FakeGateway(clock), FakeGateway(clock)
        network.attach(old, ("198.51.100.1", 5351))
        network.attach(new, ("198.51.100.254", 5351))
        default = ["198.51.100.1"]
        service = MappingService(reactor=network.host("198.51.100.10"),
                                 gateway_finder=lambda reactor: succeed(default[0]),
                                 schedule=SHORT, announcements=False)
        service.add_mapping("tcp:8080")
        service.startService()
        clock.advance(0)
        self.assertEqual(len(old.mappings), 1)
        old.online = False
        default[0] = "198.51.100.254"
        clock.pump([1] * 3700)  # the renewal at 3600 s finds the old gateway silent
        self.assertEqual(service.gateway, "198.51.100.254")
        self.assertEqual([m.internal_port for m in new.mappings], [8080])


class Shutdown(SynchronousTestCase):
    def test_stop_with_requests_in_flight_deletes_everything_in_bounded_time(self) -> None:
        rig = gateway_rig(*GATEWAY[:1], announce=False)
        clock, network, gateway = rig.clock, rig.network, rig.gateway
        gateway.delay = 0.2  # every answer takes a while: creates are still in flight
        service = MappingService(GATEWAY[0], reactor=network.host("198.51.100.10"),
                                 announcements=False)
        for port in range(9000, 9010):
            service.add_mapping("tcp", port).addErrback(lambda _: None)
        service.startService()
        clock.pump([0.1] * 5)  # some created, the rest queued or in flight
        self.assertTrue(0 < len(gateway.mappings) < 10)
        stopped = service.stopService()
        clock.pump([0.1] * 40)
        self.successResultOf(stopped)
        self.assertEqual(gateway.mappings, [])
        self.assertEqual(clock.getDelayedCalls(), [])


class ResourceBounds(SynchronousTestCase):
    def test_a_flood_of_datagrams_grows_neither_queue_nor_timers(self) -> None:
        clock = Clock()
        network = MemoryNetwork(clock)
        client = NATPMPClient(*GATEWAY, reactor=clock)
        network.attach(client, CLIENT)
        client.map_port("tcp", 9999)  # none of the flood answers it
        rng = random.Random(7)
        # Every well-formed reply except the bare 8-byte error, which answers any request (R06).
        replies = [r for r in valid_replies() if len(r) != 8]
        for i in range(20000):
            data = rng.choice(replies) if i % 2 else rng.randbytes(rng.randrange(0, 64))
            network.deliver(data, GATEWAY, CLIENT)
        self.assertEqual(client.pending, 1)
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_a_flood_of_announcements_grows_no_timers(self) -> None:
        rig = gateway_rig(*GATEWAY[:1], announce=False)
        clock, network, gateway = rig.clock, rig.network, rig.gateway
        service = MappingService(GATEWAY[0], reactor=rig.host)
        for port in range(9000, 9005):
            service.add_mapping("tcp", port)
        service.startService()
        clock.advance(1000)
        rng = random.Random(8)
        for _ in range(20000):
            epoch = rng.choice([0, 5, 10**6, rng.randrange(2**32)])
            data = rng.choice([encode(PCPAnnounce(0, epoch)),
                               encode(ExternalAddressResponse(0, epoch, "80.100.100.9"))])
            network.deliver(data, GATEWAY, ("224.0.0.1", 5350))
        # Per mapping a renewal or an expiry timer (five), one recovery, one "try PCP again"
        # timer and one discovery probe (a PCP ANNOUNCE says PCP may be there): nothing per
        # announcement.
        self.assertLessEqual(len(clock.getDelayedCalls()), 5 + 1 + 1 + 2)
        clock.pump([1] * 10)
        self.assertEqual(len(gateway.mappings), 5)
