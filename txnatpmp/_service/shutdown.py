"""
Deleting every mapping when a service stops: each delete with its own retransmissions, all
handed to the mapper at once (NAT-PMP's queue sends them one at a time; PCP keeps several in
flight), within an overall budget.

A delete that goes unanswered under packet loss is tried again in the next round, not taken as
proof that the gateway is gone.  Only a gateway that has answered nothing at all since the stop
began, for L{GONE_AFTER} seconds, is taken for gone: the rest then expire by their lifetime.
One that answers some keeps getting deletes until the budget runs out.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._errors import GatewayTimeout
from .._mapper.shared import Mapper
from .keeper import MappingKeeper

#: Seconds a service's stop may spend deleting, by default.
STOP_BUDGET = 10.0
#: Seconds of hearing nothing at all from the gateway since the stop began that mean it is gone
#: (two of NAT-PMP's delete schedules).
GONE_AFTER = 3.5
#: How often a stop checks whether the gateway still answers anything.
WATCH_EVERY = 0.25

log = Logger(namespace="txnatpmp._service")


async def delete_all(
    keepers: Iterable[MappingKeeper],
    mapper: Mapper,
    clock: Any,
    budget: float,
    removed: Callable[[MappingKeeper, object], None],
    which: str = "",
) -> None:
    """
    Delete each keeper's mapping, calling C{removed(keeper, answer)} for each confirmed delete
    (C{answer} is what the mapper's delete fired with).  C{which} says whose they are in the
    log (C{" (IPv6)"}).
    """
    waiting = list(keepers)
    started = clock.seconds()
    deadline = started + budget
    gone = False

    def silent_for() -> float:
        heard = mapper.last_heard
        if heard is not None and heard > started:
            return 0.0  # it answered during the stop: not gone, only lossy
        return float(clock.seconds() - started)

    while waiting and not gone:
        left = deadline - clock.seconds()
        if left <= 0:
            break
        attempts = [_within(mapper.delete(k.spec, k.mapping, within=left), left, clock)
                    for k in waiting]
        watchdog = None

        def watch() -> None:
            nonlocal gone, watchdog
            if silent_for() >= GONE_AFTER:
                gone = True
                for attempt in attempts:
                    attempt.cancel()
            else:
                watchdog = clock.callLater(WATCH_EVERY, watch)

        watchdog = clock.callLater(WATCH_EVERY, watch)
        outcomes = await DeferredList(attempts, consumeErrors=True)
        if watchdog.active():
            watchdog.cancel()
        lost = []
        for keeper, (ok, outcome) in zip(waiting, outcomes):
            if ok:
                removed(keeper, outcome)
            elif isinstance(outcome, Failure) and isinstance(
                    outcome.value, (GatewayTimeout, CancelledError)):
                lost.append(keeper)  # lost under loss, perhaps: again in the next round
            else:
                log.warn("Could not delete {spec.protocol} {spec.internal_port}{which}: {error}",
                         spec=keeper.spec, which=which, error=outcome.getErrorMessage())
        waiting = lost
    if waiting:
        why = "the gateway does not answer" if gone else \
            f"the {budget:g} s allowed for stopping ran out"
        log.warn("Gave up deleting {count} {mappings}{which} ({why}): they expire by their "
                 "lifetime", count=len(waiting), why=why, which=which,
                 mappings="mapping" if len(waiting) == 1 else "mappings")


def _within(request: Deferred[Any], seconds: float, clock: Any) -> Deferred[Any]:
    """C{request}, cancelled if it has not finished after C{seconds}."""
    timer = clock.callLater(seconds, request.cancel)

    def done(result: object) -> object:
        if timer.active():
            timer.cancel()
        return result

    return request.addBoth(done)
