"""
L{PCPMapper}: PCP (RFC 6887) behind L{IPortMapper}.
"""

from __future__ import annotations

import random
from typing import Any, Callable
from weakref import WeakSet

from attrs import evolve
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._errors import NotAuthorized

from .._pcp.client import PCPClient
from .._pcp.schedule import PCPSchedule, renewal_delay
from .._results import ExternalAddress, Mapping
from .._spec import Gateway, MappingSpec
from .interface import IPortMapper

#: The service's PCP requests give up after this long (RFC 6887 lets them retransmit forever;
#: a keeper needs an end to tell a silent gateway), as NAT-PMP's do after about 128 s.
GIVE_UP_AFTER = 128.0
#: Deletes give up sooner, as NAT-PMP's (R17), and start retransmitting sooner than RFC 6887's
#: 3 s (after 0.5 s, doubling): a stop under packet loss must not run out of time with
#: mappings left on the router.
DELETE_GIVE_UP_AFTER = 7.0
DELETE_FIRST_WAIT = 0.5
DELETE_MAX_WAIT = 1.0
#: Requests in flight at once: a renewal lost under loss does not hold up the others.
WINDOW = 8

log = Logger(namespace="txnatpmp._mapper")
#: The clients whose router was found refusing to delete renewed pinholes (said once each).
_refusing: WeakSet[PCPClient] = WeakSet()


@implementer(IPortMapper)
class PCPMapper:
    """
    Maps through a L{PCPClient}: each mapping keeps its nonce for renewals, re-creation and
    delete (P22, P38); renewals at the points RFC 6887 section 11.2.1 gives (P27).
    """

    method = "pcp"
    reports_address = True  #: every MAP answer carries the external address (P25)

    def __init__(self, client: PCPClient, give_up_after: float = GIVE_UP_AFTER,
                 gateway: Gateway | None = None) -> None:
        """
        @param gateway: The gateway as its users name it (a link-local IPv6 router with its
            C{%zone}); the client's server by default.
        """
        self.client = client
        client.window = WINDOW  # it speaks PCP: answers name their requests (P41)
        self.gateway = (gateway if gateway is not None
                        else Gateway(client.host, client.server.port))
        self._give_up_after = give_up_after

    def __repr__(self) -> str:
        return f"<PCPMapper for {self.gateway}>"

    @property
    def last_heard(self) -> float | None:
        return self.client.last_heard

    @property
    def silence_after(self) -> float:
        return self._give_up_after

    def _schedule(self, within: float | None, limit: float | None = None,
                  first_wait: float | None = None) -> PCPSchedule:
        duration = self._give_up_after if limit is None else limit
        if within is not None:
            duration = min(duration, max(within, 0.001))
        schedule = evolve(self.client.schedule, max_duration=duration)
        if first_wait is None:
            return schedule
        return evolve(schedule, initial=first_wait, maximum=max(first_wait, DELETE_MAX_WAIT))

    def map(self, spec: MappingSpec, lifetime: int, previous: Mapping | None = None,
            within: float | None = None) -> Deferred[Mapping]:
        if previous is not None and previous.method == "pcp" and previous.nonce is not None:
            # The same MAP as a renewal: its nonce, suggesting its port and address (P38).
            return self.client.renew(previous, lifetime, schedule=self._schedule(within))
        suggested = previous.external_port if previous is not None else spec.external_port
        return self.client.map_port(spec.protocol, spec.internal_port, suggested, lifetime,
                                    schedule=self._schedule(within))

    def renew(self, mapping: Mapping, lifetime: int,
              within: float | None = None) -> Deferred[Mapping]:
        return self.client.renew(mapping, lifetime, schedule=self._schedule(within))

    def delete(self, spec: MappingSpec, mapping: Mapping | None = None,
               within: float | None = None, *,
               schedule: PCPSchedule | None = None) -> Deferred[Any]:
        """
        Delete with the mapping's nonce (P29).  A renewed IPv6 pinhole whose delete the router
        refuses is shortened instead (L{_shorten_refused}); the result is then the mapping as
        shortened.

        @param schedule: Retransmissions instead of the service's delete schedule.
        """
        if mapping is None or mapping.method != "pcp" or mapping.nonce is None:
            nonce = self.client.nonce_for(spec.protocol, spec.internal_port)
            if nonce is None:
                return succeed(None)  # never asked for through PCP: nothing to delete here
            mapping = Mapping(spec.protocol, spec.internal_port, 0, 0, 0, "pcp", nonce=nonce)
        if schedule is None:
            schedule = self._schedule(within, DELETE_GIVE_UP_AFTER, DELETE_FIRST_WAIT)
        deleted = self.client.unmap_port(mapping, schedule=schedule)
        if self.client.family == 6 and mapping.external_port:
            deleted.addErrback(self._shorten_refused, mapping, schedule)
        return deleted

    def _shorten_refused(self, failure: Failure, mapping: Mapping,
                         schedule: PCPSchedule) -> Deferred[Mapping] | Failure:
        """
        miniupnpd before 2.3.8 forgets an IPv6 pinhole's nonce when it renews it (its nftables
        backend rewrites the rule without the description), then refuses every delete with
        NOT_AUTHORIZED.  The pinhole is ours (C{mapping} is what this client was granted, and a
        pinhole is this host's address and port: another program would have to listen on our
        port to want it), so the next best thing: renew it for 1 s (an ordinary renewal, RFC
        6887 section 11.2.1), which the router clamps to its shortest lifetime and then
        removes.  Fires with the mapping as shortened, which the client no longer lists.
        """
        if not isinstance(failure.value, NotAuthorized):
            return failure
        shortened = self.client.renew(mapping, 1, schedule=schedule)

        def said(left: Mapping) -> Mapping:
            self.client.forget(mapping.protocol, mapping.internal_port)  # no longer kept
            if self.client not in _refusing:  # said once per router; each pinhole's end is
                _refusing.add(self.client)    # the caller's to tell
                log.warn("IPv6 router {router} refuses to delete renewed pinholes (as "
                         "miniupnpd before 2.3.8 does): shortening each to its shortest "
                         "lifetime ({lifetime} s) instead", router=self.gateway.host,
                         lifetime=left.lifetime)
            return left

        def failed(_: Failure) -> Failure:
            return failure  # the refusal is what the caller needs to hear

        return shortened.addCallbacks(said, failed)

    def external_address(self) -> Deferred[ExternalAddress]:
        """P31: PCP has no address request; a mapping's answer carries the address.  Without
        one, nothing is known (the command maps a port it owns for a moment instead)."""
        for mapping in self.client.mappings:
            if mapping.external_address:
                return succeed(ExternalAddress(mapping.external_address, mapping.epoch))
        return succeed(ExternalAddress("0.0.0.0", self.client.epoch.last_epoch or 0))

    def probe(self) -> Deferred[Any]:
        """A solicited ANNOUNCE (P33): is the server there, and its epoch."""
        return self.client.announce(schedule=self._schedule(None))

    def renewal_times(self, lifetime: float, rng: random.Random) -> list[float]:
        times: list[float] = []
        attempt = 0
        while True:
            at = renewal_delay(lifetime, attempt, rng, times[-1] if times else None)
            if at is None:
                return times
            times.append(at)
            attempt += 1

    def observe_announcement(self, epoch: int) -> None:
        self.client.observe_announce(epoch)

    def add_state_lost_observer(self, observer: Callable[[int, float], None]) -> None:
        self.client.epoch.add_observer(observer)

    def remove_state_lost_observer(self, observer: Callable[[int, float], None]) -> None:
        self.client.epoch.remove_observer(observer)
