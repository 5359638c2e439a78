"""
NATPMPClient on a fake clock, talking to FakeGateway over an in-memory network.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txnatpmp import (
    ClientStopped,
    ExternalAddress,
    GatewayTimeout,
    Mapping,
    NATPMPClient,
    NotAuthorized,
    ResultError,
    RetransmitSchedule,
)
from txnatpmp._wire import MappingRequest, MappingResponse, decode_request, encode
from txnatpmp.testing import FakeGateway, gateway_rig

GATEWAY = ("127.0.0.1", 5351)
CLIENT = ("127.0.0.1", 40000)
T = TypeVar("T")

#: The RFC's send times for one request that is never answered.
RFC_SEND_TIMES = [0, 0.25, 0.75, 1.75, 3.75, 7.75, 15.75, 31.75, 63.75]


class ClientTestCase(SynchronousTestCase):
    """A client and a FakeGateway on one Clock."""

    def setUp(self) -> None:
        rig = gateway_rig(*GATEWAY[:1], announce=False)
        self.clock, self.network, self.gateway = rig.clock, rig.network, rig.gateway
        self.client = NATPMPClient(*GATEWAY, reactor=self.clock)
        self.network.attach(self.client, CLIENT)

    def sent(self) -> list[bytes]:
        return [d.data for d in self.network.sent_to(GATEWAY)]

    def send_times(self) -> list[float]:
        return [d.time for d in self.network.sent_to(GATEWAY)]

    def result(self, deferred: Deferred[T]) -> T:
        """Let the gateway answer, then return what C{deferred} fired with."""
        self.clock.advance(0)
        return self.successResultOf(deferred)

    def failure(self, deferred: Deferred[Any], *errors: type[BaseException]) -> Failure:
        self.clock.advance(0)
        return self.failureResultOf(deferred, *errors)

    def reply(self, response: MappingResponse, source: tuple[str, int] = GATEWAY) -> None:
        self.network.deliver(encode(response), source, CLIENT)


class Basics(ClientTestCase):
    def test_external_address(self) -> None:
        self.clock.advance(30)
        address = self.result(self.client.get_external_address())
        self.assertEqual(address, ExternalAddress("80.100.100.1", 30))
        self.assertEqual(self.sent(), [b"\x00\x00"])

    def test_map_port(self) -> None:
        mapping = self.result(self.client.map_port("tcp", 8080))
        self.assertEqual(mapping, Mapping("tcp", 8080, 8080, 7200, 0))
        self.assertEqual(self.gateway.mapping_for("tcp", 8080).external_port, 8080)  # type: ignore[union-attr]

    def test_requests_made_before_listening_wait_for_the_transport(self) -> None:
        client = NATPMPClient(*GATEWAY, reactor=self.clock)
        d = client.map_port("udp", 5353)
        self.assertNoResult(d)
        self.network.attach(client, ("127.0.0.1", 40001))
        self.assertEqual(self.result(d).external_port, 5353)

    def test_bad_arguments_raise_before_sending(self) -> None:
        for call in [
            lambda: self.client.map_port("sctp", 80),
            lambda: self.client.map_port("tcp", 70000),
            lambda: self.client.map_port("tcp", -1),
            lambda: self.client.map_port("tcp", 80, external_port=65536),
            lambda: self.client.map_port("tcp", 80, lifetime=-5),
            lambda: self.client.unmap_port("TCP", 80),
            lambda: self.client.unmap_port("tcp", 0),
            lambda: self.client.unmap_all("icmp"),
        ]:
            self.assertRaises(ValueError, call)
        self.assertEqual(self.sent(), [])
        self.assertEqual(self.client.pending, 0)

    def test_bad_gateway_raises(self) -> None:
        for host, port in [("gateway.local", 5351), ("::1", 5351), ("198.51.100.1", 0)]:
            self.assertRaises(ValueError, NATPMPClient, host, port, self.clock)

    def test_internal_port_zero_with_a_lifetime_is_sent_as_given(self) -> None:
        self.client.map_port("udp", 0, external_port=0, lifetime=60)
        self.assertEqual(decode_request(self.sent()[0]), MappingRequest("udp", 0, 0, 60))


class Retransmission(ClientTestCase):
    def test_R07_retransmit_schedule(self) -> None:
        self.gateway.online = False
        d = self.client.map_port("tcp", 8080)
        self.clock.pump([0.25] * 510)  # 127.5 s
        self.assertNoResult(d)
        self.assertEqual(self.send_times(), RFC_SEND_TIMES)
        self.clock.pump([0.25])  # 127.75 s: 64 s after the ninth transmission
        error = self.failureResultOf(d, GatewayTimeout).value
        self.assertEqual((error.attempts, error.waited), (9, 127.75))
        self.assertIn("no answer from 127.0.0.1:5351", str(error))
        self.assertEqual(len(self.sent()), 9)

    def test_R07_custom_schedule(self) -> None:
        self.gateway.online = False
        client = NATPMPClient(*GATEWAY, self.clock, schedule=RetransmitSchedule(0.5, 3))
        self.network.attach(client, ("127.0.0.1", 40001))
        d = client.get_external_address()
        self.clock.pump([0.25] * 13)
        self.assertNoResult(d)
        self.clock.pump([0.25])
        self.failureResultOf(d, GatewayTimeout)
        self.assertEqual(self.send_times(), [0, 0.5, 1.5])

    def test_R07_answer_after_retransmissions_completes(self) -> None:
        self.gateway.drop_next = 3
        d = self.client.map_port("tcp", 8080)
        self.clock.pump([0.25] * 8)
        self.assertEqual(self.successResultOf(d).external_port, 8080)
        self.assertEqual(self.send_times(), [0, 0.25, 0.75, 1.75])

    def test_R09_retransmissions_are_identical_and_yield_one_mapping(self) -> None:
        self.gateway.delay = 0.3  # the gateway answers after the first retransmission
        d = self.client.map_port("tcp", 8080, lifetime=600)
        self.clock.pump([0.05] * 20)
        mapping = self.successResultOf(d)
        sent = self.sent()
        self.assertEqual(len(sent), 2)
        self.assertEqual(sent[0], sent[1])
        self.assertEqual(len(self.gateway.mappings), 1)
        self.assertEqual(mapping.external_port, self.gateway.mappings[0].external_port)

    def test_R17_deletes_give_up_after_two_retransmissions(self) -> None:
        self.gateway.online = False
        d = self.client.unmap_port("tcp", 8080)
        self.clock.pump([0.25] * 6)
        self.assertNoResult(d)
        self.clock.pump([0.25])
        self.assertEqual(self.failureResultOf(d, GatewayTimeout).value.attempts, 3)
        self.assertEqual(self.send_times(), [0, 0.25, 0.75])

    def test_R17_unmap_all_gives_up_as_soon(self) -> None:
        self.gateway.online = False
        d = self.client.unmap_all("udp")
        self.clock.pump([0.25] * 7)
        self.failureResultOf(d, GatewayTimeout)


class ImmediateAnswers(ClientTestCase):
    def test_an_answer_delivered_during_write_leaves_no_timer_behind(self) -> None:
        """A transport may deliver the answer before write() returns (an in-memory one does)."""
        def answer_at_once(data: bytes, addr: Any) -> None:
            FakeGateway.datagramReceived(self.gateway, data, addr)
            self.clock.advance(0)  # the reply goes out, and arrives, inside the client's write

        self.gateway.datagramReceived = answer_at_once  # type: ignore[method-assign]
        d = self.client.map_port("tcp", 8080)
        self.assertEqual(self.successResultOf(d).external_port, 8080)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.pump([1] * 200)
        self.assertEqual(len(self.sent()), 1)


class Serialization(ClientTestCase):
    def test_R08_one_request_in_flight_in_order(self) -> None:
        self.gateway.delay = 0.2
        ds = [self.client.map_port("tcp", port) for port in (1001, 1002, 1003)]
        ds.append(self.client.get_external_address())
        self.assertEqual(len(self.sent()), 1)
        self.assertEqual(self.client.pending, 4)
        for expected in (2, 3, 4):
            self.clock.advance(0.2)
            self.assertEqual(len(self.sent()), expected)
        self.clock.advance(0.2)
        self.assertEqual([self.successResultOf(d).external_port for d in ds[:3]], [1001, 1002, 1003])
        self.assertEqual(self.successResultOf(ds[3]).address, "80.100.100.1")
        self.assertEqual(self.gateway.max_outstanding, 1)
        self.assertEqual(self.client.pending, 0)

    def test_R08_queue_continues_after_a_timeout(self) -> None:
        client = NATPMPClient(*GATEWAY, self.clock, schedule=RetransmitSchedule(0.25, 1))
        self.network.attach(client, ("127.0.0.1", 40001))
        self.gateway.drop_next = 1
        first = client.map_port("tcp", 1001)
        second = client.map_port("tcp", 1002)
        self.clock.advance(0.25)
        self.failureResultOf(first, GatewayTimeout)
        self.assertEqual(self.result(second).external_port, 1002)

    def test_a_callback_request_goes_after_those_already_queued(self) -> None:
        order: list[int] = []
        first = self.client.map_port("tcp", 1001)
        first.addCallback(lambda m: self.client.map_port("tcp", 1003).addCallback(
            lambda m: order.append(m.internal_port)))
        self.client.map_port("tcp", 1002).addCallback(lambda m: order.append(m.internal_port))
        self.clock.pump([0, 0, 0])
        self.assertEqual(order, [1002, 1003])


class Cancellation(ClientTestCase):
    def test_cancelling_a_queued_request_withdraws_it(self) -> None:
        self.gateway.delay = 0.1
        first = self.client.map_port("tcp", 1001)
        second = self.client.map_port("tcp", 1002)
        second.cancel()
        self.failureResultOf(second, CancelledError)
        self.clock.advance(0.1)
        self.successResultOf(first)
        self.clock.pump([0.25] * 4)
        self.assertEqual(len(self.sent()), 1)
        self.assertIsNone(self.gateway.mapping_for("tcp", 1002))

    def test_cancelling_the_request_in_flight_stops_retransmissions(self) -> None:
        self.gateway.online = False
        first = self.client.map_port("tcp", 1001)
        second = self.client.get_external_address()
        self.clock.advance(0.25)
        self.gateway.online = True
        first.cancel()  # the next request goes out at once
        self.failureResultOf(first, CancelledError)
        self.assertEqual(self.result(second).address, "80.100.100.1")
        self.clock.pump([1] * 10)
        self.assertEqual(self.sent(), [self.sent()[0]] * 2 + [b"\x00\x00"])

    def test_stopping_fails_every_pending_request(self) -> None:
        self.gateway.online = False
        ds = [self.client.map_port("tcp", 1001), self.client.get_external_address()]
        self.network.detach(CLIENT)
        for d in ds:
            self.failureResultOf(d, ClientStopped)
        self.clock.pump([1] * 200)
        self.assertEqual(len(self.sent()), 1)


class Receiving(ClientTestCase):
    def test_R11_datagrams_not_from_the_gateway_are_ignored(self) -> None:
        self.gateway.delay = 1
        d = self.client.map_port("tcp", 8080)
        forged = MappingResponse("tcp", 0, 0, 8080, 666, 7200)
        self.reply(forged, source=("127.0.0.2", 5351))
        self.reply(forged, source=("127.0.0.1", 5352))
        self.assertNoResult(d)
        self.clock.pump([0.25] * 4)
        self.assertEqual(self.successResultOf(d).external_port, 8080)

    def test_R12_malformed_datagrams_are_ignored(self) -> None:
        self.gateway.delay = 1
        d = self.client.map_port("tcp", 8080)
        for data in [b"", b"\xff" * 1100, encode(MappingResponse("tcp", 0, 0, 8080, 1, 1))[:15],
                     b"\x02" + encode(MappingResponse("tcp", 0, 0, 8080, 1, 1))[1:],
                     encode(MappingResponse("tcp", 0, 0, 9999, 1, 1))]:
            self.client.datagramReceived(data, GATEWAY)
        self.assertNoResult(d)
        self.clock.pump([0.25] * 4)
        self.assertEqual(self.successResultOf(d).external_port, 8080)

    def test_R06_late_answer_to_an_earlier_request_is_not_taken(self) -> None:
        self.gateway.online = False
        d = self.client.unmap_port("tcp", 8080)
        self.clock.pump([0.25] * 7)
        self.failureResultOf(d, GatewayTimeout)
        second = self.client.map_port("tcp", 8080)
        self.reply(MappingResponse("tcp", 0, 0, 8080, 0, 0))  # the delete's answer, late
        self.reply(MappingResponse("tcp", 0, 0, 8081, 8081, 7200))  # answers another port
        self.assertNoResult(second)
        self.gateway.online = True
        self.clock.pump([0.25] * 2)
        self.assertEqual(self.successResultOf(second).lifetime, 7200)

    def test_R06_duplicate_answer_is_not_taken_for_the_next_request(self) -> None:
        self.result(self.client.map_port("tcp", 1001))
        self.gateway.online = False
        second = self.client.map_port("tcp", 1002)
        self.reply(MappingResponse("tcp", 0, 0, 1001, 1001, 7200))
        self.assertNoResult(second)

    def test_R05_result_codes_fail_with_their_exception(self) -> None:
        self.gateway.refuse_with = 2
        error = self.failure(self.client.map_port("tcp", 80), NotAuthorized).value
        self.assertEqual(error.code, 2)
        self.gateway.refuse_with = 99
        error = self.failure(self.client.get_external_address(), ResultError).value
        self.assertEqual(error.code, 99)

    def test_R06_short_unsupported_version_reply_fails_the_request(self) -> None:
        self.gateway.online = False
        d = self.client.map_port("tcp", 80)
        self.network.deliver(bytes.fromhex("0000 0001 00000005"), GATEWAY, CLIENT)
        self.assertEqual(self.failureResultOf(d).value.code, 1)


class Mappings(ClientTestCase):
    def test_R13_suggested_port_is_a_hint(self) -> None:
        self.gateway.reserved_ports = {9000}
        mapping = self.result(self.client.map_port("tcp", 8080, external_port=9000))
        self.assertNotEqual(mapping.external_port, 9000)
        self.assertEqual(mapping.external_port, self.gateway.mapping_for("tcp", 8080).external_port)  # type: ignore[union-attr]
        self.assertEqual(decode_request(self.sent()[0]), MappingRequest("tcp", 8080, 9000, 7200))

    def test_R13_zero_means_any(self) -> None:
        self.client.map_port("udp", 5353)
        self.assertEqual(decode_request(self.sent()[0]).external_port, 0)  # type: ignore[union-attr]

    def test_R14_default_lifetime_and_granted_lifetime(self) -> None:
        self.gateway.max_lifetime = 3600
        mapping = self.result(self.client.map_port("tcp", 8080))
        self.assertEqual(decode_request(self.sent()[0]).lifetime, 7200)  # type: ignore[union-attr]
        self.assertEqual(mapping.lifetime, 3600)

    def test_R16_delete(self) -> None:
        self.result(self.client.map_port("tcp", 8080))
        deleted = self.result(self.client.unmap_port("tcp", 8080))
        self.assertEqual((deleted.external_port, deleted.lifetime), (0, 0))
        self.assertEqual(decode_request(self.sent()[-1]), MappingRequest("tcp", 8080, 0, 0))
        self.assertEqual(self.gateway.mappings, [])

    def test_R16_deleting_a_missing_mapping_succeeds(self) -> None:
        self.assertEqual(self.result(self.client.unmap_port("udp", 4444)).lifetime, 0)

    def test_R16_delete_all_of_one_protocol(self) -> None:
        for port in (1001, 1002):
            self.result(self.client.map_port("tcp", port))
        self.result(self.client.map_port("udp", 1001))
        self.result(self.client.unmap_all("tcp"))
        self.assertEqual(decode_request(self.sent()[-1]), MappingRequest("tcp", 0, 0, 0))
        self.assertEqual([(m.protocol, m.internal_port) for m in self.gateway.mappings],
                         [("udp", 1001)])


class Epochs(ClientTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.lost: list[tuple[int, float]] = []
        self.client.epoch.add_observer(lambda received, expected: self.lost.append((received, expected)))

    def test_R18_epoch_tracked_from_responses(self) -> None:
        self.clock.advance(100)
        self.result(self.client.get_external_address())
        self.assertEqual(self.client.epoch.last_epoch, 100)
        self.clock.advance(1000)
        self.result(self.client.map_port("tcp", 80))
        self.assertEqual(self.client.epoch.last_epoch, 1100)
        self.assertEqual(self.lost, [])

    def test_R18_reboot_noticed_on_the_next_response(self) -> None:
        self.clock.advance(100)
        self.result(self.client.map_port("tcp", 80))
        self.clock.advance(50)
        self.gateway.reboot()
        self.clock.advance(10)
        self.result(self.client.map_port("tcp", 80))
        self.assertEqual(self.lost, [(10, 100 + 60 * 7 / 8)])


class EpochRule(SynchronousTestCase):
    """R18's arithmetic on its own."""

    def setUp(self) -> None:
        from txnatpmp import EpochTracker

        self.clock = Clock()
        self.tracker = EpochTracker(self.clock.seconds)
        self.lost: list[int] = []
        self.tracker.add_observer(lambda received, expected: self.lost.append(received))

    def test_R18_seven_eighths_of_elapsed_time_with_two_seconds_slack(self) -> None:
        self.assertFalse(self.tracker.observe(1000))
        self.clock.advance(80)  # expected: 1000 + 70
        self.assertFalse(self.tracker.observe(1068))  # 2 s below: still fine
        self.clock.advance(80)  # expected: 1068 + 70 = 1138
        self.assertTrue(self.tracker.observe(1135))  # 3 s below: lost
        self.assertEqual(self.lost, [1135])

    def test_R18_slow_gateway_clock_within_seven_eighths_is_fine(self) -> None:
        self.tracker.observe(0)
        for _ in range(100):
            self.clock.advance(3600)
            self.assertFalse(self.tracker.observe(int(self.clock.seconds() * 0.9)))

    def test_R18_forget_accepts_any_next_epoch(self) -> None:
        self.tracker.observe(5000)
        self.tracker.forget()
        self.assertFalse(self.tracker.observe(3))
        self.assertEqual(self.lost, [])
