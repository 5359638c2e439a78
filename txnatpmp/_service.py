"""
L{MappingService}: keeps port mappings alive on a NAT-PMP gateway for as long as it runs.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._announce import Announcement, AnnouncementListener, listen_for_announcements
from ._client import NATPMPClient
from ._errors import GatewayTimeout, ResultError
from ._events import EventKind, MappingEvent
from ._gateway import find_gateway
from ._reactor import global_reactor
from ._results import ExternalAddress, Mapping
from ._schedule import RFC_SCHEDULE, RetransmitSchedule, RetryBackoff
from ._spec import MappingSpec, parse_lifetime, parse_spec
from ._wire import ANNOUNCE_GROUP, ANNOUNCE_PORT, SERVER_PORT, ExternalAddressResponse, check_protocol

Observer = Callable[[MappingEvent], object]

#: What a gateway without a WAN link reports as its external address.
NO_ADDRESS = "0.0.0.0"
#: R19: after a gateway loses its state, wait a random time up to this before re-creating.
RECOVERY_JITTER = 5.0


class _Entry:
    """One mapping the service keeps, and where it stands."""

    __slots__ = ("spec", "lifetime", "mapping", "granted_at", "request", "timer", "failures",
                 "waiting")

    def __init__(self, spec: MappingSpec, lifetime: int) -> None:
        self.spec = spec
        self.lifetime = lifetime
        self.mapping: Mapping | None = None
        self.granted_at = 0.0
        self.request: Deferred[Mapping] | None = None
        self.timer: IDelayedCall | None = None
        self.failures = 0
        self.waiting: list[Deferred[Mapping]] = []

    def stop(self) -> None:
        """Cancel the timer and any request in flight."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.request is not None:
            request, self.request = self.request, None
            request.cancel()

    def settle(self, outcome: Mapping | Failure | BaseException) -> None:
        """Fire the Deferreds of L{MappingService.add_mapping} callers still waiting."""
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            if isinstance(outcome, Mapping):
                d.callback(outcome)
            else:
                d.errback(outcome)


