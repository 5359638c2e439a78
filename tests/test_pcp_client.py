"""
PCPClient on a fake clock, talking to FakeGateway(pcp=...) over an in-memory network, and on
real loopback sockets.  Tests are named after the requirements in shared/rfc6887-client.md.
"""

from __future__ import annotations

import random
from typing import Any, TypeVar

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txnatpmp import (
    AddressMismatch,
    ClientStopped,
    GatewayTimeout,
    Mapping,
    NotAuthorized,
    OutOfResources,
    PCPClient,
    PCPEpochTracker,
    PCPSchedule,
    UnsupportedVersion,
)
from txnatpmp._pcp.client import MAX_REQUESTED_LIFETIME
from txnatpmp._pcp.schedule import renewal_delay
from txnatpmp._pcp.wire import (
    AnnounceRequest,
    AnnounceResponse,
    MapRequest,
    MapResponse,
    Option,
    VersionRejected,
    decode_request,
    decode_response,
    encode,
)
from txnatpmp._wire import MappingRequest
from txnatpmp._wire import encode as encode_natpmp
from txnatpmp.testing import FakeGateway, gateway_rig

SERVER = ("127.0.0.1", 5351)
CLIENT = ("127.0.0.1", 40000)
T = TypeVar("T")


class PCPTestCase(SynchronousTestCase):
    """A PCPClient and a FakeGateway speaking PCP on one Clock."""

    pcp: Any = True

    def setUp(self) -> None:
        rig = gateway_rig(*SERVER[:1], announce=False, pcp=self.pcp)
        self.clock, self.network, self.gateway = rig.clock, rig.network, rig.gateway
        self.client = self.make_client(CLIENT)

    def make_client(self, address: tuple[str, int], **kwargs: Any) -> PCPClient:
        kwargs.setdefault("rng", random.Random(1))
        client = PCPClient(*SERVER, reactor=self.clock, **kwargs)
        self.network.attach(client, address)
        return client

    def sent(self) -> list[bytes]:
        return [d.data for d in self.network.sent_to(SERVER)]

    def sent_requests(self) -> list[Any]:
        return [decode_request(data) for data in self.sent()]

    def send_times(self) -> list[float]:
        return [d.time for d in self.network.sent_to(SERVER)]

    def result(self, deferred: Deferred[T]) -> T:
        self.clock.advance(0)
        return self.successResultOf(deferred)

    def failure(self, deferred: Deferred[Any], *errors: type[BaseException]) -> Failure:
        self.clock.advance(0)
        return self.failureResultOf(deferred, *errors)

    def deliver(self, data: bytes, source: tuple[str, int] = SERVER) -> None:
        self.network.deliver(data, source, CLIENT)

    def run_until(self, when: float) -> None:
        """Advance the clock call by call, so that every send is stamped with its own time."""
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls()]
            step = min(due, default=when)
            if step > when:
                break
            self.clock.advance(max(0.0, step - self.clock.seconds()))
            if not due:
                break
        self.clock.advance(max(0.0, when - self.clock.seconds()))

    def mapped(self, protocol: str = "tcp", port: int = 8080, **kwargs: Any) -> Mapping:
        return self.result(self.client.map_port(protocol, port, **kwargs))


