"""
When to retransmit a request, and when to give up (RFC 6886 section 3.1, R07 and R17).
"""

from __future__ import annotations

from attrs import field, frozen


def _positive(instance: object, attribute: object, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{getattr(attribute, 'name', 'value')} must be positive, not {value!r}")


def _at_least_one(instance: object, attribute: object, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"attempts must be a whole number of at least 1, not {value!r}")


@frozen
class RetransmitSchedule:
    """
    Send a request up to C{attempts} times; wait C{initial_delay} after the first transmission,
    doubling the wait after each, and give up when the wait after the last one ends.

    The default is the RFC's: 9 transmissions at 0, 0.25, 0.75, ... 63.75 s, giving up at
    127.75 s.
    """

    initial_delay: float = field(default=0.25, validator=_positive)
    attempts: int = field(default=9, validator=_at_least_one)

    def wait_after(self, attempt: int) -> float:
        """Seconds to wait after transmission number C{attempt} (counting from 0)."""
        return float(self.initial_delay * 2**attempt)

    @property
    def total(self) -> float:
        """Seconds from the first transmission until giving up."""
        return float(self.initial_delay * (2**self.attempts - 1))

    def within(self, seconds: float) -> RetransmitSchedule:
        """
        This schedule cut short to give up within C{seconds} (one transmission at least): how a
        renewal keeps to the lifetime it has left.
        """
        attempts = self.attempts
        while attempts > 1 and self.initial_delay * (2**attempts - 1) > seconds:
            attempts -= 1
        return self if attempts == self.attempts else RetransmitSchedule(self.initial_delay, attempts)


#: RFC 6886's schedule, for every request that creates or reads something.
RFC_SCHEDULE = RetransmitSchedule()
#: Deletes give up after two retransmissions (R17): 1.75 s in all.
DELETE_SCHEDULE = RetransmitSchedule(attempts=3)


@frozen
class RetryBackoff:
    """
    How long a L{txnatpmp.MappingService} waits before trying again after a failure: C{initial}
    seconds, doubling with each failure in a row, never more than C{maximum}.  It never gives up.
    """

    initial: float = field(default=2.0, validator=_positive)
    maximum: float = field(default=60.0, validator=_positive)

    def delay(self, failures: int) -> float:
        """Seconds to wait after C{failures} failures in a row (1 or more)."""
        return float(min(self.initial * 2 ** max(failures - 1, 0), self.maximum))
