"""
L{MappingKeeper}: one mapping a service keeps, from its first request to its delete.

It creates the mapping, renews it when its protocol says (halfway through each granted lifetime
for NAT-PMP, R15; at RFC 6887's points for PCP, P27) and keeps trying through the rest of that
lifetime when renewals are lost, says so when a lifetime runs out
anyway (C{EXPIRED}) and makes the mapping again, and retries refusals with backoff.  Whether
the gateway as a whole answers is the link's business: a keeper reports what its requests met.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._errors import GatewayTimeout
from .._mapper.shared import Mapper
from .._events import EventKind, MappingEvent
from .._results import Mapping
from .._schedule import RetryBackoff
from .._spec import MappingSpec, address_port


class KeeperHost(Protocol):
    """What a keeper needs from its service."""

    clock: Any
    retry: RetryBackoff
    rng: random.Random

    @property
    def mapper(self) -> Mapper | None: ...

    @property
    def may_send(self) -> bool: ...

    @property
    def external_address(self) -> str | None: ...

    def heard(self) -> None: ...

    def timed_out(self, error: GatewayTimeout) -> bool: ...

    def check_address(self, max_age: float) -> None: ...

    def saw_address(self, address: str | None) -> None: ...

    def tell(self, event: MappingEvent) -> None: ...


class MappingKeeper:
    """
    Keeps C{spec} mapped for C{lifetime} seconds at a time.

    @ivar mapping: The mapping as granted and not yet expired, or C{None}.
    @ivar last: The last mapping ever granted (kept through expiry and reboots: a new grant is
        then a re-creation, and suggests the same external port).
    @ivar unsettled: A create went out whose outcome is unknown (it may exist at the gateway).
    """

    log = Logger(namespace="txnatpmp._service")

    def __init__(self, spec: MappingSpec, lifetime: int, host: KeeperHost) -> None:
        self.spec = spec
        self.lifetime = lifetime
        self._host = host
        self.mapping: Mapping | None = None
        self.last: Mapping | None = None
        self.granted_at = 0.0
        self.expires_at = 0.0
        self.unsettled = False
        self._recreating = False
        self._request: Deferred[Mapping] | None = None
        self._timer: IDelayedCall | None = None  # renewal or retry
        self._renewals: list[float] = []  # when the next renewals are due (clock times)
        self._expiry: IDelayedCall | None = None
        self._failures = 0
        self._waiting: list[Deferred[Mapping]] = []

    # Asked by the service and the link

    def first(self) -> Deferred[Mapping]:
        """A Deferred firing with the next grant, or failing with the next failure."""
        d: Deferred[Mapping] = Deferred()
        self._waiting.append(d)
        return d

    def refresh(self) -> None:
        """Create or renew now, suggesting the external port it has or had (R15, P23).  A
        mapping made with another protocol than the mapper's is made again (P30)."""
        mapper = self._host.mapper
        if self._request is not None or mapper is None or not self._host.may_send:
            return
        self._cancel_timer()
        renewing = self.mapping
        now = self._host.clock.seconds()
        while self._renewals and self._renewals[0] <= now:  # points passed: the next one
            self._renewals.pop(0)
        self.unsettled = True
        if renewing is not None and renewing.method == mapper.method:
            due = self._renewals[0] if self._renewals else self.expires_at
            request = mapper.renew(renewing, self.lifetime, within=due - now)
        else:
            request = mapper.map(self.spec, self.lifetime, previous=self.mapping or self.last)
        self._request = request
        request.addCallbacks(self._granted, self._failed)
        if renewing is not None:  # after the renewal in the queue: the address can wait
            self._host.check_address(renewing.lifetime / 2)

    def recreate(self) -> None:
        """The gateway lost its state (R19): make the mapping again."""
        if self.mapping is not None or self.last is not None:
            self._recreating = True
        self.pause()
        self.refresh()

    def pause(self) -> None:
        """Stop sending: cancel the request in flight and the renewal or retry timer.  The expiry
        timer runs on: a lifetime runs out whatever the link's state."""
        self._cancel_timer()
        request, self._request = self._request, None
        if request is not None:
            request.cancel()

    def stop(self) -> None:
        """Pause and forget the expiry too: the service is stopping or dropped this mapping."""
        self.pause()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None

    def lose(self) -> None:
        """The gateway lost its state: the mapping is gone there (its expiry is moot)."""
        self.stop()
        self.mapping = None

    def fail_waiting(self, error: BaseException) -> None:
        """Fail the Deferreds of callers waiting for the first grant."""
        self._settle(error)

    @property
    def needs_delete(self) -> bool:
        """Whether the gateway may hold this mapping."""
        return self.mapping is not None or self.unsettled

    def forget(self) -> Mapping | None:
        """After a delete: nothing is held any more.  Returns what was."""
        previous = self.mapping or self.last
        self.mapping = None
        self.unsettled = False
        return previous

    # Outcomes

    def _granted(self, mapping: Mapping) -> None:
        self._request = None
        self._failures = 0
        self.unsettled = False
        self._host.heard()
        previous = self.mapping or self.last
        if previous is None:
            kind = EventKind.MAPPED
        elif previous.external_port != mapping.external_port:
            kind = EventKind.PORT_CHANGED
        elif self.mapping is None or self._recreating:
            kind = EventKind.RECREATED
        else:
            kind = EventKind.RENEWED
        self._recreating = False
        self.mapping = self.last = mapping
        self._host.saw_address(mapping.external_address)
        now = self._host.clock.seconds()
        self.granted_at, self.expires_at = now, now + mapping.lifetime
        self._cancel_timer()
        mapper = self._host.mapper
        times = mapper.renewal_times(mapping.lifetime, self._host.rng) if mapper else []
        self._renewals = [now + t for t in times] or [now + mapping.lifetime / 2]
        self._timer = self._host.clock.callLater(self._renewals[0] - now, self._renew)
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = self._host.clock.callLater(mapping.lifetime, self._expired)
        self._report(kind, mapping, previous)
        self._settle(mapping)

    def _report(self, kind: EventKind, mapping: Mapping, previous: Mapping | None) -> None:
        spec = self.spec
        where = address_port(mapping.external_address or self._host.external_address,
                             mapping.external_port)
        fields = dict(spec=spec, where=where, lifetime=mapping.lifetime)
        if kind is EventKind.MAPPED:
            self.log.info("{spec.protocol} {spec.internal_port} is reachable at {where} for "
                          "{lifetime} s", **fields)
        elif kind is EventKind.PORT_CHANGED:
            assert previous is not None
            self.log.warn("{spec.protocol} {spec.internal_port} moved from external port {old} "
                          "to {where} for {lifetime} s", old=previous.external_port, **fields)
        elif kind is EventKind.RECREATED:
            self.log.info("Re-created {spec.protocol} {spec.internal_port} at {where} for "
                          "{lifetime} s", **fields)
        else:
            self.log.info("Renewed {spec.protocol} {spec.internal_port} at {where} for "
                          "{lifetime} s", **fields)
        self._host.tell(MappingEvent(kind, spec, mapping, previous, self._host.external_address))

    def _failed(self, failure: Failure) -> None:
        self._request = None
        error = failure.value
        assert error is not None
        if isinstance(error, CancelledError):
            return
        if isinstance(error, GatewayTimeout):
            if not self._host.timed_out(error):
                # Only this request was unlucky (the gateway answers others): keep trying, for
                # a renewal through the rest of its lifetime, at its next renewal point if the
                # protocol has one (P27), else at once: its schedule spaced the attempts.
                now = self._host.clock.seconds()
                later = self._renewals[0] - now if self._renewals else 0.0
                if later > 0:
                    self._timer = self._host.clock.callLater(later, self._renew)
                else:
                    self.refresh()
            return  # otherwise the gateway is silent: the link pauses every keeper and reports
        self._host.heard()
        self._failures += 1
        delay = self._host.retry.delay(self._failures)
        self.log.warn("Could not map {spec.protocol} {spec.internal_port}: {error}; trying again "
                      "in {delay:g} s", spec=self.spec, error=failure.getErrorMessage(),
                      delay=delay)
        self._timer = self._host.clock.callLater(delay, self._retry)
        self._host.tell(MappingEvent(EventKind.FAILED, self.spec, previous=self.mapping,
                                     external_address=self._host.external_address, error=error))
        self._settle(error)

    def _renew(self) -> None:
        self._timer = None
        self.refresh()

    def _retry(self) -> None:
        self._timer = None
        self.refresh()

    def _expired(self) -> None:
        """The granted lifetime ran out without a successful renewal."""
        self._expiry = None
        previous, self.mapping = self.mapping, None
        if previous is None:
            return
        self.log.warn("The lifetime of {spec.protocol} {spec.internal_port} ran out before it "
                      "could be renewed: re-creating it", spec=self.spec)
        self._host.tell(MappingEvent(EventKind.EXPIRED, self.spec, previous=previous,
                                     external_address=self._host.external_address))
        if self._request is None:
            self.refresh()

    # Helpers

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _settle(self, outcome: Mapping | BaseException) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(outcome, Mapping):
                d.callback(outcome)
            else:
                d.errback(outcome)
