"""
PCP's retransmission timer (RFC 6887 section 8.1.1, requirement P39).
"""

from __future__ import annotations

import random

from attrs import field, frozen

#: RAND in section 8.1.1: each timeout is stretched or shrunk by up to a tenth.
JITTER = 0.1


def _positive(instance: object, attribute: object, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{getattr(attribute, 'name', 'value')} must be positive, not {value!r}")


def _not_negative(instance: object, attribute: object, value: float) -> None:
    if not value >= 0:
        raise ValueError(
            f"{getattr(attribute, 'name', 'value')} must be 0 (no limit) or more, not {value!r}")


@frozen
class PCPSchedule:
    """
    Wait C{initial} seconds (IRT) after the first transmission, then double the wait up to
    C{maximum} (MRT), each wait stretched by a fresh random factor in [0.9, 1.1].  Give up after
    C{max_count} transmissions (MRC) or C{max_duration} seconds (MRD); 0 means no limit, the
    RFC's default: retransmit until answered or cancelled.
    """

    initial: float = field(default=3.0, validator=_positive)
    maximum: float = field(default=1024.0, validator=_positive)
    max_count: int = field(default=0, validator=_not_negative)
    max_duration: float = field(default=0, validator=_not_negative)

    def next_wait(self, previous: float | None, rng: random.Random) -> float:
        """
        RT for the next wait: C{(1+RAND)*IRT} first, then C{(1+RAND)*min(2*previous, MRT)}.
        """
        base = self.initial if previous is None else min(2 * previous, self.maximum)
        return (1 + rng.uniform(-JITTER, JITTER)) * base

    def cut(self, wait: float, elapsed: float) -> float:
        """C{wait}, cut short where C{max_duration} ends (C{elapsed}: since the first send)."""
        if self.max_duration:
            return max(0.0, min(wait, self.max_duration - elapsed))
        return wait

    def exhausted(self, sent: int, elapsed: float) -> bool:
        """Whether no transmission may follow C{sent} transmissions over C{elapsed} seconds."""
        if self.max_count and sent >= self.max_count:
            return True
        return bool(self.max_duration) and elapsed >= self.max_duration


#: The RFC's timer: 3 s, doubling to 1024 s, never giving up.
RFC_PCP_SCHEDULE = PCPSchedule()


#: Renewals of one mapping are never closer together than this (RFC 6887 section 11.2.1).
MIN_RENEWAL_GAP = 4.0


def renewal_delay(lifetime: float, attempt: int, rng: random.Random,
                  previous: float | None = None) -> float | None:
    """
    When to send renewal number C{attempt} (from 0) of a mapping granted C{lifetime} seconds
    ago, in seconds after the grant (P27): the first at a random point in 1/2-5/8 of the
    lifetime, then 3/4 to 3/4+1/16, 7/8 to 7/8+1/32, and so on, at least 4 s after
    C{previous} (the last renewal's time).  C{None} once the mapping has run out.
    """
    low = 1 - 2.0 ** -(attempt + 1)
    at = lifetime * (low + rng.uniform(0, 2.0 ** -(attempt + 3)))
    if previous is not None:
        at = max(at, previous + MIN_RENEWAL_GAP)
    return at if at < lifetime else None
