"""
L{GatewayLink}: a service's link to its gateway.  It finds the gateway, discovers which
protocol it speaks, owns the (shared) mapper and the announcement listeners, knows the external
address, and runs the actions of the state machine in L{txnatpmp._service.machine}.  What happens to each mapping is the keepers'
business (L{txnatpmp._service.keeper}); the link tells them when to pause, resume or re-create.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Protocol, Sequence

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._announce import Announcement, AnnouncementListener, listen_for_announcements
from .._announce6 import listen_for_announcements6, pcp_announcement_listener6
from .._errors import GatewayTimeout, ResultError
from .._events import EventKind, MappingEvent
from .._mapper.shared import (
    FALLBACKS,
    Mapper,
    acquire_mapper,
    forget_verdict,
    natpmp_verdict_until,
    release_mapper,
    same_mapper,
)
from .._results import ExternalAddress, Mapping
from .._schedule import RetransmitSchedule, RetryBackoff
from .._gateway6 import Router6
from .._pcp.client import PCPClient
from .._spec import SERVER_PORT, Gateway, check_gateway, check_gateway6
from .._wire import ExternalAddressResponse, PCPAnnounce
from .machine import Input, Machine, State
from .pinholes import close_pinholes

#: What a gateway without a WAN link reports as its external address.
NO_ADDRESS = "0.0.0.0"
#: R19: after a gateway loses its state, wait a random time up to this before re-creating.
RECOVERY_JITTER = 5.0
#: After a failed "does it speak PCP now?" probe, wait this long before the next (P43).
RECONSIDER_RETRY = 300.0
#: How often an IPv6 link looks whether this host's global address changed (P08).
SOURCE_CHECK_EVERY = 30.0

Finder = Callable[[Any], "Deferred[str]"]
#: How IPv6 announcements are listened for (a test puts an in-memory listener here).
listen6 = listen_for_announcements6


class Keepers(Protocol):
    """What the link asks of the mappings it serves (the service)."""

    def count(self) -> int: ...

    def granted(self) -> list[Mapping]: ...

    def pause_all(self, error: BaseException | None) -> None: ...

    def lose_all(self) -> None: ...

    def refresh_all(self) -> None: ...

    def recreate_all(self) -> None: ...

    def tell(self, event: MappingEvent) -> None: ...


class GatewayLink:
    """
    The gateway side of a L{txnatpmp.MappingService}.

    @ivar gateway: The gateway in use (C{None} until found).
    @ivar mapper: The shared mapper (the protocol the gateway speaks) while connected.
    @ivar external_address: The external address when known.
    """

    log = Logger(namespace="txnatpmp._service")

    def __init__(
        self,
        reactor: Any,
        gateway: Gateway | None,
        finder: Finder | None,
        keepers: Keepers,
        *,
        family: int = 4,
        methods: Sequence[str],
        schedule: RetransmitSchedule,
        retry: RetryBackoff,
        rng: random.Random,
        announcements: bool,
        announce_ports: Sequence[int],
        announce_group: str | None,
        announce_interface: str,
    ) -> None:
        self._reactor = reactor
        self.gateway = gateway
        self._port = gateway.port if gateway is not None else None
        self._finder = finder
        self._keepers = keepers
        self.family = family
        self.methods = tuple(methods)
        self.schedule = schedule
        self._retry = retry
        self._random = rng
        self._announcements = announcements
        self._announce_ports = tuple(announce_ports)
        self._announce_group = announce_group
        self._announce_interface = announce_interface
        self.mapper: Mapper | None = None
        self.external_address: str | None = None
        self._address_checked_at: float | None = None
        self._listeners: list[IListeningPort] = []
        self._timer: IDelayedCall | None = None
        self._finding: Deferred[Any] | None = None
        self._found: Mapper | None = None
        self._reconsidering: Deferred[Mapper] | None = None
        self._reconsider_timer: IDelayedCall | None = None
        self._source_timer: IDelayedCall | None = None
        self._source_refresh: IDelayedCall | None = None
        self._probe: Deferred[Any] | None = None
        self._address_request: Deferred[ExternalAddress] | None = None
        self._failures = 0
        self._said: tuple[Gateway, str] | None = None
        self._why: BaseException | None = None
        self._lost: tuple[int, float] = (0, 0.0)
        self._machine = Machine(self, self._changed)

    # What the service asks

    @property
    def state(self) -> State:
        return self._machine.state

    @property
    def may_send(self) -> bool:
        """Whether keepers may send requests now."""
        return self.state is State.CONNECTED and self.mapper is not None

    @property
    def announcement_ports(self) -> list[int]:
        return [int(port.getHost().port) for port in self._listeners]  # type: ignore[attr-defined]

    def start(self) -> None:
        self._machine.feed(Input.START)

    def stop(self) -> None:
        self._machine.feed(Input.STOP)

    def deleted(self) -> None:
        self._machine.feed(Input.DELETED)

    def heard(self) -> None:
        """A keeper's request was answered (with success or an error code)."""
        self._machine.feed(Input.HEARD)

    def timed_out(self, error: GatewayTimeout) -> bool:
        """
        A keeper's request went unanswered.  It is silence only when the gateway has answered
        nothing at all for a whole retransmission schedule; otherwise one request was unlucky.

        @return: Whether the link took it as silence.
        """
        mapper = self.mapper
        if mapper is None:
            return False
        heard = mapper.last_heard
        if heard is not None and self._reactor.seconds() - heard < mapper.silence_after:
            return False
        self._why = error
        self._machine.feed(Input.SILENCE)
        return True

    def check_address(self, max_age: float) -> None:
        """Ask for the external address again if the last answer is older than C{max_age}: a
        missed or forged announcement heals within a renewal cycle."""
        if self.mapper is not None and self.mapper.reports_address:
            return  # each renewal's answer carries it
        checked = self._address_checked_at
        if checked is None or self._reactor.seconds() - checked >= max_age:
            self._fetch_address()

    # The machine's actions (see machine.TRANSITIONS)

    def find(self) -> None:
        if self._finder is None:
            assert self.gateway is not None
            self._discover(self.gateway)
            return
        self._look_for_gateway()

    def connect(self) -> None:
        assert self._found is not None
        self.mapper, self._found = self._found, None
        said = (self.mapper.gateway, self.mapper.method)
        if said != self._said:  # once per gateway and protocol, not at every reconnection
            self._said = said
            if len(self.methods) > 1:  # discovery found it out
                self.log.info("{what} {gateway} speaks {method}", what=self._what(),
                              gateway=self.mapper.gateway.host,
                              method=_NAMES[self.mapper.method])
            else:  # the one method allowed: nothing is known until it answers
                self.log.info("Talking {method} to {what} {gateway}",
                              what=self._what().lower(), gateway=self.mapper.gateway.host,
                              method=_NAMES[self.mapper.method])
        self.gateway = self.mapper.gateway
        self.mapper.add_state_lost_observer(self._state_lost)
        if isinstance(self.mapper.client, PCPClient) and self.family == 6:
            self.mapper.client.add_source_observer(self._source_changed)
            self._watch_source()
        self._listen_for_announcements()
        self._failures = 0
        self._arm_reconsider()
        if not self.mapper.reports_address:
            self._fetch_address()
        self._keepers.refresh_all()

    def back_off(self) -> None:
        self._failures += 1
        delay = self._retry.delay(self._failures)
        why = self._why
        if why is None:
            why = GatewayTimeout(self.gateway or Gateway("0.0.0.0"), 0, 0.0)
        looking = self._finder is not None
        self.log.warn("{error}; {what} in {delay:g} s", error=_message(why),
                      what="looking again" if looking else "asking again", delay=delay)
        self._wait(delay)

    def fall_silent(self) -> None:
        self._cancel_address_request()
        self._keepers.pause_all(self._why)
        self.back_off()

    def probe(self) -> None:
        if self._finder is not None:
            self._look_for_gateway()  # the network may have changed (R20)
        elif self.mapper is None:
            assert self.gateway is not None
            self._discover(self.gateway)  # it never answered: which protocol, if any?
        else:
            self._machine.feed(Input.FOUND_SAME)

    def send_probe(self) -> None:
        assert self.mapper is not None
        probe = self._probe = self.mapper.probe()
        probe.addCallbacks(self._probe_answered, self._probe_failed)

    def move(self) -> None:
        assert self._found is not None
        new, old = self._found, self.mapper
        if old is None:
            self.log.info("{what} {gateway} answers {method}", what=self._what(),
                          gateway=new.gateway.host,
                          method=_NAMES[new.method])
        elif new.gateway == old.gateway:
            self.log.warn("{what} {gateway} now answers {new}: moving {count} mappings from "
                          "{old}", what=self._what(), gateway=new.gateway.host,
                          new=_NAMES[new.method],
                          old=_NAMES[old.method], count=self._keepers.count())
        else:
            self.log.warn("The default {what} is now {new} (was {old}): moving {count} "
                          "mappings there", what=self._what().lower(), new=new.gateway.host,
                          old=self.gateway and self.gateway.host, count=self._keepers.count())
            self.external_address = None
            self._address_checked_at = None
        self._keepers.pause_all(None)
        self._close()
        self.connect()

    def resume(self) -> None:
        self._cancel_timer()
        self._cancel_probe()
        self._failures = 0
        self._arm_reconsider()
        self.log.info("{what} {gateway} answers again: refreshing {count} mappings",
                      what=self._what(), gateway=self._host(), count=self._keepers.count())
        self._keepers.refresh_all()

    def wait_to_recover(self) -> None:
        self._cancel_timer()
        self._cancel_probe()
        self._keepers.lose_all()
        delay = self._random.uniform(0, RECOVERY_JITTER)
        received, expected = self._lost
        if self.mapper is not None and self.mapper.method == "upnp":  # no epochs: it restarted
            self.log.warn("{what} {gateway} restarted or lost our mappings: re-creating "
                          "{count} in {delay:.1f} s", what=self._what(), gateway=self._host(),
                          count=self._keepers.count(), delay=delay)
        else:
            self.log.warn("{what} {gateway} lost its mappings (epoch {received}, expected at "
                          "least {expected:.0f}): re-creating {count} in {delay:.1f} s",
                          what=self._what(), gateway=self._host(), received=received,
                          expected=expected, count=self._keepers.count(), delay=delay)
        self._keepers.tell(MappingEvent(EventKind.STATE_LOST,
                                        external_address=self.external_address))
        self._wait(delay)

    def note_state_lost_again(self) -> None:
        self.log.debug("Gateway {gateway} signalled lost state again; re-creation already "
                       "pending", gateway=self._host())

    def recover(self) -> None:
        self._failures = 0
        self._arm_reconsider()  # a PCP ANNOUNCE with the reboot: PCP is asked at once
        if self.mapper is not None and not self.mapper.reports_address:
            self._fetch_address()
        self._keepers.recreate_all()

    def cancel_all(self) -> None:
        self._cancel_timer()
        self._cancel_source_timer()
        self._cancel_source_refresh()
        self._cancel_probe()
        self._cancel_address_request()
        for pending in (self._finding, self._reconsidering):
            if pending is not None:
                pending.cancel()
        self._finding = self._reconsidering = None
        self._keepers.pause_all(None)

    def close(self) -> None:
        self._close()

    def drop_found(self) -> None:
        """A mapper found too late to be of use (stopping, recovering...): give it back."""
        found, self._found = self._found, None
        if found is not None:
            release_mapper(self._reactor, found)

    # Machine plumbing

    def _changed(self, before: State, event: Input, after: State) -> None:
        self.log.debug("Link to {gateway}: {before} -> {after} on {event}", gateway=self._host(),
                       before=before.value, after=after.value, event=event.value)

    # Finding

    def _look_for_gateway(self) -> None:
        assert self._finder is not None
        finding = self._finding = maybeDeferred(self._finder, self._reactor)  # may raise at once
        finding.addCallbacks(self._gateway_found, self._gateway_not_found)

    def _gateway_found(self, host: str) -> None:
        self._finding = None
        check = check_gateway if self.family == 4 else check_gateway6
        try:
            found = check(host, self._port if self._port is not None else SERVER_PORT)
        except ValueError as error:
            self._why = error
            self._machine.feed(Input.NOT_FOUND)
            return
        if found == self.gateway and self.mapper is not None:
            self._machine.feed(Input.FOUND_SAME)
            return
        if self.gateway is None:
            self.log.info("Found {what} {gateway}", what=self._what().lower(), gateway=found.host)
        self._discover(found)

    def _discover(self, gateway: Gateway) -> None:
        """Which protocol does C{gateway} speak?  Then it is found (or not)."""
        finding = self._finding = acquire_mapper(self._reactor, gateway, self.methods,
                                                 self.schedule)
        finding.addCallbacks(self._discovered, self._gateway_not_found)

    def _discovered(self, mapper: Mapper) -> None:
        self._finding = None
        if same_mapper(mapper, self.mapper):
            release_mapper(self._reactor, mapper)  # the reference we hold already
            self._machine.feed(Input.FOUND_SAME)
            return
        self._found = mapper
        self._machine.feed(Input.FOUND_NEW)

    def _gateway_not_found(self, failure: Failure) -> None:
        self._finding = None
        if isinstance(failure.value, CancelledError):
            return
        self._why = failure.value
        self._machine.feed(Input.NOT_FOUND)

    # Trying PCP again after a NAT-PMP verdict (P43)

    def _arm_reconsider(self, at_least: float = 0.0) -> None:
        self._cancel_reconsider()
        mapper = self.mapper
        if mapper is None or mapper.method not in FALLBACKS or "pcp" not in self.methods:
            return
        until = natpmp_verdict_until(self._reactor, mapper.gateway)
        delay = 0.0 if until is None else until - self._reactor.seconds()
        self._reconsider_timer = self._reactor.callLater(max(delay, at_least), self._reconsider)

    def _reconsider(self) -> None:
        self._reconsider_timer = None
        if self.state is not State.CONNECTED or self.mapper is None:
            return
        if getattr(self.mapper.client, "pending", 0):  # one request at a time (R08)
            self._reconsider_timer = self._reactor.callLater(1.0, self._reconsider)
            return
        asking = self._reconsidering = acquire_mapper(self._reactor, self.mapper.gateway,
                                                      self.methods, self.schedule)

        def answered(mapper: Mapper) -> None:
            self._reconsidering = None
            if same_mapper(mapper, self.mapper) or self.state is not State.CONNECTED:
                release_mapper(self._reactor, mapper)
                self._arm_reconsider()
                return
            self._found = mapper
            self._machine.feed(Input.FOUND_NEW)

        def failed(failure: Failure) -> None:
            self._reconsidering = None
            if not isinstance(failure.value, CancelledError):
                self.log.debug("Asking {gateway} for PCP again failed: {error}",
                               gateway=self._host(), error=failure.getErrorMessage())
                self._arm_reconsider(at_least=RECONSIDER_RETRY)

        asking.addCallbacks(answered, failed)

    def _cancel_reconsider(self) -> None:
        if self._reconsider_timer is not None and self._reconsider_timer.active():
            self._reconsider_timer.cancel()
        self._reconsider_timer = None

    # Probing and the address

    def _probe_answered(self, answer: object) -> None:
        self._probe = None
        if isinstance(answer, ExternalAddress):  # NAT-PMP's probe; PCP's gives an epoch
            self._set_address(answer.address)
        self._machine.feed(Input.HEARD)

    def _probe_failed(self, failure: Failure) -> None:
        self._probe = None
        if isinstance(failure.value, CancelledError):
            return
        if isinstance(failure.value, ResultError):
            self._machine.feed(Input.HEARD)  # an error code: somebody is there
            return
        self._why = failure.value
        self._machine.feed(Input.SILENCE)

    def _fetch_address(self) -> None:
        if self.mapper is None or self._address_request is not None:
            return
        request = self._address_request = self.mapper.external_address()
        request.addCallbacks(self._address_answered, self._address_failed)

    def _address_answered(self, address: ExternalAddress) -> None:
        self._address_request = None
        self._address_checked_at = self._reactor.seconds()
        self._set_address(address.address)
        self._machine.feed(Input.HEARD)

    def _address_failed(self, failure: Failure) -> None:
        self._address_request = None
        if isinstance(failure.value, CancelledError):
            return
        if isinstance(failure.value, GatewayTimeout):
            self.timed_out(failure.value)
            return
        self._machine.feed(Input.HEARD)
        self.log.warn("Could not learn the external address: {error}",
                      error=failure.getErrorMessage())

    def saw_address(self, address: str | None) -> None:
        """A mapping's answer carried the external address (PCP)."""
        if address:
            self._address_checked_at = self._reactor.seconds()
            self._set_address(address)

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
        self._keepers.tell(MappingEvent(EventKind.ADDRESS_CHANGED, external_address=address))

    # Announcements and epochs

    def _listen_for_announcements(self) -> None:
        if not self._announcements or self.gateway is None:
            return
        if self.family == 6:
            self._listen_for_announcements6()
            return
        ports = self._announce_ports if self._announce_group else self._announce_ports[:1]
        for port in ports:
            listener = AnnouncementListener(self.gateway, self._announced)
            try:
                self._listeners.append(listen_for_announcements(
                    listener, self._reactor, port, self._announce_group,
                    self._announce_interface,
                ))
            except CannotListenError as error:
                self.log.warn("Not listening for gateway announcements on port {port}: {error}",
                              port=port, error=error)

    def _listen_for_announcements6(self) -> None:
        """P34: the router's ANNOUNCEs to [ff02::1]:5350, from its link-local address."""
        assert self.gateway is not None and self.mapper is not None
        address, _, zone = self.gateway.host.partition("%")
        router = Router6(address, zone, getattr(self.mapper.client, "scope_id", 0))
        if not router.link_local:
            self.log.info("Not listening for IPv6 announcements: they come from the router's "
                          "link-local address, and {gateway} is not one", gateway=address)
            return
        if listen6 is listen_for_announcements6 and not hasattr(self._reactor,
                                                                 "adoptDatagramPort"):
            self.log.info("Not listening for IPv6 announcements: this reactor cannot adopt a "
                          "socket")
            return
        listener = pcp_announcement_listener6(router, self._announced)
        try:
            self._listeners.append(listen6(listener, router, self._reactor,
                                           self._announce_ports[0]))
        except (OSError, ValueError) as error:
            self.log.warn("Not listening for IPv6 announcements on port {port}: {error}",
                          port=self._announce_ports[0], error=error)

    def _source_changed(self, old: str, new: str) -> None:
        """P08: this host's global address changed; pinholes belong to an address, so each is
        made again for the new one now, and the old ones are closed while the old address
        still works (L{close_pinholes})."""
        connected = self.state is State.CONNECTED
        self.log.warn("This host's IPv6 address changed from {old} to {new}: {what}", old=old,
                      new=new, what=f"opening {self._keepers.count()} pinholes for the new one"
                      if connected else "its pinholes are opened when the router answers")
        self.external_address = new
        self._keepers.tell(MappingEvent(EventKind.ADDRESS_CHANGED, external_address=new))
        old_ones = [m for m in self._keepers.granted() if m.external_address == old]
        if old_ones and self.gateway is not None:
            closing = Deferred.fromCoroutine(close_pinholes(self._reactor, self.gateway, old,
                                                            old_ones))
            closing.addErrback(lambda f: self.log.failure("Closing old pinholes failed", f))
        # Once the renewal that noticed it is under way (it goes from the new address), so
        # that it is not sent twice.
        self._cancel_source_refresh()
        self._source_refresh = self._reactor.callLater(0, self._refresh_if_connected)

    def _cancel_source_refresh(self) -> None:
        if self._source_refresh is not None and self._source_refresh.active():
            self._source_refresh.cancel()
        self._source_refresh = None

    def _watch_source(self) -> None:
        """P08: look at this host's global address every L{SOURCE_CHECK_EVERY} seconds (no
        packet is sent), so that pinholes follow a new one within that, not at their next
        renewal."""
        self._source_timer = self._reactor.callLater(SOURCE_CHECK_EVERY, self._check_source)

    def _check_source(self) -> None:
        self._source_timer = None
        mapper = self.mapper
        if mapper is not None and isinstance(mapper.client, PCPClient):
            try:
                mapper.client.check_source()
            finally:
                self._watch_source()

    def _cancel_source_timer(self) -> None:
        if self._source_timer is not None and self._source_timer.active():
            self._source_timer.cancel()
        self._source_timer = None

    def _refresh_if_connected(self) -> None:
        self._source_refresh = None
        if self.state is State.CONNECTED:
            self._keepers.refresh_all()

    def _announced(self, announcement: Announcement) -> None:
        """R20-R23, P34, P43: check the epoch, follow the address, take it as news from the
        gateway; a NAT-PMP verdict is dropped, and a PCP ANNOUNCE says PCP is there."""
        mapper = self.mapper
        if mapper is None:
            return
        mapper.observe_announcement(announcement.epoch)
        if isinstance(announcement, ExternalAddressResponse) and announcement.result == 0:
            self._set_address(announcement.address)
        self._machine.feed(Input.HEARD)
        if mapper is self.mapper and mapper.method in FALLBACKS and "pcp" in self.methods:
            forget_verdict(self._reactor, mapper.gateway)
            if isinstance(announcement, PCPAnnounce) and self._reconsidering is None:
                self._reconsider()

    def _state_lost(self, received: int, expected: float) -> None:
        self._lost = (received, expected)
        if self.mapper is not None:
            forget_verdict(self._reactor, self.mapper.gateway)  # a new epoch (P43)
        self._machine.feed(Input.STATE_LOST)

    # Timers and closing

    def _wait(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self._reactor.callLater(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._machine.feed(Input.TIMER)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _cancel_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()

    def _cancel_address_request(self) -> None:
        request, self._address_request = self._address_request, None
        if request is not None:
            request.cancel()

    def _close(self) -> None:
        self._cancel_address_request()
        self._cancel_source_timer()
        self._cancel_source_refresh()
        for listener in self._listeners:
            listener.stopListening()
        self._listeners.clear()
        self._cancel_reconsider()
        mapper, self.mapper = self.mapper, None
        if mapper is not None:
            mapper.remove_state_lost_observer(self._state_lost)
            if isinstance(mapper.client, PCPClient) and self.family == 6:
                mapper.client.remove_source_observer(self._source_changed)
            release_mapper(self._reactor, mapper)

    def _host(self) -> str:
        return self.gateway.host if self.gateway is not None else "?"

    def _what(self) -> str:
        return "Gateway" if self.family == 4 else "IPv6 router"


_NAMES = {"natpmp": "NAT-PMP", "pcp": "PCP", "upnp": "UPnP-IGD"}


def _message(error: BaseException) -> str:
    return str(error) or type(error).__name__
