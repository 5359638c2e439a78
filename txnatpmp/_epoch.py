"""
Gateway epoch tracking (RFC 6886 section 3.6, requirement R18).

Every packet from a gateway carries its seconds since start of epoch (SSSoE).  A gateway that
reboots, or otherwise loses its mapping state, restarts that count; clients notice because the
value falls behind what the time elapsed since the previous packet predicts.
"""

from __future__ import annotations

from typing import Callable

StateLostObserver = Callable[[int, float], None]

#: A client's clock may run fast: it credits the gateway with 7/8 of its own elapsed time.
ELAPSED_FRACTION = 7 / 8
#: How far below the conservative estimate an epoch may fall before state counts as lost.
TOLERANCE = 2.0


class EpochTracker:
    """
    Compares each SSSoE from one gateway with the previous one, and tells observers when the
    gateway lost its state.

    @param now: The client's clock, in seconds (an C{IReactorTime.seconds}).
    """

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._last: tuple[int, float] | None = None
        self._observers: list[StateLostObserver] = []

    @property
    def last_epoch(self) -> int | None:
        """The SSSoE of the most recent packet, or C{None} before the first."""
        return None if self._last is None else self._last[0]

    def add_observer(self, observer: StateLostObserver) -> None:
        """
        Call C{observer(received_epoch, expected_epoch)} whenever the gateway has lost state.
        """
        self._observers.append(observer)

    def remove_observer(self, observer: StateLostObserver) -> None:
        """Stop calling an observer added with L{add_observer}."""
        self._observers.remove(observer)

    def forget(self) -> None:
        """Start afresh, as after a change of network: the next epoch is taken as it comes."""
        self._last = None

    def expected(self) -> float | None:
        """The lowest SSSoE a gateway that kept its state could send now (before tolerance)."""
        if self._last is None:
            return None
        epoch, seen_at = self._last
        return epoch + (self._now() - seen_at) * ELAPSED_FRACTION

    def observe(self, epoch: int) -> bool:
        """
        Record the SSSoE of a packet just received from the gateway.

        @return: C{True} if it shows the gateway lost its state (observers have been told).
        """
        expected = self.expected()
        self._last = (epoch, self._now())
        if expected is None or epoch >= expected - TOLERANCE:
            return False
        for observer in list(self._observers):
            observer(epoch, expected)
        return True
