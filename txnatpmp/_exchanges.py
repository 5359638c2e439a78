"""
L{ExchangeQueue}: the request queue that L{NATPMPClient} and L{PCPClient} share.

Both clients queue requests in the order they are made, keep up to a window of them in flight
(NAT-PMP 1, R08; PCP 1 and then more, P41), fire each request's C{Deferred} once, withdraw it when
the caller cancels, fail everything with L{ClientStopped} when the port stops, treat a send that
raises C{OSError} as a lost transmission (said once until sending works again), and never raise
out of C{datagramReceived}.  That lives here; what each protocol does differently (when to
retransmit and give up, which datagram answers which request, what the caller gets) stays in the
client, behind the abstract methods C{_transmit}, C{_write} and C{_receive} (and C{_may_send},
which a client may narrow).

It is a base class rather than a helper object the client owns: the queue calls into the client
at every step (transmit, receive, the transport, the logger with the client's namespace), so a
helper would need as many callbacks as it has methods, and every request would pay one more
object hop on the path that C{bench/overhead.py} measures.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections import deque
from typing import Any, Callable, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from ._errors import ClientStopped


class Exchange:
    """
    One request and its transmissions, from queueing to its answer: what every protocol keeps.
    Each client subclasses it with what its protocol needs (the request, counters).
    """

    __slots__ = ("deferred", "timer", "started", "send_error")

    def __init__(self, withdraw: Callable[[Any], None]) -> None:
        """
        @param withdraw: Called with this exchange when the caller cancels its C{Deferred}.
        """
        self.deferred: Deferred[Any] = Deferred(lambda _: withdraw(self))
        self.timer: IDelayedCall | None = None  # until the next transmission or giving up
        self.started = 0.0  # the clock's time of its first transmission
        self.send_error: OSError | None = None  # the last transmission could not be sent


E = TypeVar("E", bound=Exchange)


class ExchangeQueue(DatagramProtocol, Generic[E], metaclass=ABCMeta):
    """
    A C{DatagramProtocol} that sends queued requests, oldest first, up to C{_window} at a time
    (1 unless the client raises it).

    A subclass implements C{_transmit(exchange)} (arm the timer, then L{_send}), C{_write} and
    C{_receive(data, source)}, and ends an exchange with L{_finish}.

    @ivar last_heard: The clock's time of the last well-formed datagram from the peer, or
        C{None}; the subclass's C{_receive} sets it.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, peer_field: str, peer_name: str) -> None:
        """
        @param peer_field: The log field naming the other end in send events (C{host},
            C{server}): each client keeps its own, so its events read as they always did.
        @param peer_name: Its value.
        """
        self._clock = clock
        self._peer_field = peer_field
        self._peer_name = peer_name
        self._window = 1
        self._queue: deque[E] = deque()
        self._inflight: list[E] = []  # oldest first
        self.last_heard: float | None = None
        self._send_failing = False

    @property
    def pending(self) -> int:
        """How many requests are waiting or in flight."""
        return len(self._queue) + len(self._inflight)

    # DatagramProtocol

    def startProtocol(self) -> None:
        self._send_next()

    def stopProtocol(self) -> None:
        waiting = self._inflight + list(self._queue)
        self._queue.clear()
        self._inflight = []
        for exchange in waiting:
            self._stop_timer(exchange)
        for exchange in waiting:
            if not exchange.deferred.called:  # a caller's errback may have cancelled it
                exchange.deferred.errback(ClientStopped("the client stopped listening"))

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            self._receive(data, addr)
        except Exception:
            self.log.failure("Unexpected error handling a datagram from {source}", source=addr)

    # What each client provides

    @abstractmethod
    def _transmit(self, exchange: E) -> None:
        """Send C{exchange}'s request once more (the first time too) and arm its timer."""

    @abstractmethod
    def _write(self, exchange: E) -> None:
        """
        Hand C{exchange}'s datagram to the transport.

        @raise OSError: when it cannot be sent.
        """

    @abstractmethod
    def _receive(self, data: bytes, source: Any) -> None:
        """Handle a datagram; an exception is logged, never raised to the transport."""

    def _may_send(self) -> bool:
        """Whether requests may leave the queue now: while the client listens."""
        return self.transport is not None

    # The queue

    def _enqueue(self, exchange: E) -> Deferred[Any]:
        """Queue C{exchange} after those already waiting; send it if the window allows."""
        self._queue.append(exchange)
        self._send_next()
        return exchange.deferred

    def _send_next(self) -> None:
        while self._queue and len(self._inflight) < self._window and self._may_send():
            exchange = self._queue.popleft()
            self._inflight.append(exchange)
            exchange.started = self._clock.seconds()
            self._transmit(exchange)

    def _send(self, exchange: E) -> None:
        """
        L{_write} C{exchange}: a send that raises C{OSError} (no route, link down) is a lost
        transmission, retransmitted on schedule like any other, and said once until one works.
        """
        try:
            self._write(exchange)
        except OSError as error:
            exchange.send_error = error
            if not self._send_failing:  # said once, not at every retransmission
                self._send_failing = True
                self.log.warn(f"Cannot send to {{{self._peer_field}}}: {{error}}; retrying on "
                              f"schedule", **{self._peer_field: self._peer_name},
                              error=error.strerror or error)
            return
        exchange.send_error = None
        if self._send_failing:
            self._send_failing = False
            self.log.info(f"Sending to {{{self._peer_field}}} works again",
                          **{self._peer_field: self._peer_name})

    def _silence(self) -> float | None:
        """Seconds since the last well-formed datagram from the peer, or C{None} if never."""
        heard = self.last_heard
        return None if heard is None else self._clock.seconds() - heard

    def _withdraw(self, exchange: E) -> None:
        """The caller cancelled: forget the request wherever it is."""
        if exchange in self._inflight:
            self._finish(exchange, None)
        elif exchange in self._queue:
            self._queue.remove(exchange)

    def _finish(self, exchange: E, outcome: object) -> None:
        """
        Take C{exchange} out of flight, fire its Deferred with C{outcome} (an exception fails
        it; nothing when it was cancelled), then send the next request.
        """
        self._stop_timer(exchange)
        if exchange in self._inflight:
            self._inflight.remove(exchange)
        if isinstance(outcome, Exception):
            exchange.deferred.errback(outcome)
        elif outcome is not None:
            exchange.deferred.callback(outcome)
        self._send_next()

    @staticmethod
    def _stop_timer(exchange: Exchange) -> None:
        if exchange.timer is not None and exchange.timer.active():
            exchange.timer.cancel()
        exchange.timer = None
