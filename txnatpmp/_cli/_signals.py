"""
SIGINT, SIGTERM and SIGHUP as a stop request that every stage of a command races against.

The first of these signals asks the command to stop: whatever it waits on (the gateway, a child
process, the end of C{--for}) is abandoned, what it created is deleted within L{CLEANUP_BUDGET}
seconds, and it exits 128 + the signal's number.  A later signal cuts the clean-up short.
"""

from __future__ import annotations

import signal
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")

#: The signals that stop a command: Ctrl-C, kill, and a closed terminal (an SSH session ended).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)

#: Seconds the deletes after a stop may take, so that a stop ends within a second even when the
#: gateway has gone silent (a live gateway answers in milliseconds).
CLEANUP_BUDGET = 0.8


class Interrupted(Exception):
    """A stop signal came while the command waited."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StopSignals:
    """
    The stop signals of one command run.  Handlers only note the signal and hand it to the
    reactor thread, where L{received} does the rest.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.signum: int | None = None
        self._arrived: int | None = None  # set in the handler itself, before the reactor knows
        self._first: list[Deferred[int]] = []
        self._next: list[Deferred[int]] = []
        self._observers: list[Callable[[int], object]] = []

    def install(self) -> None:
        """Take over the stop signals (again after the reactor installed its own)."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self._arrived is None:
            self._arrived = signum
        self._reactor.callFromThread(self.received, signum)

    @property
    def asked(self) -> bool:
        """Whether a stop signal has arrived (even one the reactor has not handled yet)."""
        return self.signum is not None or self._arrived is not None

    @property
    def exit_status(self) -> int | None:
        """128 + the first signal's number, as shells report a death by signal."""
        signum = self.signum if self.signum is not None else self._arrived
        return None if signum is None else 128 + signum

    def received(self, signum: int) -> None:
        """A stop signal arrived (called on the reactor thread)."""
        # Who waits now: a clean-up that starts while this signal is handed out waits for the
        # next one, not this.
        later, self._next = self._next, []
        observers = list(self._observers)
        if self.signum is None:
            self.signum = signum
            self._arrived = self._arrived or signum
            first, self._first = self._first, []
            for d in first:
                d.callback(signum)
        for d in later:
            d.callback(signum)
        for observer in observers:
            observer(signum)

    def every(self, observer: Callable[[int], object]) -> None:
        """Call C{observer(signum)} for each stop signal from now on."""
        self._observers.append(observer)

    def requested(self) -> Deferred[int]:
        """Fires with the first stop signal's number (at once if one came already)."""
        d: Deferred[int] = Deferred(lambda d: self._forget(self._first, d))
        if self.signum is not None:
            d.callback(self.signum)
        else:
            self._first.append(d)
        return d

    def next(self) -> Deferred[int]:
        """Fires with the number of the next stop signal."""
        d: Deferred[int] = Deferred(lambda d: self._forget(self._next, d))
        self._next.append(d)
        return d

    @staticmethod
    def _forget(waiting: list[Deferred[int]], d: Deferred[int]) -> None:
        if d in waiting:
            waiting.remove(d)

    async def race(self, work: Deferred[T]) -> T:
        """
        The result of C{work}, unless a stop signal comes first: then C{work} is cancelled and
        L{Interrupted} raised.
        """
        if self.signum is not None:
            work.addErrback(lambda _: None)  # its CancelledError is expected, not news
            work.cancel()
            raise Interrupted(self.signum)
        return await _first_of(work, self.requested())

    async def bounded(self, work: Deferred[Any], seconds: float = CLEANUP_BUDGET) -> bool:
        """
        Wait for clean-up C{work} for at most C{seconds}, or until another stop signal; then
        cancel it.  Returns whether it finished in time without failing.
        """
        timer: Deferred[None] = Deferred()
        call = self._reactor.callLater(seconds, timer.callback, None)
        outcome = Deferred.fromCoroutine(_settled(work))
        try:
            finished = await _first_of(outcome, timer, self.next())
        except Interrupted:
            finished = False
        finally:
            if call.active():
                call.cancel()
        if not outcome.called:
            work.cancel()
        return finished is True


async def _settled(work: Deferred[Any]) -> bool:
    try:
        await work
    except Exception:
        return False
    return True


async def _first_of(work: Deferred[T], *stops: Deferred[Any]) -> T:
    """
    C{work}'s result or failure, or L{Interrupted} when one of C{stops} fires first with a signal
    number (a C{None} stop means a timeout: C{None} is returned).  The losers are cancelled.
    """
    done: Deferred[tuple[int, Any]] = Deferred()

    def settle(index: int) -> Callable[[Any], None]:
        def settled(result: Any) -> None:
            if not done.called:
                done.callback((index, result))
            # A loser's outcome (mostly CancelledError) is consumed here.
        return settled

    work.addBoth(settle(0))
    for position, stop in enumerate(stops, start=1):
        stop.addBoth(settle(position))
    index, result = await done
    for position, stop in enumerate(stops, start=1):
        if position != index:
            stop.cancel()
    if index != 0:
        work.cancel()
        if result is None:
            return None  # type: ignore[return-value]
        raise Interrupted(result)
    if isinstance(result, Failure):
        result.raiseException()
    return result  # type: ignore[no-any-return]