class MappingService(Service):
    """
    Keeps mappings on a NAT-PMP gateway: creates them (one request at a time), renews each
    halfway through its granted lifetime suggesting the same external port (R15), re-creates them
    after the gateway loses its state (R18, R19), follows announcements (R21-R23), retries
    failures with backoff for as long as it runs, and deletes them all when stopped.

    Observers added with L{add_observer} receive a L{MappingEvent} for each change; the same
    story goes to the log in plain words.
    """

    log = Logger()

    def __init__(
        self,
        gateway: str | None = None,
        gateway_port: int = SERVER_PORT,
        reactor: Any = None,
        *,
        lifetime: int = 7200,
        status_file: str | None = None,
        announcements: bool = True,
        announce_port: int = ANNOUNCE_PORT,
        announce_group: str | None = ANNOUNCE_GROUP,
        announce_interface: str = "",
        schedule: RetransmitSchedule = RFC_SCHEDULE,
        retry: RetryBackoff = RetryBackoff(),
        rng: random.Random | None = None,
        gateway_finder: Callable[[Any], Deferred[str]] = find_gateway,
    ) -> None:
        """
        @param gateway: The gateway's IPv4 address; found with L{find_gateway} on start if
            C{None}.
        @param reactor: Provides time, UDP and multicast; the global reactor by default.
        @param lifetime: Lifetime requested for mappings added without one.
        @param status_file: If given, the current mappings are written there as JSON, atomically,
            after every change.
        @param announcements: Listen for gateway announcements on C{announce_group}:
            C{announce_port}.  With C{announce_group=None}, bind C{announce_interface}:
            C{announce_port} instead (for gateway doubles that announce by unicast).
        @param schedule: Retransmissions for each request (the RFC's by default).
        @param retry: Waits between attempts after a failure.
        @param gateway_finder: How to find the gateway when none is given; asked again whenever
            the gateway falls silent, so the service follows a change of network.
        """
        self._gateway = gateway
        self._gateway_port = gateway_port
        self._finder = gateway_finder if gateway is None else None
        self._reactor = reactor if reactor is not None else global_reactor()
        self.lifetime = parse_lifetime(lifetime)
        self.status_file = status_file
        self._announcements = announcements
        self._announce_port = announce_port
        self._announce_group = announce_group
        self._announce_interface = announce_interface
        self._schedule = schedule
        self._retry = retry
        self._random = rng or random.Random()
        self._entries: dict[tuple[str, int], _Entry] = {}
        self._observers: list[Observer] = []
        self.client: NATPMPClient | None = None
        self.external_address: str | None = None
        self._udp_port: IListeningPort | None = None
        self._announce_listener: IListeningPort | None = None
        self._starting: Deferred[Any] | None = None
        self._timer: IDelayedCall | None = None  # the service-wide wait, for _pending
        self._pending: str | None = None  # "restart", "probe" or "recovery"
        self._probing: Deferred[Any] | None = None  # a probe in flight
        self._unreachable_failures = 0

    # Public API

    @property
    def gateway(self) -> str | None:
        """The gateway's address, once known."""
        return self._gateway

    @property
    def announcement_port(self) -> int | None:
        """The port announcements are heard on, once listening."""
        if self._announce_listener is None:
            return None
        return int(self._announce_listener.getHost().port)  # type: ignore[attr-defined]

    @property
    def specs(self) -> list[MappingSpec]:
        """The mappings the service keeps, whether the gateway grants them now or not."""
        return [e.spec for e in self._entries.values()]

    @property
    def mappings(self) -> list[Mapping]:
        """The mappings the gateway currently grants."""
        return [e.mapping for e in self._entries.values() if e.mapping is not None]

    def mapping_for(self, spec: MappingSpec) -> Mapping | None:
        """The mapping currently granted for C{spec}, if any."""
        entry = self._entries.get(spec.key)
        return entry.mapping if entry is not None else None

    def add_observer(self, observer: Observer) -> None:
        """Call C{observer(event)} with every L{MappingEvent}."""
        self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        self._observers.remove(observer)

    def add_mapping(
        self,
        spec: str | MappingSpec,
        internal_port: int | None = None,
        external_port: int = 0,
        lifetime: int | None = None,
    ) -> Deferred[Mapping]:
        """
        Keep a mapping: C{add_mapping("tcp:60010")}, C{add_mapping("tcp", 60010)}, or a
        L{MappingSpec}.  Works before or after the service starts.

        @return: A Deferred firing with the first L{Mapping}, or failing with the first error
            (the service goes on trying).
        @raise ValueError: for a bad spec, or one the service already keeps.
        """
        wanted = _to_spec(spec, internal_port, external_port)
        if wanted.key in self._entries:
            raise ValueError(f"{wanted.protocol} {wanted.internal_port} is already kept")
        entry = _Entry(wanted, parse_lifetime(self.lifetime if lifetime is None else lifetime))
        self._entries[wanted.key] = entry
        first: Deferred[Mapping] = Deferred()
        entry.waiting.append(first)
        if self.client is not None and self._pending is None:
            self._refresh(entry)
        return first

    def remove_mapping(self, spec: str | MappingSpec, internal_port: int | None = None) -> Deferred[None]:
        """
        Stop keeping a mapping and delete it from the gateway.

        @raise ValueError: if the service does not keep it.
        """
        wanted = _to_spec(spec, internal_port, 0)
        entry = self._entries.pop(wanted.key, None)
        if entry is None:
            raise ValueError(f"{wanted.protocol} {wanted.internal_port} is not kept")
        return self._delete(entry)

    # Service

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._starting = Deferred.fromCoroutine(self._start())
        self._starting.addErrback(self._start_failed)

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._starting is not None:
            self._starting.cancel()
        self._cancel_timer()
        self._stop_probing()
        self._stop_announcement_listener()
        deletes = self._delete_all()
        deletes.addCallback(lambda _: self._close_client())
        return deletes

    async def _start(self) -> None:
        if self._finder is not None:
            self._gateway = await self._finder(self._reactor)
            self.log.info("Found gateway {gateway}", gateway=self._gateway)
        self._starting = None
        assert self._gateway is not None
        self._connect(self._gateway)

    def _connect(self, gateway: str) -> None:
        """Talk to C{gateway} from now on, and (re-)create every mapping there."""
        client = NATPMPClient(gateway, self._gateway_port, self._reactor, self._schedule)
        client.epoch.add_observer(self._state_lost)
        self._udp_port = self._reactor.listenUDP(0, client)
        self.client = client
        if self._announcements:
            self._listen_for_announcements(gateway)
        self._fetch_address()
        for entry in list(self._entries.values()):
            self._refresh(entry)

    def _disconnect(self) -> None:
        self._stop_announcement_listener()
        self._close_client()

    def _stop_announcement_listener(self) -> None:
        if self._announce_listener is not None:
            self._announce_listener.stopListening()
            self._announce_listener = None

    def _start_failed(self, failure: Failure) -> None:
        if isinstance(failure.value, CancelledError):
            return
        self._back_off("restart", self._restart, "Cannot start: {error}; trying again", failure)
        for entry in self._entries.values():
            entry.settle(failure)

    def _restart(self) -> None:
        self._starting = Deferred.fromCoroutine(self._start())
        self._starting.addErrback(self._start_failed)

    def _listen_for_announcements(self, gateway: str) -> None:
        listener = AnnouncementListener(gateway, self._announced)
        try:
            self._announce_listener = listen_for_announcements(
                listener, self._reactor, self._announce_port, self._announce_group,
                self._announce_interface,
            )
        except CannotListenError as error:
            self.log.warn("Not listening for gateway announcements: {error}", error=error)

    def _close_client(self) -> None:
        if self._udp_port is not None:
            self._udp_port.stopListening()
            self._udp_port = None
        self.client = None

    # Keeping mappings

    def _refresh(self, entry: _Entry) -> None:
        """Create or renew C{entry}'s mapping, suggesting the external port it has (R15)."""
        assert self.client is not None
        if entry.request is not None:
            return
        entry.stop()
        suggested = entry.mapping.external_port if entry.mapping else entry.spec.external_port
        request = self.client.map_port(
            entry.spec.protocol, entry.spec.internal_port, suggested, entry.lifetime
        )
        entry.request = request
        request.addCallbacks(
            self._mapped, self._map_failed, callbackArgs=(entry,), errbackArgs=(entry,)
        )

    def _mapped(self, mapping: Mapping, entry: _Entry) -> None:
        if self.external_address is None and entry.mapping is not None:
            self._fetch_address()  # none known yet (no WAN link before?): ask again
        entry.request = None
        entry.failures = 0
        self._unreachable_failures = 0
        previous, entry.mapping = entry.mapping, mapping
        entry.granted_at = self._reactor.seconds()
        where = f"{self.external_address or '?'}:{mapping.external_port}"
        if previous is None:
            kind = EventKind.MAPPED
            self.log.info("{spec.protocol} {spec.internal_port} is reachable at {where} for "
                          "{lifetime} s", spec=entry.spec, where=where, lifetime=mapping.lifetime)
        elif previous.external_port != mapping.external_port:
            kind = EventKind.PORT_CHANGED
            self.log.warn("{spec.protocol} {spec.internal_port} moved from external port {old} "
                          "to {where} for {lifetime} s", spec=entry.spec, where=where,
                          old=previous.external_port, lifetime=mapping.lifetime)
        else:
            kind = EventKind.RENEWED
            self.log.info("Renewed {spec.protocol} {spec.internal_port} at {where} for "
                          "{lifetime} s", spec=entry.spec, where=where, lifetime=mapping.lifetime)
        entry.timer = self._reactor.callLater(mapping.lifetime / 2, self._renew, entry)
        self._tell(MappingEvent(kind, entry.spec, mapping, previous, self.external_address))
        entry.settle(mapping)
        self._write_status()

    def _renew(self, entry: _Entry) -> None:
        entry.timer = None
        self._refresh(entry)

    def _map_failed(self, failure: Failure, entry: _Entry) -> None:
        entry.request = None
        if isinstance(failure.value, CancelledError):
            return
        if isinstance(failure.value, GatewayTimeout):
            self._gateway_unreachable(failure)
            return
        entry.failures += 1
        delay = self._retry.delay(entry.failures)
        self.log.warn("Could not map {spec.protocol} {spec.internal_port}: {error}; trying again "
                      "in {delay:g} s", spec=entry.spec, error=failure.getErrorMessage(),
                      delay=delay)
        entry.timer = self._reactor.callLater(delay, self._renew, entry)
        self._tell(MappingEvent(EventKind.FAILED, entry.spec, previous=entry.mapping,
                                external_address=self.external_address, error=failure.value))
        entry.settle(failure)

    # The gateway as a whole

    def _fetch_address(self) -> None:
        assert self.client is not None
        self.client.get_external_address().addCallbacks(self._got_address, self._address_failed)

    def _got_address(self, address: ExternalAddress) -> None:
        self._set_address(address.address)

    def _address_failed(self, failure: Failure) -> None:
        if isinstance(failure.value, CancelledError):
            return
        if isinstance(failure.value, GatewayTimeout):
            self._gateway_unreachable(failure)
        else:
            self.log.warn("Could not learn the external address: {error}",
                          error=failure.getErrorMessage())

    def _set_address(self, address: str) -> None:
        if address == NO_ADDRESS:
            if self.external_address is not None:
                self.log.warn("The gateway has no external address now (no WAN link?)")
            self.external_address = None
            return
        previous, self.external_address = self.external_address, address
        if previous is None or previous == address:
            return
        self.log.warn("External address changed from {previous} to {address}",
                      previous=previous, address=address)
        self._tell(MappingEvent(EventKind.ADDRESS_CHANGED, external_address=address))
        self._write_status()

    def _gateway_unreachable(self, failure: Failure) -> None:
        """Nobody answers: stop every request and probe with one until the gateway is back."""
        if self._pending is not None or self.client is None:
            return
        self._back_off("probe", self._probe, "{error}; asking again", failure)
        entries = list(self._entries.values())
        for entry in entries:
            entry.stop()
        for entry in entries:  # observers and callers last: they may stop the service
            self._tell(MappingEvent(EventKind.FAILED, entry.spec, previous=entry.mapping,
                                    external_address=self.external_address, error=failure.value))
            entry.settle(failure)

    def _probe(self) -> None:
        """One request stands for all while the gateway is silent.  A gateway the service found
        itself is looked for again first: the network may have changed (R20)."""
        if self._finder is None:
            self._send_probe()
            return
        finding = self._probing = self._finder(self._reactor)
        finding.addCallbacks(self._found, self._not_found)

    def _found(self, gateway: str) -> None:
        self._probing = None
        if gateway == self._gateway:
            self._send_probe()
            return
        self.log.warn("The default gateway is now {new} (was {old}): moving {count} mappings "
                      "there", new=gateway, old=self._gateway, count=len(self._entries))
        self._disconnect()
        self._gateway = gateway
        self.external_address = None
        self._unreachable_failures = 0
        self._connect(gateway)

    def _not_found(self, failure: Failure) -> None:
        self._probing = None
        if isinstance(failure.value, CancelledError):
            return
        self._back_off("probe", self._probe, "{error}; looking again", failure)

    def _send_probe(self) -> None:
        assert self.client is not None
        probing = self._probing = self.client.get_external_address()
        probing.addCallbacks(self._probe_answered, self._probe_failed)

    def _stop_probing(self) -> None:
        probing, self._probing = self._probing, None
        if probing is not None:
            probing.cancel()

    def _probe_answered(self, address: ExternalAddress) -> None:
        self._probing = None
        self._set_address(address.address)
        self._gateway_back()

    def _probe_failed(self, failure: Failure) -> None:
        self._probing = None
        if isinstance(failure.value, GatewayTimeout):
            self._gateway_unreachable(failure)
        elif isinstance(failure.value, ResultError):
            self._gateway_back()  # an error code: somebody is there

    def _gateway_back(self) -> None:
        if self.client is None or self._pending is not None:
            return
        self._unreachable_failures = 0
        self.log.info("Gateway {gateway} answers again: refreshing {count} mappings",
                      gateway=self._gateway, count=len(self._entries))
        for entry in list(self._entries.values()):
            self._refresh(entry)

    def _state_lost(self, received: int, expected: float) -> None:
        """R18/R19: the gateway rebooted.  Re-create everything after a random 0-5 s."""
        delay = self._random.uniform(0, RECOVERY_JITTER)
        self.log.warn("Gateway {gateway} lost its mappings (epoch {received}, expected at least "
                      "{expected:.0f}): re-creating {count} in {delay:.1f} s",
                      gateway=self._gateway, received=received, expected=expected,
                      count=len(self._entries), delay=delay)
        self._tell(MappingEvent(EventKind.STATE_LOST, external_address=self.external_address))
        if self._pending == "recovery":
            return
        for entry in self._entries.values():
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
        self._wait("recovery", delay, self._recover)

    def _recover(self) -> None:
        self._fetch_address()
        for entry in list(self._entries.values()):
            self._refresh(entry)

    def _announced(self, announcement: Announcement) -> None:
        """R20-R23: check the epoch, follow the address, and if the gateway was thought gone,
        take the announcement as proof that it is back."""
        assert self.client is not None
        self.client.epoch.observe(announcement.epoch)
        if isinstance(announcement, ExternalAddressResponse) and announcement.result == 0:
            self._set_address(announcement.address)
        if self._pending == "probe" or self._probing is not None:
            self._cancel_timer()
            self._stop_probing()
            self._gateway_back()

    # Deleting

    def _delete(self, entry: _Entry) -> Deferred[None]:
        had_request = entry.request is not None
        entry.stop()
        entry.settle(CancelledError(f"{entry.spec} was removed"))
        if self.client is None or (entry.mapping is None and not had_request):
            return succeed(None)
        previous, entry.mapping = entry.mapping, None
        deleted = self.client.unmap_port(entry.spec.protocol, entry.spec.internal_port)

        def removed(_: Mapping) -> None:
            self.log.info("Removed {spec.protocol} {spec.internal_port}", spec=entry.spec)
            self._tell(MappingEvent(EventKind.REMOVED, entry.spec, previous=previous,
                                    external_address=self.external_address))
            self._write_status()

        return deleted.addCallback(removed)

    def _delete_all(self) -> Deferred[None]:
        """Delete every mapping; once one delete times out, the gateway is gone: skip the rest."""
        deletes = [self._delete(entry) for entry in list(self._entries.values())]

        def gone(failure: Failure) -> None:
            if isinstance(failure.value, GatewayTimeout):
                for d in deletes:
                    d.cancel()
                self.log.warn("Gateway gone while deleting mappings: they expire by their "
                              "lifetime")
            elif not isinstance(failure.value, CancelledError):
                self.log.failure("Could not delete a mapping", failure)

        for d in deletes:
            d.addErrback(gone)
        self._write_status()
        done: Deferred[Any] = DeferredList(deletes)
        return done.addCallback(lambda _: None)

    # Reporting

    def _tell(self, event: MappingEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                self.log.failure("Observer {observer} failed on {event}", observer=observer,
                                 event=event)

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        status = {
            "gateway": self._gateway,
            "external_address": self.external_address,
            "mappings": [
                {
                    "protocol": e.mapping.protocol,
                    "internal_port": e.mapping.internal_port,
                    "external_port": e.mapping.external_port,
                    "lifetime": e.mapping.lifetime,
                    "expires": e.granted_at + e.mapping.lifetime,
                }
                for e in self._entries.values()
                if e.mapping is not None
            ],
        }
        folder = os.path.dirname(os.path.abspath(self.status_file))
        try:
            with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as tmp:
                json.dump(status, tmp, indent=2)
            os.replace(tmp.name, self.status_file)
        except OSError as error:
            self.log.error("Cannot write status file {path}: {error}", path=self.status_file,
                           error=error)

    def _back_off(self, purpose: str, then: Callable[[], object], message: str,
                  failure: Failure) -> None:
        """One more failure of the gateway as a whole: log it and wait longer before C{then}."""
        self._unreachable_failures += 1
        delay = self._retry.delay(self._unreachable_failures)
        self.log.warn(message + " in {delay:g} s", error=failure.getErrorMessage(), delay=delay)
        self._wait(purpose, delay, then)

    def _wait(self, purpose: str, delay: float, then: Callable[[], object]) -> None:
        """Run C{then} after C{delay}; until then the service is waiting for C{purpose}.
        A stopped service waits for nothing."""
        if not self.running:
            return

        def run() -> None:
            self._timer = self._pending = None
            then()

        self._cancel_timer()
        self._pending = purpose
        self._timer = self._reactor.callLater(delay, run)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._pending = None


def _to_spec(spec: str | MappingSpec, internal_port: int | None, external_port: int) -> MappingSpec:
    if isinstance(spec, MappingSpec):
        return spec
    if internal_port is None:
        return parse_spec(spec)
    return parse_spec(f"{check_protocol(spec)}:{internal_port}" +
                      (f":{external_port}" if external_port else ""))
