"""
Deleting every mapping when a service stops: each delete with its own retransmissions, one
after another, within an overall budget.

A delete that goes unanswered under packet loss is tried again after the others, not taken as
proof that the gateway is gone.  Only when two deletes in a row go unanswered, with nothing
heard between them, is the gateway taken for gone: the rest then expire by their lifetime.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from .._errors import GatewayTimeout, NATPMPError
from .._mapper.shared import Mapper
from .keeper import MappingKeeper

#: Seconds a service's stop may spend deleting, by default.
STOP_BUDGET = 10.0
#: Unanswered deletes in a row that mean the gateway is gone.
GONE_AFTER = 2

log = Logger(namespace="txnatpmp._service")


async def delete_all(
    keepers: Iterable[MappingKeeper],
    mapper: Mapper,
    clock: Any,
    budget: float,
    removed: Callable[[MappingKeeper], None],
) -> None:
    """
    Delete each keeper's mapping, calling C{removed(keeper)} for each confirmed delete.
    """
    waiting = deque(keepers)
    if not waiting:
        return
    deadline = clock.seconds() + budget
    unanswered = 0
    while waiting:
        left = deadline - clock.seconds()
        if left <= 0:
            break
        keeper = waiting.popleft()
        try:
            await _within(mapper.delete(keeper.spec, keeper.mapping, within=left), left, clock)
        except GatewayTimeout:
            waiting.append(keeper)  # lost under loss, perhaps: again after the others
            unanswered += 1
            if unanswered >= GONE_AFTER:
                break
            continue
        except CancelledError:
            waiting.append(keeper)
            break
        except NATPMPError as error:
            log.warn("Could not delete {spec.protocol} {spec.internal_port}: {error}",
                     spec=keeper.spec, error=error)
            unanswered = 0
            continue
        unanswered = 0
        removed(keeper)
    if waiting:
        why = "the gateway does not answer" if unanswered >= GONE_AFTER else \
            f"the {budget:g} s allowed for stopping ran out"
        log.warn("Gave up deleting {count} mappings ({why}): they expire by their lifetime",
                 count=len(waiting), why=why)


def _within(request: Deferred[Any], seconds: float, clock: Any) -> Deferred[Any]:
    """C{request}, cancelled if it has not finished after C{seconds}."""
    timer = clock.callLater(seconds, request.cancel)

    def done(result: object) -> object:
        if timer.active():
            timer.cancel()
        return result

    return request.addBoth(done)