class Basics(PCPTestCase):
    def test_map_port(self) -> None:
        self.clock.advance(5)
        mapping = self.mapped()
        self.assertEqual(
            attrs.evolve(mapping, nonce=None),
            Mapping("tcp", 8080, 8080, 7200, 5, method="pcp", external_address="80.100.100.1"),
        )
        self.assertEqual(mapping.nonce, self.gateway.mapping_for("tcp", 8080).nonce)  # type: ignore[union-attr]

    def test_P02_requests_go_to_port_5351_from_the_client_socket(self) -> None:
        self.mapped()
        [datagram] = self.network.sent_to(SERVER)
        self.assertEqual(datagram.source, CLIENT)
        [answer] = self.network.sent_to(CLIENT)
        self.assertEqual(answer.source, SERVER)

    def test_P33_announce_returns_the_epoch_and_ignores_the_lifetime(self) -> None:
        self.clock.advance(77)
        self.assertEqual(self.result(self.client.announce()), 77)
        [request] = self.sent_requests()
        self.assertEqual((request.lifetime, len(self.sent()[0])), (0, 24))

    def test_requests_made_before_listening_wait_for_the_transport(self) -> None:
        client = PCPClient(*SERVER, reactor=self.clock)
        d = client.map_port("udp", 5353)
        self.assertNoResult(d)
        self.network.attach(client, ("127.0.0.1", 40001))
        self.assertEqual(self.result(d).external_port, 5353)

    def test_bad_arguments_raise_before_sending(self) -> None:
        plain = Mapping("tcp", 80, 80, 60, 0)
        for call in [
            lambda: self.client.map_port("sctp", 80),
            lambda: self.client.map_port("tcp", 0),
            lambda: self.client.map_port("tcp", 70000),
            lambda: self.client.map_port("tcp", 80, external_port=65536),
            lambda: self.client.map_port("tcp", 80, lifetime=0),
            lambda: self.client.renew(plain),
            lambda: self.client.unmap_port(plain),
        ]:
            self.assertRaises(ValueError, call)
        self.assertEqual(self.sent(), [])
        for host, port in [("gateway.local", 5351), ("127.0.0.1", 0)]:
            self.assertRaises(ValueError, PCPClient, host, port, self.clock)

    def test_cancelling_withdraws_and_stopping_fails_what_is_pending(self) -> None:
        self.gateway.online = False
        first = self.client.map_port("tcp", 1)
        second = self.client.map_port("tcp", 2)
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertEqual(self.client.pending, 1)
        self.network.detach(CLIENT)
        self.failureResultOf(second, ClientStopped)


class Addresses(PCPTestCase):
    def test_P06_client_address_is_the_source_address_toward_the_server(self) -> None:
        self.mapped()
        [request] = self.sent_requests()
        self.assertEqual(request.client_address, "127.0.0.1")
        self.assertEqual(self.sent()[0][8:24], bytes(10) + b"\xff\xff" + bytes((127, 0, 0, 1)))

    def test_P06_explicit_client_address(self) -> None:
        client = self.make_client(("127.0.0.1", 40001), client_address="127.0.0.1")
        self.result(client.announce())
        self.assertEqual(self.sent_requests()[0].client_address, "127.0.0.1")

    def test_P07_address_mismatch_reports_a_nat_in_between_and_is_not_retried(self) -> None:
        client = self.make_client(("127.0.0.1", 40001), client_address="198.51.100.10")
        error = self.failure(client.map_port("tcp", 8080), AddressMismatch).value
        self.assertIn("another NAT sits between you and the gateway", str(error))
        self.assertEqual((error.code, error.protocol, error.retry_after), (12, "pcp", 1800))
        again = self.failure(client.map_port("tcp", 8080), AddressMismatch).value
        self.assertEqual(len(self.sent()), 1)  # refused without sending
        self.assertEqual(again.retry_after, 1800)


