"""
The PCP epoch check (RFC 6887 section 8.5, requirement P36).

Every PCP response carries the server's epoch time.  A server that lost its mapping state
restarts it; a client notices because the epoch went back, or moved at a pace that disagrees
with the client's own clock.
"""

from __future__ import annotations

from .._epoch import EpochTracker

#: Seconds of slack either way, and the fraction (1/16) of the elapsed time a clock may drift.
SLACK = 2
DRIFT_DIVISOR = 16


class PCPEpochTracker(EpochTracker):
    """
    Runs section 8.5's check on each epoch from one server and tells observers when it fails.
    The observer API is L{txnatpmp.EpochTracker}'s (C{expected_epoch} is the previous epoch plus
    the time the client saw pass); only the check differs.

    @param now: The client's clock, in seconds (an C{IReactorTime.seconds}).
    """

    def observe(self, epoch: int) -> bool:
        """
        Record the epoch of a response just received from the server.

        @return: C{True} if it shows the server lost its state (observers have been told).
        """
        now = self._now()
        previous, self._last = self._last, (epoch, now)
        if previous is None:
            return False  # the first response is valid
        previous_epoch, previous_time = previous
        client_delta = int(now - previous_time)
        if not _valid(previous_epoch, epoch, client_delta):
            for observer in list(self._observers):
                observer(epoch, previous_epoch + client_delta)
            return True
        return False


def _valid(previous: int, current: int, client_delta: int) -> bool:
    """Section 8.5, in integer arithmetic; C{current + 1 < previous} never wraps (P36)."""
    if current + 1 < previous:
        return False
    server_delta = current - previous
    if client_delta + SLACK < server_delta - server_delta // DRIFT_DIVISOR:
        return False
    return not server_delta + SLACK < client_delta - client_delta // DRIFT_DIVISOR
