"""
L{GatewayLink}: a service's link to its gateway.  It finds the gateway, owns the (shared)
client and the announcement listeners, knows the external address, and runs the actions of the
state machine in L{txnatpmp._service.machine}.  What happens to each mapping is the keepers'
business (L{txnatpmp._service.keeper}); the link tells them when to pause, resume or re-create.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Protocol, Sequence

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._announce import Announcement, AnnouncementListener, listen_for_announcements
from .._client import NATPMPClient
from .._errors import GatewayTimeout, ResultError
from .._events import EventKind, MappingEvent
from .._results import ExternalAddress
from .._schedule import RetransmitSchedule, RetryBackoff
from .._spec import Gateway, check_gateway
from .._wire import ExternalAddressResponse
from .clients import acquire_client, release_client
from .machine import Input, Machine, State

#: What a gateway without a WAN link reports as its external address.
NO_ADDRESS = "0.0.0.0"
#: R19: after a gateway loses its state, wait a random time up to this before re-creating.
RECOVERY_JITTER = 5.0

Finder = Callable[[Any], "Deferred[str]"]


class Keepers(Protocol):
    """What the link asks of the mappings it serves (the service)."""

    def count(self) -> int: ...

    def pause_all(self, error: BaseException | None) -> None: ...

    def refresh_all(self) -> None: ...

    def recreate_all(self) -> None: ...

    def tell(self, event: MappingEvent) -> None: ...


class GatewayLink:
    """
    The gateway side of a L{txnatpmp.MappingService}.

    @ivar gateway: The gateway in use (C{None} until found).
    @ivar client: The shared client while connected, else C{None}.
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
        self.schedule = schedule
        self._retry = retry
        self._random = rng
        self._announcements = announcements
        self._announce_ports = tuple(announce_ports)
        self._announce_group = announce_group
        self._announce_interface = announce_interface
        self.client: NATPMPClient | None = None
        self.external_address: str | None = None
        self._address_checked_at: float | None = None
        self._listeners: list[IListeningPort] = []
        self._timer: IDelayedCall | None = None
        self._finding: Deferred[str] | None = None
        self._found: Gateway | None = None
        self._probe: Deferred[ExternalAddress] | None = None
        self._address_request: Deferred[ExternalAddress] | None = None
        self._failures = 0
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
        return self.state is State.CONNECTED and self.client is not None

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
        client = self.client
        if client is None:
            return False
        heard = client.last_heard
        if heard is not None and self._reactor.seconds() - heard < self.schedule.total:
            return False
        self._why = error
        self._machine.feed(Input.SILENCE)
        return True

    def check_address(self, max_age: float) -> None:
        """Ask for the external address again if the last answer is older than C{max_age}: a
        missed or forged announcement heals within a renewal cycle."""
        checked = self._address_checked_at
        if checked is None or self._reactor.seconds() - checked >= max_age:
            self._fetch_address()

    # The machine's actions (see machine.TRANSITIONS)

    def find(self) -> None:
        if self._finder is None:
            self._machine.feed(Input.FOUND_NEW)
            return
        self._look_for_gateway()

    def connect(self) -> None:
        if self._found is not None:
            self.gateway, self._found = self._found, None
        assert self.gateway is not None
        try:
            self.client = acquire_client(self._reactor, self.gateway, self.schedule)
        except CannotListenError as error:  # no UDP port at all: try again later
            self.log.warn("Cannot open a UDP port: {error}", error=error)
            self._why = error
            self._machine.feed(Input.SILENCE)
            return
        self.client.epoch.add_observer(self._state_lost)
        self._listen_for_announcements()
        self._failures = 0
        self._fetch_address()
        self._keepers.refresh_all()

    def back_off(self) -> None:
        self._failures += 1
        delay = self._retry.delay(self._failures)
        why = self._why
        if why is None:
            why = GatewayTimeout(self.gateway or Gateway("0.0.0.0"), 0, 0.0)
        looking = self._finder is not None and self.client is None
        self.log.warn("{error}; {what} in {delay:g} s", error=_message(why),
                      what="looking again" if looking else "asking again", delay=delay)
        self._wait(delay)

    def fall_silent(self) -> None:
        self._cancel_address_request()
        self._keepers.pause_all(self._why)
        self.back_off()

    def probe(self) -> None:
        if self._finder is None:
            self._machine.feed(Input.FOUND_SAME)
        else:
            self._look_for_gateway()  # the network may have changed (R20)

    def send_probe(self) -> None:
        assert self.client is not None
        probe = self._probe = self.client.get_external_address()
        probe.addCallbacks(self._probe_answered, self._probe_failed)

    def move(self) -> None:
        assert self._found is not None
        self.log.warn("The default gateway is now {new} (was {old}): moving {count} mappings "
                      "there", new=self._found.host, old=self.gateway and self.gateway.host,
                      count=self._keepers.count())
        self._close()
        self.external_address = None
        self._address_checked_at = None
        self.connect()

    def resume(self) -> None:
        self._cancel_timer()
        self._cancel_probe()
        self._failures = 0
        self.log.info("Gateway {gateway} answers again: refreshing {count} mappings",
                      gateway=self._host(), count=self._keepers.count())
        self._keepers.refresh_all()

    def wait_to_recover(self) -> None:
        self._cancel_timer()
        self._cancel_probe()
        self._keepers.pause_all(None)
        delay = self._random.uniform(0, RECOVERY_JITTER)
        received, expected = self._lost
        self.log.warn("Gateway {gateway} lost its mappings (epoch {received}, expected at least "
                      "{expected:.0f}): re-creating {count} in {delay:.1f} s",
                      gateway=self._host(), received=received, expected=expected,
                      count=self._keepers.count(), delay=delay)
        self._keepers.tell(MappingEvent(EventKind.STATE_LOST,
                                        external_address=self.external_address))
        self._wait(delay)

    def note_state_lost_again(self) -> None:
        self.log.debug("Gateway {gateway} signalled lost state again; re-creation already "
                       "pending", gateway=self._host())

    def recover(self) -> None:
        self._failures = 0
        self._fetch_address()
        self._keepers.recreate_all()

    def cancel_all(self) -> None:
        self._cancel_timer()
        self._cancel_probe()
        self._cancel_address_request()
        if self._finding is not None:
            finding, self._finding = self._finding, None
            finding.cancel()
        self._keepers.pause_all(None)

    def close(self) -> None:
        self._close()

    # Machine plumbing

    def _changed(self, before: State, event: Input, after: State) -> None:
        self.log.debug("Link to {gateway}: {before} -> {after} on {event}", gateway=self._host(),
                       before=before.value, after=after.value, event=event.value)

    # Finding

    def _look_for_gateway(self) -> None:
        assert self._finder is not None
        finding = self._finding = self._finder(self._reactor)
        finding.addCallbacks(self._gateway_found, self._gateway_not_found)

    def _gateway_found(self, host: str) -> None:
        self._finding = None
        try:
            found = check_gateway(host, self._port if self._port is not None else 5351)
        except ValueError as error:
            self._why = error
            self._machine.feed(Input.NOT_FOUND)
            return
        if found == self.gateway and self.client is not None:
            self._machine.feed(Input.FOUND_SAME)
            return
        if self.gateway is None:
            self.log.info("Found gateway {gateway}", gateway=found.host)
        self._found = found
        self._machine.feed(Input.FOUND_NEW)

    def _gateway_not_found(self, failure: Failure) -> None:
        self._finding = None
        if isinstance(failure.value, CancelledError):
            return
        self._why = failure.value
        self._machine.feed(Input.NOT_FOUND)

    # Probing and the address

    def _probe_answered(self, address: ExternalAddress) -> None:
        self._probe = None
        self._set_address(address.address)
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
        if self.client is None or self._address_request is not None:
            return
        request = self._address_request = self.client.get_external_address()
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

    def _announced(self, announcement: Announcement) -> None:
        """R20-R23: check the epoch, follow the address, and take it as news from the gateway."""
        if self.client is None:
            return
        self.client.epoch.observe(announcement.epoch)
        if isinstance(announcement, ExternalAddressResponse) and announcement.result == 0:
            self._set_address(announcement.address)
        self._machine.feed(Input.HEARD)

    def _state_lost(self, received: int, expected: float) -> None:
        self._lost = (received, expected)
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
        for listener in self._listeners:
            listener.stopListening()
        self._listeners.clear()
        client, self.client = self.client, None
        if client is not None:
            client.epoch.remove_observer(self._state_lost)
            release_client(self._reactor, client)

    def _host(self) -> str:
        return self.gateway.host if self.gateway is not None else "?"


def _message(error: BaseException) -> str:
    return str(error) or type(error).__name__