class Nonces(PCPTestCase):
    def test_P22_one_nonce_per_mapping_for_retransmissions_renewals_and_the_delete(self) -> None:
        self.gateway.drop_next = 1
        d = self.client.map_port("tcp", 8080)
        self.run_until(4)
        mapping = self.successResultOf(d)
        self.result(self.client.renew(mapping))
        self.result(self.client.unmap_port(mapping))
        self.result(self.client.map_port("tcp", 8080))
        nonces = {r.nonce for r in self.sent_requests()}
        self.assertEqual(nonces, {mapping.nonce})
        self.assertEqual(len(mapping.nonce or b""), 12)
        self.assertEqual(self.sent()[0], self.sent()[1])  # the retransmission is identical

    def test_P22_different_mappings_and_clients_draw_different_nonces(self) -> None:
        a = self.mapped("tcp", 8080)
        b = self.mapped("udp", 8080)
        other = self.make_client(("127.0.0.1", 40001))
        c = self.result(other.map_port("tcp", 9090))
        self.assertEqual(len({a.nonce, b.nonce, c.nonce}), 3)

    def test_P22_a_delete_from_another_process_with_the_stored_nonce_works(self) -> None:
        mapping = self.mapped()
        stored = mapping.nonce
        other = self.make_client(CLIENT)  # same host and port, a fresh process
        rebuilt = Mapping("tcp", 8080, 8080, 7200, 0, method="pcp", nonce=stored)
        self.assertEqual(self.result(other.unmap_port(rebuilt)).lifetime, 0)
        self.assertEqual(self.gateway.mappings, [])

    def test_P22_a_delete_with_another_nonce_is_refused(self) -> None:
        mapping = self.mapped()
        forged = attrs.evolve(mapping, nonce=bytes(12))
        error = self.failure(self.client.unmap_port(forged), NotAuthorized).value
        self.assertEqual((error.code, error.protocol), (2, "pcp"))
        self.assertEqual(len(self.gateway.mappings), 1)

    def test_P23_P27_P38_renewal_suggests_the_assigned_port_and_address(self) -> None:
        self.gateway.reserved_ports.add(8080)
        mapping = self.mapped()
        self.assertNotEqual(mapping.external_port, 8080)
        self.result(self.client.renew(mapping))
        self.gateway.reboot(announce=False)
        self.result(self.client.renew(mapping))  # re-creation after a reboot
        create, renewal, recreation = self.sent_requests()
        self.assertEqual((create.external_port, create.external_address), (0, "0.0.0.0"))
        self.assertEqual((renewal.external_port, renewal.external_address),
                         (mapping.external_port, "80.100.100.1"))
        self.assertEqual(self.sent()[1], self.sent()[2])  # byte-identical
        self.assertEqual(renewal.lifetime, 7200)

    def test_P29_delete_fields(self) -> None:
        mapping = self.mapped(lifetime=600)
        deleted = self.result(self.client.unmap_port(mapping))
        request = self.sent_requests()[-1]
        self.assertEqual((request.lifetime, request.external_port, request.external_address,
                          request.nonce), (0, 0, "0.0.0.0", mapping.nonce))
        self.assertEqual((deleted.lifetime, deleted.external_port), (0, 0))

    def test_P29_a_delete_answered_with_a_lifetime_is_accepted(self) -> None:
        mapping = self.mapped()
        self.gateway.online = False
        d = self.client.unmap_port(mapping)
        self.deliver(encode(MapResponse(0, 60, 0, mapping.nonce or b"", 6, 8080, 8080,
                                        "80.100.100.1")))
        self.assertEqual(self.successResultOf(d).lifetime, 60)


class Matching(PCPTestCase):
    def test_P03_replies_from_another_address_or_port_are_ignored(self) -> None:
        self.gateway.online = False
        d = self.client.announce()
        reply = encode(AnnounceResponse(0, 0, 99))
        self.deliver(reply, ("127.0.0.2", 5351))
        self.deliver(reply, ("127.0.0.1", 5352))
        self.assertNoResult(d)
        self.deliver(reply)
        self.assertEqual(self.successResultOf(d), 99)

    def test_P03_garbage_never_raises(self) -> None:
        self.gateway.online = False
        d = self.client.map_port("tcp", 8080)
        for data in [b"", b"\x02\x81", bytes(3), b"\x02\x81\x00\x00" + bytes(2000),
                     bytes((2, 0x81, 0, 0)) + bytes(30), bytes(range(256)) * 4]:
            self.client.datagramReceived(data, SERVER)
        self.client.datagramReceived(b"x", None)  # even a nonsense address
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)  # logged, not raised
        self.assertNoResult(d)

    @settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.one_of(
        st.binary(max_size=1200),
        st.builds(lambda head, tail: head + tail,
                  st.sampled_from([b"\x02\x81\x00\x00", b"\x02\x80\x00\x00",
                                   b"\x00\x80\x00\x01", b"\x02\x81\x00\x0b"]),
                  st.binary(max_size=120))), max_size=5))
    def test_P03_P50_hostile_datagrams_from_the_server_address_never_raise(
        self, datagrams: list[bytes],
    ) -> None:
        self.gateway.online = False
        d = self.client.announce()
        for data in datagrams:
            self.client.datagramReceived(data, SERVER)
        self.assertEqual(self.flushLoggedErrors(), [])
        d.cancel()  # whatever happened, the request is settled and nothing escaped
        outcomes: list[object] = []
        d.addBoth(outcomes.append)
        self.assertEqual(len(outcomes), 1)
        self.assertEqual(self.client.pending, 0)

    def test_P24_responses_must_match_nonce_protocol_and_internal_port(self) -> None:
        self.gateway.online = False
        d = self.client.map_port("tcp", 8080)
        nonce = self.sent_requests()[0].nonce
        good = MapResponse(0, 600, 0, nonce, 6, 8080, 8080, "80.100.100.1")
        for wrong in [attrs.evolve(good, nonce=bytes(12)), attrs.evolve(good, protocol=17),
                      attrs.evolve(good, internal_port=8081),
                      attrs.evolve(good, lifetime=0)]:  # a late answer to a delete
            self.deliver(encode(wrong))
        self.assertNoResult(d)
        self.deliver(encode(good))
        self.assertEqual(self.successResultOf(d).lifetime, 600)

    def test_P26_requested_lifetimes_are_capped_and_huge_grants_reported_as_a_day(self) -> None:
        self.gateway.max_lifetime = 0xFFFFFFFF
        mapping = self.mapped(lifetime=0xFFFFFFFF)
        self.assertEqual(self.sent_requests()[0].lifetime, MAX_REQUESTED_LIFETIME)
        self.assertEqual(mapping.lifetime, 86400)

    def test_P41_one_request_in_flight(self) -> None:
        self.gateway.delay = 0.5
        ds = [self.client.map_port("tcp", port) for port in range(9000, 9020)]
        self.run_until(20)
        self.assertEqual([self.successResultOf(d).internal_port for d in ds],
                         list(range(9000, 9020)))
        self.assertEqual(self.gateway.max_outstanding, 1)
        self.assertEqual(len(self.sent()), 20)

    def test_P41_raising_the_window_sends_waiting_requests_at_once(self) -> None:
        self.gateway.online = False
        for port in range(9000, 9004):
            self.client.map_port("tcp", port)
        self.clock.advance(0)
        self.assertEqual(len(self.sent()), 1)
        self.client.window = 3  # it speaks PCP, as a mapper learns (P41)
        self.assertEqual([r.internal_port for r in self.sent_requests()], [9000, 9001, 9002])
        for wrong in (0, -1, 1.5, True):
            with self.assertRaises(ValueError):
                self.client.window = wrong  # type: ignore[assignment]
        self.assertEqual(self.client.window, 3)


