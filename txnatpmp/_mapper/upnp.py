"""
L{UPnPMapper}: UPnP-IGD behind L{IPortMapper}.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorMulticast
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._errors import GatewayTimeout, IGDUnreachable, ResultError
from .._results import ExternalAddress, Mapping
from .._spec import Gateway, MappingSpec
from .._upnp.client import UPnPClient
from .interface import IPortMapper

#: A request the service sends without a deadline of its own gives up after this long: an
#: HTTP exchange (3 s), a new discovery when the old URL is refused (3.5 s) and one more
#: exchange fit well within it.
GIVE_UP_AFTER = 15.0
#: Seconds of hearing nothing from the device after which an unanswered request means it is
#: gone (more than one request's own limit, so one slow exchange is not taken for silence).
SILENCE_AFTER = 20.0

StateLostObserver = Callable[[int, float], None]

log = Logger(namespace="txnatpmp._mapper")


@implementer(IPortMapper)
class UPnPMapper:
    """
    Maps through a L{UPnPClient}: one SOAP exchange per request, two per renewal (is it still
    there?  then add it again), at half the lease (a router that ignores leases, or grants only
    permanent ones, is renewed all the same).  A
    restart (new BOOTID, moved description, vanished mapping) is the "state lost" signal; the
    client notices it at the next request, or at once when L{listen_for_restarts} hears the
    router's NOTIFY.  A device that stops answering HTTP fails requests with
    L{txnatpmp.GatewayTimeout}, as a silent NAT-PMP or PCP server does.
    """

    method = "upnp"
    reports_address = True  #: each mapping carries the address the device told at discovery

    def __init__(self, client: UPnPClient, gateway: Gateway | None = None,
                 give_up_after: float = GIVE_UP_AFTER) -> None:
        """
        @param gateway: The gateway as the service names it (the NAT-PMP/PCP port is kept, so
            that announcement listeners and discovery see the same gateway); by default the
            client's host on port 5351.
        """
        self.client = client
        self.gateway = gateway if gateway is not None else Gateway(client.gateway.host)
        self._give_up_after = give_up_after
        self._observers: dict[StateLostObserver, Callable[[str], None]] = {}
        self._notifications: IListeningPort | None = None

    def __repr__(self) -> str:
        return f"<UPnPMapper for {self.gateway.host}>"

    @property
    def last_heard(self) -> float | None:
        return self.client.last_heard

    @property
    def silence_after(self) -> float:
        return SILENCE_AFTER

    # Requests

    def map(self, spec: MappingSpec, lifetime: int, previous: Mapping | None = None,
            within: float | None = None) -> Deferred[Mapping]:
        suggested = previous.external_port if previous is not None else spec.external_port
        return self._bounded(lambda: self.client.map_port(
            spec.protocol, spec.internal_port, suggested, lifetime), within)

    def renew(self, mapping: Mapping, lifetime: int,
              within: float | None = None) -> Deferred[Mapping]:
        """Ask whether the device still holds C{mapping} (a vanished one means it lost its
        state: the observers hear of it, and every mapping is re-created), then add it again."""
        return self._bounded(lambda: Deferred.fromCoroutine(self._renew(mapping, lifetime)),
                             within)

    async def _renew(self, mapping: Mapping, lifetime: int) -> Mapping:
        try:
            await self.client.check(mapping)
        except ResultError as error:  # it cannot say (no such action...): renew all the same
            log.debug("Could not check {mapping}: {error}", mapping=mapping, error=error)
        return await self.client.renew(mapping, lifetime)

    def delete(self, spec: MappingSpec, mapping: Mapping | None = None,
               within: float | None = None) -> Deferred[Any]:
        held = next((m for m in self.client.mappings
                     if (m.protocol, m.internal_port) == (spec.protocol, spec.internal_port)),
                    None)
        if held is None and mapping is not None and mapping.method == "upnp":
            held = mapping
        if held is None or not held.external_port:
            return succeed(None)  # never granted through UPnP: nothing of ours there
        target = held
        return self._bounded(lambda: self.client.unmap_port(target), within)

    def external_address(self) -> Deferred[ExternalAddress]:
        return self._bounded(self.client.get_external_address, None)

    def probe(self) -> Deferred[Any]:
        """One cheap action any IGD answers: GetExternalIPAddress (a restart found on the way
        is reported to the state-lost observers)."""
        return self._bounded(self.client.get_external_address, None)

    def renewal_times(self, lifetime: float, rng: random.Random) -> list[float]:
        return [lifetime / 2]  # then keep trying until the lifetime runs out

    def observe_announcement(self, epoch: int) -> None:
        """UPnP devices send no NAT-PMP or PCP announcements; their NOTIFYs are heard apart."""

    # Restarts

    def add_state_lost_observer(self, observer: StateLostObserver) -> None:
        def restarted(reason: str) -> None:
            observer(0, 0.0)  # UPnP has no epoch: the client logged the reason

        self._observers[observer] = restarted
        self.client.add_restart_observer(restarted)

    def remove_state_lost_observer(self, observer: StateLostObserver) -> None:
        restarted = self._observers.pop(observer, None)
        if restarted is not None:
            self.client.remove_restart_observer(restarted)

    def listen_for_restarts(self) -> None:
        """Hear the router's NOTIFYs (listening only: nothing is sent), where the reactor can."""
        if self._notifications is not None or not IReactorMulticast.providedBy(
                self.client.clock):
            return
        try:
            self._notifications = self.client.listen_for_restarts()
        except (CannotListenError, OSError) as error:
            log.warn("Not listening for UPnP NOTIFYs: {error}", error=error)

    def stopListening(self) -> Deferred[None] | None:
        """Stop hearing NOTIFYs (the shared mapper's last user is gone)."""
        port, self._notifications = self._notifications, None
        if port is None:
            return None
        result: Deferred[None] | None = port.stopListening()
        return result

    # Plumbing

    def _bounded(self, request: Callable[[], Deferred[Any]],
                 within: float | None) -> Deferred[Any]:
        """Run C{request}, giving up (L{GatewayTimeout}) after C{within} seconds at the latest;
        an unreachable device is a timeout too."""
        limit = self._give_up_after if within is None else max(min(within,
                                                                   self._give_up_after), 0.001)
        clock = self.client.clock
        started = clock.seconds()
        d = request()

        def timed_out(result: Any, timeout: float) -> Any:
            if isinstance(result, Failure):
                raise self._timeout(clock.seconds() - started, f"no answer within {limit:g} s")
            return result

        def unreachable(failure: Failure) -> Failure:
            error = failure.value
            if isinstance(error, IGDUnreachable):
                raise self._timeout(clock.seconds() - started, str(error))
            return failure

        d.addTimeout(limit, clock, onTimeoutCancel=timed_out)
        d.addErrback(unreachable)
        return d

    def _timeout(self, waited: float, why: str) -> GatewayTimeout:
        heard = self.client.last_heard
        since = None if heard is None else self.client.clock.seconds() - heard
        error = GatewayTimeout((self.gateway.host, self.client.gateway.port), 1, waited,
                               "UPnP-IGD", last_heard=since)
        error.args = (f"UPnP-IGD at {self.gateway.host}: {why}",)
        return error
