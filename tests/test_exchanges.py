"""
ExchangeQueue, the request queue NATPMPClient and PCPClient share, through a minimal client: an
echo protocol whose requests are answered by the same bytes, on a Clock and a MemoryNetwork.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txnatpmp import ClientStopped
from txnatpmp._exchanges import Exchange, ExchangeQueue
from txnatpmp.testing import MemoryNetwork

PEER = ("198.51.100.1", 7)
CLIENT = ("198.51.100.10", 40000)


class _Ask(Exchange):
    __slots__ = ("data",)

    def __init__(self, data: bytes, withdraw: Any) -> None:
        super().__init__(withdraw)
        self.data = data


class _EchoClient(ExchangeQueue[_Ask]):
    """Sends each request every second until the peer echoes its bytes back."""

    def __init__(self, clock: Clock, window: int = 1) -> None:
        super().__init__(clock, "peer", PEER[0])
        self._window = window
        self.broken = False

    def ask(self, data: bytes) -> Deferred[Any]:
        return self._enqueue(_Ask(data, self._withdraw))

    def _transmit(self, exchange: _Ask) -> None:
        exchange.timer = self._clock.callLater(1, self._transmit, exchange)
        self._send(exchange)

    def _write(self, exchange: _Ask) -> None:
        assert self.transport is not None
        self.transport.write(exchange.data, PEER)

    def _receive(self, data: bytes, source: Any) -> None:
        if self.broken:
            raise RuntimeError("a bug in the client")
        self.last_heard = self._clock.seconds()
        for exchange in self._inflight:
            if exchange.data == data:
                self._finish(exchange, data)
                return


class ExchangeQueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.network = MemoryNetwork(self.clock)
        self.client = _EchoClient(self.clock)
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def listen(self) -> None:
        self.network.attach(self.client, CLIENT)

    def sent(self) -> list[bytes]:
        return [d.data for d in self.network.sent_to(PEER)]

    def echo(self, data: bytes) -> None:
        self.network.deliver(data, PEER, CLIENT)

    def messages(self, level: LogLevel) -> list[str]:
        return [formatEvent(e) for e in self.logged if e.get("log_level") == level
                and e.get("log_namespace", "").endswith("_EchoClient")]

    def test_requests_made_before_listening_wait_then_go_in_order(self) -> None:
        answers = [self.client.ask(data) for data in (b"a", b"b")]
        self.assertEqual((self.client.pending, self.sent()), (2, []))
        self.listen()
        self.assertEqual(self.sent(), [b"a"])
        self.echo(b"a")
        self.assertEqual(self.successResultOf(answers[0]), b"a")
        self.assertEqual(self.sent(), [b"a", b"b"])
        self.assertEqual(self.client.pending, 1)

    def test_the_window_bounds_what_is_in_flight(self) -> None:
        self.client = _EchoClient(self.clock, window=2)
        self.listen()
        answers = [self.client.ask(data) for data in (b"a", b"b", b"c")]
        self.assertEqual(self.sent(), [b"a", b"b"])
        self.echo(b"b")  # answers may come in any order; the next waiting one takes its place
        self.assertEqual(self.successResultOf(answers[1]), b"b")
        self.assertEqual(self.sent(), [b"a", b"b", b"c"])
        self.assertNoResult(answers[0])

    def test_cancelling_withdraws_in_flight_or_waiting(self) -> None:
        self.listen()
        first, second, third = (self.client.ask(data) for data in (b"a", b"b", b"c"))
        second.cancel()  # waiting: never sent
        first.cancel()  # in flight: its timer stops and the next goes
        self.failureResultOf(first, CancelledError)
        self.failureResultOf(second, CancelledError)
        self.assertEqual(self.sent(), [b"a", b"c"])
        self.clock.advance(1)
        self.assertEqual(self.sent(), [b"a", b"c", b"c"])  # only c retransmits
        self.echo(b"a")  # a late answer to a withdrawn request finishes nothing
        self.assertNoResult(third)

    def test_stopping_fails_everything_oldest_first_and_leaves_no_timer(self) -> None:
        self.client = _EchoClient(self.clock, window=2)
        self.listen()
        order: list[bytes] = []
        for data in (b"a", b"b", b"c"):
            d = self.client.ask(data)
            d.addErrback(lambda f, data=data: (f.trap(ClientStopped), order.append(data)))
        self.network.detach(CLIENT)
        self.assertEqual(order, [b"a", b"b", b"c"])
        self.assertEqual((self.client.pending, self.clock.getDelayedCalls()), (0, []))

    def test_a_request_cancelled_by_another_ones_errback_at_stop_fails_once(self) -> None:
        """A caller's errback may cancel a request that is still to be failed: it ends
        cancelled, and the stop goes on (an AlreadyCalledError would leave the port open)."""
        self.listen()
        first, second = self.client.ask(b"a"), self.client.ask(b"b")
        ended: list[type] = []
        second.addErrback(lambda failure: ended.append(failure.type))
        first.addErrback(lambda failure: (ended.append(failure.type), second.cancel()))
        self.network.detach(CLIENT)
        self.assertEqual(ended, [ClientStopped, CancelledError])
        self.assertEqual((self.client.pending, self.clock.getDelayedCalls()), (0, []))

    def test_an_abstract_client_cannot_be_made(self) -> None:
        class _Half(ExchangeQueue[_Ask]):
            def _transmit(self, exchange: _Ask) -> None:
                pass

        with self.assertRaises(TypeError):
            _Half(self.clock, "peer", PEER[0])  # type: ignore[abstract]

    def test_a_send_error_is_a_lost_transmission_said_once(self) -> None:
        self.listen()
        self.network.links_down.add(CLIENT[0])
        answer = self.client.ask(b"a")
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(self.sent(), [])
        exchange = self.client._inflight[0]
        self.assertIsInstance(exchange.send_error, OSError)
        self.network.links_down.clear()
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertIsNone(exchange.send_error)
        self.echo(b"a")
        self.assertEqual(self.successResultOf(answer), b"a")
        self.assertEqual(self.messages(LogLevel.warn),
                         ["Cannot send to 198.51.100.1: Network is unreachable; retrying on "
                          "schedule"])
        self.assertEqual(self.messages(LogLevel.info), ["Sending to 198.51.100.1 works again"])

    def test_a_failing_receive_is_logged_never_raised(self) -> None:
        self.listen()
        answer = self.client.ask(b"a")
        self.client.broken = True
        self.echo(b"a")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.client.broken = False
        self.echo(b"a")
        self.assertEqual(self.successResultOf(answer), b"a")

    def test_silence_counts_from_the_last_datagram(self) -> None:
        self.listen()
        self.client.ask(b"a")
        self.assertIsNone(self.client._silence())
        self.clock.advance(0.5)
        self.echo(b"a")
        self.clock.advance(2)
        self.assertEqual(self.client._silence(), 2)