class Retransmission(PCPTestCase):
    def intervals(self) -> list[float]:
        times = self.send_times()
        return [b - a for a, b in zip(times, times[1:])]

    def test_P39_timer_starts_at_3_s_doubles_with_jitter_up_to_1024_s(self) -> None:
        self.gateway.online = False
        d = self.client.map_port("tcp", 8080)
        self.run_until(8000)
        self.assertNoResult(d)  # MRC = MRD = 0: never gives up
        waits = self.intervals()
        self.assertTrue(2.7 <= waits[0] <= 3.3)
        for previous, wait in zip(waits, waits[1:]):
            base = min(2 * previous, 1024)
            self.assertTrue(0.9 * base - 1e-9 <= wait <= 1.1 * base + 1e-9, (previous, wait))
        self.assertTrue(all(w <= 1024 * 1.1 for w in waits))
        self.assertTrue(any(w > 1024 * 0.9 for w in waits))
        self.assertGreater(len({round(w / 3, 6) for w in waits[:3]}), 1)  # jittered
        self.assertEqual(len(set(self.sent())), 1)  # identical retransmissions
        d.cancel()
        self.failureResultOf(d, CancelledError)

    def test_P39_max_count_gives_up(self) -> None:
        self.gateway.online = False
        client = self.make_client(("127.0.0.1", 40001), schedule=PCPSchedule(1.0, max_count=3))
        d = client.announce()
        self.run_until(100)
        error = self.failureResultOf(d, GatewayTimeout).value
        self.assertEqual(error.attempts, 3)
        self.assertEqual(len(self.sent()), 3)

    def test_P39_max_duration_gives_up_on_time(self) -> None:
        self.gateway.online = False
        client = self.make_client(("127.0.0.1", 40001), schedule=PCPSchedule(max_duration=10))
        d = client.announce()
        self.run_until(9.99)
        self.assertNoResult(d)
        self.run_until(10)
        self.assertEqual(self.failureResultOf(d, GatewayTimeout).value.waited, 10)
        self.assertEqual(len(self.sent()), 3)  # at 0, about 3 and about 9

    def test_P39_schedule_values(self) -> None:
        for bad in [dict(initial=0), dict(maximum=-1), dict(max_count=-1),
                    dict(max_duration=-5)]:
            self.assertRaises(ValueError, PCPSchedule, **bad)

    def test_P40_an_answer_stops_retransmissions(self) -> None:
        self.gateway.drop_next = 2
        d = self.client.map_port("tcp", 8080)
        self.run_until(60)
        self.successResultOf(d)
        self.assertEqual(len(self.sent()), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_send_that_raises_is_a_lost_transmission(self) -> None:
        transport = self.client.transport
        real_write = transport.write  # type: ignore[union-attr]
        failures = [OSError(101, "Network is unreachable")] * 2

        def write(data: bytes, addr: Any) -> None:
            if failures:
                raise failures.pop()
            real_write(data, addr)

        transport.write = write  # type: ignore[union-attr]
        d = self.client.map_port("tcp", 8080)
        self.run_until(30)
        self.assertEqual(self.successResultOf(d).external_port, 8080)
        self.assertEqual(len(self.sent()), 1)  # the third transmission, after two lost ones


class ErrorHolds(PCPTestCase):
    pcp = "miniupnpd"

    def test_P13_long_errors_with_lifetime_0_are_held_30_minutes(self) -> None:
        self.gateway.refuse_with = 2  # miniupnpd: NOT_AUTHORIZED, lifetime 0
        error = self.failure(self.client.map_port("tcp", 8080), NotAuthorized).value
        self.assertEqual((error.lifetime, error.retry_after), (0, 1800))
        self.clock.advance(1799)
        held = self.failure(self.client.map_port("tcp", 8080), NotAuthorized).value
        self.assertEqual(held.retry_after, 1)
        self.assertEqual(len(self.sent()), 1)
        self.gateway.refuse_with = None
        self.result(self.client.map_port("tcp", 8081))  # another request is sent
        self.clock.advance(1)
        self.result(self.client.map_port("tcp", 8080))
        self.assertEqual(len(self.sent()), 3)

    def test_P13_short_errors_are_held_30_seconds_and_a_user_action_clears_holds(self) -> None:
        self.gateway.refuse_with = 7  # NETWORK_FAILURE, lifetime 30
        error = self.failure(self.client.announce(), Exception).value
        self.assertEqual((error.code, error.lifetime, error.retry_after), (7, 30, 30))
        self.gateway.refuse_with = None
        self.failure(self.client.announce(), Exception)
        self.client.clear_holds()
        self.assertEqual(self.result(self.client.announce()), 0)

    def test_P13_P50_a_huge_error_lifetime_is_capped(self) -> None:
        self.gateway.rewrite_reply = lambda data: data[:4] + (10**6).to_bytes(4, "big") + data[8:]
        self.gateway.refuse_with = 2
        error = self.failure(self.client.announce(), NotAuthorized).value
        self.assertEqual((error.lifetime, error.retry_after), (10**6, 1800))

    def test_P13_a_new_epoch_clears_holds(self) -> None:
        self.result(self.client.announce())
        self.gateway.refuse_with = 2
        self.failure(self.client.map_port("tcp", 8080), NotAuthorized)
        self.clock.advance(100)
        self.gateway.refuse_with = None
        self.gateway.reboot(announce=False)
        self.result(self.client.announce())  # epoch 0 after 100 s: state lost
        self.result(self.client.map_port("tcp", 8080))

    def test_P28_no_resources_on_a_delete_of_a_missing_mapping_is_gone(self) -> None:
        mapping = self.mapped()
        self.result(self.client.unmap_port(mapping))
        again = self.result(self.client.unmap_port(mapping))  # miniupnpd: NO_RESOURCES, 30 s
        self.assertEqual((again.lifetime, again.external_port), (0, 0))
        self.assertEqual(self.gateway.pcp.requests[-1].lifetime, 0)  # type: ignore[union-attr]
        self.assertEqual(self.mapped().external_port, 8080)  # nothing frozen

    def test_P28_no_resources_on_a_create_freezes_new_mappings_only(self) -> None:
        kept = self.mapped("udp", 5000)
        self.gateway.refuse_with = 8
        error = self.failure(self.client.map_port("tcp", 8080), OutOfResources).value
        self.assertEqual((error.code, error.retry_after), (8, 30))
        self.gateway.refuse_with = None
        frozen = self.failure(self.client.map_port("tcp", 9090), OutOfResources).value
        self.assertEqual(frozen.retry_after, 30)
        sent = len(self.sent())
        self.assertEqual(sent, 2)
        self.result(self.client.renew(kept))  # renewals still go out
        self.clock.advance(30)
        self.result(self.client.map_port("tcp", 9090))

    def test_P22_miniupnpd_quirk_renewal_with_another_nonce_takes_the_mapping_over(self) -> None:
        mapping = self.mapped()
        thief = self.make_client(CLIENT)
        taken = self.result(thief.renew(attrs.evolve(mapping, nonce=bytes(range(12)))))
        self.assertEqual(taken.external_port, 8080)
        self.failure(self.client.unmap_port(mapping), NotAuthorized)


class RFCServer(PCPTestCase):
    def test_P22_rfc_server_refuses_a_renewal_with_another_nonce(self) -> None:
        mapping = self.mapped()
        other = self.make_client(("127.0.0.1", 40001))
        self.failure(other.renew(attrs.evolve(mapping, nonce=bytes(12))), NotAuthorized)
        self.assertEqual(self.gateway.mapping_for("tcp", 8080).nonce, mapping.nonce)  # type: ignore[union-attr]

    def test_rfc_server_deletes_a_missing_mapping_with_success(self) -> None:
        mapping = self.mapped()
        self.result(self.client.unmap_port(mapping))
        self.assertEqual(self.result(self.client.unmap_port(mapping)).lifetime, 0)


class Versions(PCPTestCase):
    pcp = False

    def test_P42_P46_a_natpmp_only_gateway_fails_at_once(self) -> None:
        d = self.client.map_port("tcp", 8080)
        error = self.failure(d, UnsupportedVersion).value
        self.assertEqual((error.server_version, error.code, error.protocol), (0, 1, "pcp"))
        self.assertEqual(len(self.sent()), 1)
        self.assertEqual(len(self.network.sent_to(CLIENT)[0].data), 8)
        self.failure(self.client.announce(), UnsupportedVersion)  # no hold: asked again
        self.assertEqual(len(self.sent()), 2)

    def test_P42_a_server_of_another_version_is_held(self) -> None:
        self.gateway.online = False
        d = self.client.announce()
        self.deliver(encode(VersionRejected(1, 0, 5)))
        error = self.failureResultOf(d, UnsupportedVersion).value
        self.assertEqual((error.server_version, error.retry_after), (1, 1800))
        self.failureResultOf(self.client.announce(), UnsupportedVersion)
        self.assertEqual(len(self.sent()), 1)

    def test_P44_a_version_0_malformed_reply_is_no_verdict(self) -> None:
        self.gateway.online = False
        d = self.client.announce()
        self.deliver(bytes((0, 0x80, 0, 3)) + bytes(20))
        self.assertNoResult(d)
        self.deliver(encode(AnnounceResponse(0, 0, 3)))
        self.assertEqual(self.successResultOf(d), 3)


class Epochs(PCPTestCase):
    def test_P36_rules(self) -> None:
        clock = Clock()
        tracker = PCPEpochTracker(clock.seconds)
        lost: list[tuple[int, float]] = []
        tracker.add_observer(lambda received, expected: lost.append((received, expected)))
        self.assertFalse(tracker.observe(1000))  # the first is valid
        clock.advance(100)
        self.assertFalse(tracker.observe(1100))
        clock.advance(100)
        # 100 s on the client: the server may count up to 108 (2 s slack, 1/16 drift)...
        self.assertFalse(tracker.observe(1208))
        clock.advance(100)
        self.assertTrue(tracker.observe(1208 + 109))  # ...but not 109
        self.assertEqual(lost, [(1317, 1308)])
        clock.advance(10)
        self.assertTrue(tracker.observe(5))  # went back
        self.assertEqual(lost[-1], (5, 1317 + 10))
        clock.advance(1)
        self.assertFalse(tracker.observe(4))  # prev - 1 is allowed
        clock.advance(100)
        self.assertTrue(tracker.observe(300))  # server ran 3x faster than the client
        clock.advance(200)
        self.assertTrue(tracker.observe(310))  # server ran far slower
        self.assertEqual(tracker.last_epoch, 310)
        tracker.forget()
        self.assertFalse(tracker.observe(0))

    def test_P36_previous_epoch_0_does_not_wrap(self) -> None:
        clock = Clock()
        tracker = PCPEpochTracker(clock.seconds)
        tracker.observe(0)  # miniupnpd's start-up ANNOUNCE
        clock.advance(3)
        self.assertFalse(tracker.observe(3))

    def test_P36_remove_observer(self) -> None:
        tracker = PCPEpochTracker(Clock().seconds)
        calls: list[int] = []

        def observer(received: int, expected: float) -> None:
            calls.append(received)

        tracker.add_observer(observer)
        tracker.remove_observer(observer)
        tracker.observe(100)
        tracker.observe(1)
        self.assertEqual(calls, [])

    def test_P36_a_reboot_is_seen_on_the_next_response(self) -> None:
        lost: list[tuple[int, float]] = []
        self.client.epoch.add_observer(lambda r, e: lost.append((r, e)))
        mapping = self.mapped()
        self.clock.advance(50)
        self.gateway.reboot(announce=False)
        self.clock.advance(1)
        self.result(self.client.renew(mapping))
        self.assertEqual(lost, [(1, 51)])

    def test_P34_unsolicited_announce_on_the_request_socket(self) -> None:
        heard: list[int] = []
        lost: list[int] = []
        self.client.add_announce_observer(heard.append)
        self.client.epoch.add_observer(lambda r, e: lost.append(r))
        self.result(self.client.announce())
        self.clock.advance(60)
        self.deliver(encode(AnnounceResponse(0, 0, 0)), ("127.0.0.9", 5351))  # not the server
        self.assertEqual(heard, [])
        self.gateway.announce_to = [CLIENT]
        self.gateway.reboot(announce=False)
        self.gateway.announce(pcp=True)
        self.assertEqual((heard, lost), ([0], [0]))

    def test_P34_announcements_heard_elsewhere(self) -> None:
        heard: list[int] = []
        self.client.add_announce_observer(heard.append)
        self.assertFalse(self.client.observe_announce(100))
        self.clock.advance(10)
        self.assertTrue(self.client.observe_announce(0))
        self.assertEqual(heard, [100, 0])


class MappingUpdates(PCPTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.mapping = self.mapped()
        self.updates: list[tuple[Mapping, Mapping | None]] = []
        self.client.add_update_observer(lambda old, new: self.updates.append((old, new)))

    def update(self, **changes: Any) -> None:
        values: dict[str, Any] = dict(result=0, lifetime=7200, epoch=self.gateway.epoch,
                                      nonce=self.mapping.nonce, protocol=6, internal_port=8080,
                                      external_port=8080, external_address="80.100.100.1")
        values.update(changes)
        self.deliver(encode(MapResponse(**values)))

    def test_P35_a_new_port_or_address_is_reported(self) -> None:
        self.update(external_port=9999)
        self.update(external_address="80.100.100.2", external_port=9999)
        [(old, new), (_, newer)] = self.updates
        self.assertEqual((old, new.external_port), (self.mapping, 9999))  # type: ignore[union-attr]
        self.assertEqual(newer.external_address, "80.100.100.2")  # type: ignore[union-attr]
        renewal = self.sent_requests()
        self.result(self.client.renew(newer))  # type: ignore[arg-type]
        self.assertEqual(self.sent_requests()[len(renewal)].external_port, 9999)

    def test_P35_cannot_provide_external_means_lost(self) -> None:
        self.update(result=11, lifetime=0)
        self.assertEqual(self.updates, [(self.mapping, None)])

    def test_P35_unmatched_or_duplicate_updates_are_ignored(self) -> None:
        self.update()  # the same mapping again: no news
        self.update(nonce=bytes(12), external_port=1)
        self.update(internal_port=8081, external_port=1)
        self.update(lifetime=0, external_port=1)
        self.assertEqual(self.updates, [])

    def test_P35_an_observer_that_raises_does_not_escape(self) -> None:
        def broken(old: Mapping, new: Mapping | None) -> None:
            raise RuntimeError("observer bug")

        self.client.add_update_observer(broken)
        self.update(external_port=9999)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.client.remove_update_observer(broken)


# Real sockets on loopback


@pytest.fixture
def listening():  # type: ignore[no-untyped-def]
    ports: list[Any] = []

    def listen(protocol: Any, interface: str = "127.0.0.1") -> int:
        port = reactor.listenUDP(0, protocol, interface=interface)
        ports.append(port)
        return int(port.getHost().port)

    yield listen
    for port in ports:
        port.stopListening()


@pytest_twisted.ensureDeferred
async def test_P02_map_renew_and_delete_over_loopback(listening) -> None:  # type: ignore[no-untyped-def]
    gateway = FakeGateway(pcp="miniupnpd")
    client = PCPClient("127.0.0.1", listening(gateway))
    listening(client)
    mapping = await client.map_port("udp", 5353, lifetime=600)
    assert (mapping.external_port, mapping.lifetime, mapping.method) == (5353, 600, "pcp")
    assert (await client.renew(mapping)).external_port == 5353
    assert (await client.unmap_port(mapping)).lifetime == 0
    assert gateway.mappings == []
    assert isinstance(await client.announce(), int)


@pytest_twisted.ensureDeferred
async def test_P42_natpmp_only_gateway_over_loopback_fails_fast(listening) -> None:  # type: ignore[no-untyped-def]
    gateway = FakeGateway()
    client = PCPClient("127.0.0.1", listening(gateway))
    listening(client)
    with pytest.raises(UnsupportedVersion) as raised:
        await client.map_port("tcp", 8080)
    assert raised.value.server_version == 0
    assert len(gateway.received) == 1


@pytest_twisted.ensureDeferred
async def test_P02_P06_ipv6_server_over_loopback(listening) -> None:  # type: ignore[no-untyped-def]
    gateway = FakeGateway(pcp=True)  # checks that the client address field is the source
    client = PCPClient("::1", listening(gateway, "::1"))
    listening(client, "::")
    mapping = await client.map_port("tcp", 8080, lifetime=600)
    assert gateway.pcp is not None
    request = gateway.pcp.requests[0]
    assert isinstance(request, MapRequest)
    assert (request.client_address, request.external_address) == ("::1", "::")
    assert (await client.unmap_port(mapping)).lifetime == 0


class Renewals(SynchronousTestCase):
    def test_P27_renewal_times(self) -> None:
        rng = random.Random(3)
        for _ in range(200):
            first = renewal_delay(7200, 0, rng)
            second = renewal_delay(7200, 1, rng, first)
            third = renewal_delay(7200, 2, rng, second)
            assert first is not None and second is not None and third is not None
            self.assertTrue(3600 <= first <= 4500)
            self.assertTrue(5400 <= second <= 5850)
            self.assertTrue(6300 <= third <= 6525)
        # Never less than 4 s apart, and none once the lifetime is over.
        self.assertEqual(renewal_delay(10, 2, rng, previous=8.0), None)
        self.assertEqual(renewal_delay(100, 3, random.Random(0), previous=95.0), 99.0)


class FakeServer(PCPTestCase):
    """FakeGateway(pcp=True) as RFC 6887's server."""

    def ask(self, data: bytes) -> bytes | None:
        before = len(self.network.sent_to(CLIENT))
        self.deliver_to_server(data)
        self.clock.advance(0)
        answers = self.network.sent_to(CLIENT)[before:]
        return answers[0].data if answers else None

    def deliver_to_server(self, data: bytes) -> None:
        self.network.deliver(data, CLIENT, SERVER)

    def request(self, **changes: Any) -> MapRequest:
        values: dict[str, Any] = dict(nonce=bytes(range(12)), protocol=6, internal_port=8080,
                                      external_port=0, external_address="0.0.0.0",
                                      lifetime=600, client_address="127.0.0.1")
        values.update(changes)
        return MapRequest(**values)

    def test_errors(self) -> None:
        data = encode(self.request())
        cases: list[tuple[bytes, int]] = [
            (bytes((3,)) + data[1:], 1),
            (bytes((2, 5)) + data[2:], 4),
            (encode(self.request(options=(Option(99, bytes(4)),))), 5),
            (encode(self.request(client_address="127.0.0.2")), 12),
            (encode(AnnounceRequest("127.0.0.2")), 12),
            (encode(self.request(protocol=132)), 9),
            (data + b"\x00", 3),
        ]
        for request, result in cases:
            reply = self.ask(request)
            assert reply is not None
            self.assertEqual((reply[0], reply[3]), (2, result), request.hex())
        self.assertIsNone(self.ask(b"\x02"))
        self.assertIsNone(self.ask(bytes((2, 0x81)) + data[2:]))
        self.assertEqual(self.gateway.mappings, [])
        response = decode_response(self.ask(encode(self.request(
            options=(Option(200, bytes(4)),)))) or b"")
        assert isinstance(response, MapResponse)
        self.assertEqual((response.result, response.options), (0, ()))  # ignored, not echoed
        self.assertEqual(self.gateway.mapping_for("tcp", 8080).nonce, bytes(range(12)))  # type: ignore[union-attr]

    def test_natpmp_still_works_beside_pcp(self) -> None:
        self.ask(encode_natpmp(MappingRequest("udp", 5353, 0, 600)))
        mapping = self.gateway.mapping_for("udp", 5353)
        assert mapping is not None
        self.assertIsNone(mapping.nonce)
