"""
L{UPnPClient}: maps ports on one UPnP Internet Gateway Device, over SSDP and
C{twisted.web.client.Agent}.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from typing import Any, Callable

import attrs
from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.iweb import IAgent

from .._errors import (
    DecodeError,
    IGDNotFound,
    IGDUnreachable,
    PortConflict,
    UPnPFault,
)
from .._reactor import global_reactor
from .._results import ExternalAddress, Mapping
from .._schedule import RetransmitSchedule
from .._spec import DEFAULT_LIFETIME, MAX_LIFETIME, check_gateway
from .._wire import Protocol, check_protocol
from . import soap
from .description import MAX_DESCRIPTION, Service, choose_service, parse_description
from .http import fetch
from .ssdp import (
    IGD_SEARCH_TARGET,
    SSDP_GROUP,
    SSDP_PORT,
    SearchAnswer,
    check_location,
    decode_answer,
    decode_notification,
    encode_search,
)

#: The longest lease IGD:2 grants (its lease 0 means this too).
MAX_LEASE = 604800
#: SSDP searches: at 0, 0.5 and 1.5 s, giving up at 3.5 s.
SEARCH_SCHEDULE = RetransmitSchedule(0.5, 3)
#: How many external ports to try when a router says one is taken (718) and picks none itself.
CONFLICT_TRIES = 8
_FIRST_UNPRIVILEGED = 1024

RestartObserver = Callable[[str], object]


@frozen
class Device:
    """
    The IGD this client talks to, as discovery found it.

    @ivar location: Its description URL (on the gateway's address; its port changes per boot).
    @ivar boot_id: Its BOOTID.UPNP.ORG, C{None} if it sends none.
    @ivar service: The WAN connection service used (see L{choose_service}).
    @ivar external_address: What GetExternalIPAddress said during discovery, C{None} if unknown.
    """

    location: str
    boot_id: int | None
    server: str
    service: Service
    external_address: str | None


class _Search(DatagramProtocol):
    """Collects M-SEARCH answers from the gateway whose LOCATION is on the gateway."""

    log = Logger()

    def __init__(self, gateway: str, found: Callable[[SearchAnswer], None]) -> None:
        self._gateway = gateway
        self._found = found
        self._refused: set[str] = set()

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        if self.transport is None:
            return
        try:
            self.transport.write(data, destination)
        except OSError as error:
            self.log.info("SSDP search to {destination} was not sent: {error}",
                          destination=destination, error=error)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            self._receive(data, addr)
        except Exception:
            self.log.failure("Unexpected error handling an SSDP answer from {source}", source=addr)

    def _receive(self, data: bytes, source: Any) -> None:
        if source[0] != self._gateway:
            self.log.debug("Ignored an SSDP answer from {source}: not the gateway", source=source)
            return
        try:
            answer = decode_answer(data)
            check_location(answer.location, self._gateway)
        except DecodeError as error:
            if str(error) not in self._refused:
                self._refused.add(str(error))
                self.log.warn("Ignored an SSDP answer from the gateway: {error}", error=error)
            return
        self._found(answer)


class _Notifications(DatagramProtocol):
    """Hands the gateway's NOTIFYs on 239.255.255.250:1900 to a client."""

    log = Logger()

    def __init__(self, client: UPnPClient) -> None:
        self._client = client

    def startProtocol(self) -> None:
        assert self.transport is not None
        self.transport.joinGroup(SSDP_GROUP).addErrback(  # type: ignore[attr-defined]
            lambda f: self.log.warn("Could not join the SSDP group: {error}",
                                    error=f.getErrorMessage()))

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            if addr[0] != self._client.gateway.host:
                return
            try:
                notification = decode_notification(data)
            except DecodeError:
                return
            self._client._notified(notification.kind, notification.location,
                                   notification.boot_id)
        except Exception:
            self.log.failure("Unexpected error handling an SSDP NOTIFY from {source}",
                             source=addr)


class UPnPClient:
    """
    Talks UPnP-IGD to the device at one gateway address.

    L{discover} finds it (an SSDP search unicast to the gateway and, unless the gateway is
    loopback, multicast to 239.255.255.250:1900; the first answer whose LOCATION is on the
    gateway's address wins), reads its description and picks WANIPConnection:2, :1 or
    WANPPPConnection:1.  Every other request discovers first when needed, so calling L{map_port}
    straight away is fine.  After discovery each request is one HTTP exchange.

    A router restart shows as a new BOOTID or description URL at the next discovery, which
    happens by itself when the old URL stops answering; then every observer added with
    L{add_restart_observer} is called with a reason, and L{reestablish} re-creates the mappings
    this client holds.

    @ivar device: The L{Device} found, C{None} before the first discovery.
    @ivar last_heard: The clock's time of the device's last answer (an SSDP answer or any HTTP
        response), C{None} before the first.
    """

    log = Logger()

    def __init__(
        self,
        gateway: str,
        reactor: Any = None,
        *,
        agent: IAgent | None = None,
        ssdp_port: int = SSDP_PORT,
        timeout: float = 3.0,
        multicast: bool | None = None,
        internal_client: str | None = None,
        description: str = "txnatpmp",
        search_schedule: RetransmitSchedule = SEARCH_SCHEDULE,
        seed: int | None = None,
    ) -> None:
        """
        @param gateway: The gateway's IPv4 address; only a device there is used.
        @param reactor: Provides C{listenUDP}, the clock and (for the default agent) TCP.
        @param agent: Makes the HTTP requests; C{Agent(reactor)} by default.
        @param ssdp_port: Where the gateway's SSDP server listens (tests use a FakeIGD's).
        @param timeout: Seconds each HTTP request may take in all.
        @param multicast: Also search on 239.255.255.250:1900; by default, unless the gateway is
            a loopback address.
        @param internal_client: The address mappings point to; by default this host's source
            address toward the gateway.
        @param description: Names the mappings on the router (C{NewPortMappingDescription}).
        @param seed: Seeds the choice of ports to try after a conflict (for repeatable tests).
        """
        self.gateway = check_gateway(gateway, ssdp_port)
        if reactor is None:
            reactor = global_reactor()
        self._reactor = reactor
        if agent is None:
            agent = Agent(reactor, connectTimeout=timeout)  # type: ignore[no-untyped-call]
        self._agent: IAgent = agent
        self.timeout = timeout
        self.multicast = (
            not ipaddress.IPv4Address(self.gateway.host).is_loopback
            if multicast is None else multicast
        )
        self._internal_client = internal_client
        self.description = description
        self.search_schedule = search_schedule
        self._random = random.Random(seed)
        self.device: Device | None = None
        self._stale = True
        self._waiting: list[Deferred[Device]] = []
        self._discovery: Deferred[Any] | None = None
        self._observers: list[RestartObserver] = []
        self._permanent_only = False  # the router answered 725 (or 402) to a finite lease
        self._no_add_any = False  # the router answered 401 to AddAnyPortMapping
        self._held: dict[tuple[str, int], Mapping] = {}
        self._wanted_lifetime: dict[tuple[str, int], int] = {}
        self.last_heard: float | None = None

    @property
    def clock(self) -> Any:
        """The reactor this client runs on (its clock, sockets and connections)."""
        return self._reactor

    def __repr__(self) -> str:
        return f"<UPnPClient for {self.gateway.host}>"

    # Restarts

    def add_restart_observer(self, observer: RestartObserver) -> None:
        """Call C{observer(reason)} whenever the device shows it restarted or lost a mapping."""
        self._observers.append(observer)

    def remove_restart_observer(self, observer: RestartObserver) -> None:
        self._observers.remove(observer)

    def _restarted(self, reason: str) -> None:
        self.log.info("The UPnP-IGD at {host} lost its state: {reason}",
                      host=self.gateway.host, reason=reason)
        for observer in list(self._observers):
            try:
                observer(reason)
            except Exception:
                self.log.failure("A restart observer failed")

    def listen_for_restarts(self) -> IListeningPort:
        """
        Listen for the gateway's NOTIFYs (joins 239.255.255.250 on port 1900, shared with other
        listeners; nothing is sent).  An C{ssdp:alive} with a new BOOTID or description URL tells
        the restart observers at once, instead of at the next failing request.  Stop it with
        the returned port's C{stopListening()}.
        """
        port: IListeningPort = self._reactor.listenMulticast(
            SSDP_PORT, _Notifications(self), listenMultiple=True)
        return port

    def _notified(self, kind: str, location: str, boot_id: int | None) -> None:
        device = self.device
        if device is None:
            return
        if kind == "byebye":
            self._stale = True
            return
        if kind != "alive" or not location:
            return
        try:
            check_location(location, self.gateway.host)
        except DecodeError:
            return
        if boot_id is not None and device.boot_id is not None and boot_id != device.boot_id:
            reason = f"BOOTID {device.boot_id} became {boot_id} (announced)"
        elif location != device.location:
            reason = f"description moved from {device.location} to {location} (announced)"
        else:
            return
        # Remember what was announced, so the discovery that follows does not report it again.
        self.device = attrs.evolve(device, location=location, boot_id=boot_id)
        self._stale = True
        self._restarted(reason)

    @property
    def mappings(self) -> list[Mapping]:
        """The mappings this client made and has not deleted."""
        return list(self._held.values())

    # Discovery

    def discover(self) -> Deferred[Device]:
        """The device, found by SSDP and its description unless already known."""
        if self.device is not None and not self._stale:
            return succeed(self.device)
        return self._shared_discovery()

    def rediscover(self) -> Deferred[Device]:
        """Search again even if a device is known; observers hear of a restart it reveals."""
        self._stale = True
        return self._shared_discovery()

    def _shared_discovery(self) -> Deferred[Device]:
        def withdraw(cancelled: Deferred[Device]) -> None:
            """Nobody waits any more: stop searching (its timer and socket go too)."""
            if cancelled in self._waiting:
                self._waiting.remove(cancelled)
            if not self._waiting and self._discovery is not None:
                self._discovery.cancel()

        waiter: Deferred[Device] = Deferred(withdraw)
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            discovery: Deferred[Any] = Deferred.fromCoroutine(self._discover())
            self._discovery = discovery
            discovery.addBoth(self._discovered)
        return waiter

    def _discovered(self, result: Device | Failure) -> None:
        self._discovery = None
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if waiter.called:
                continue
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _discover(self) -> Device:
        answer = await self._search()
        status, data = await fetch(self._agent, self._reactor, b"GET", answer.location,
                                   limit=MAX_DESCRIPTION, timeout=self.timeout)
        if status != 200:
            raise IGDUnreachable(answer.location, f"HTTP status {status}")
        service = choose_service(parse_description(data, answer.location))
        if service is None:
            raise DecodeError(f"{answer.location} describes no WANIPConnection or "
                              "WANPPPConnection service")
        try:
            outputs = await self._post(soap.get_external_ip_address(service.service_type),
                                       service)
            external: str | None = _usable_address(outputs.get("NewExternalIPAddress", ""))
        except (UPnPFault, DecodeError, IGDUnreachable) as error:
            self.log.info("The IGD did not tell its external address: {error}", error=error)
            external = None
        device = Device(answer.location, answer.boot_id, answer.server, service, external)
        previous, self.device, self._stale = self.device, device, False
        if previous is None:
            self.log.info("Found a UPnP-IGD at {location} ({service})", location=device.location,
                          service=service.service_type)
        elif previous.boot_id is not None and device.boot_id != previous.boot_id:
            self._restarted(f"BOOTID {previous.boot_id} became {device.boot_id}")
        elif previous.location != device.location:
            self._restarted(f"description moved from {previous.location} to {device.location}")
        return device

    async def _search(self) -> SearchAnswer:
        found: Deferred[SearchAnswer] = Deferred()

        def answered(answer: SearchAnswer) -> None:
            self.last_heard = self._reactor.seconds()
            if not found.called:
                found.callback(answer)

        search = _Search(self.gateway.host, answered)
        port = self._reactor.listenUDP(0, search)
        started = self._reactor.seconds()
        attempts = 0
        timer: IDelayedCall | None = None

        def send() -> None:
            nonlocal attempts, timer
            attempt, attempts = attempts, attempts + 1
            host = self.gateway.host
            search.send(encode_search(IGD_SEARCH_TARGET, 1, f"{host}:{self.gateway.port}"),
                        (host, self.gateway.port))
            if self.multicast:
                search.send(encode_search(IGD_SEARCH_TARGET, 1), (SSDP_GROUP, SSDP_PORT))
            wait = self.search_schedule.wait_after(attempt)
            last = attempts >= self.search_schedule.attempts
            timer = self._reactor.callLater(wait, give_up if last else send)

        def give_up() -> None:
            if not found.called:
                found.errback(IGDNotFound(self.gateway, attempts,
                                          self._reactor.seconds() - started))

        send()
        try:
            return await found
        finally:
            if timer is not None and timer.active():
                timer.cancel()
            port.stopListening()

    # Requests

    def get_external_address(self) -> Deferred[ExternalAddress]:
        """The device's external IPv4 address (C{"0.0.0.0"} when it has none usable); epoch 0."""
        return Deferred.fromCoroutine(self._external_address())

    async def _external_address(self) -> ExternalAddress:
        outputs = await self._call(lambda s: soap.get_external_ip_address(s.service_type))
        return ExternalAddress(_usable_address(outputs.get("NewExternalIPAddress", ""))
                               or "0.0.0.0", 0)

    def map_port(self, protocol: str, internal_port: int, external_port: int = 0,
                 lifetime: int = DEFAULT_LIFETIME) -> Deferred[Mapping]:
        """
        Create a mapping to this host's C{internal_port}.  IGD:2 devices pick a free external
        port (AddAnyPortMapping) near C{external_port}; IGD:1 devices take the port suggested
        (C{internal_port} when 0), and on a conflict (718) another one is tried.

        The lease asked for is C{lifetime}, at most 604800 s.  A router that accepts only
        permanent leases (725, or 402 to a finite one) gets lease 0; the returned mapping's
        lifetime is then still C{lifetime}, the time by which to renew it, and the mapping must
        be deleted with L{unmap_port}.

        @raise ValueError: for a protocol other than C{"tcp"}/C{"udp"}, a port outside
            1-65535 (0 for C{external_port}: any) or a lifetime outside 1-4294967295.
        """
        checked = check_protocol(protocol)
        _check_port(internal_port, "internal port", 1)
        _check_port(external_port, "external port", 0)
        if not isinstance(lifetime, int) or not 1 <= lifetime <= MAX_LIFETIME:
            raise ValueError(f"lifetime must be from 1 to {MAX_LIFETIME}, not {lifetime!r}; "
                             "use unmap_port to delete")
        return Deferred.fromCoroutine(
            self._map(checked, internal_port, external_port, lifetime, renewal=False))

    def renew(self, mapping: Mapping, lifetime: int | None = None) -> Deferred[Mapping]:
        """
        Add C{mapping} again on its external port, for C{lifetime} (by default the one it was
        made with).  If the port was taken meanwhile, another is found as by L{map_port}.
        """
        key = (mapping.protocol, mapping.internal_port)
        if lifetime is None:
            lifetime = self._wanted_lifetime.get(key, mapping.lifetime or DEFAULT_LIFETIME)
        return Deferred.fromCoroutine(self._map(
            mapping.protocol, mapping.internal_port, mapping.external_port, lifetime,
            renewal=True))

    async def _map(self, protocol: Protocol, internal: int, external: int, lifetime: int,
                   renewal: bool) -> Mapping:
        device = await self.discover()
        client = self._client_address()
        port = external if renewal else self._suggest(protocol, internal, external)
        tries = 0
        while True:
            lease = 0 if self._permanent_only else min(lifetime, MAX_LEASE)
            any_port = (device.service.version >= 2 and not self._no_add_any and not renewal)
            make = soap.add_any_port_mapping if any_port else soap.add_port_mapping
            try:
                outputs = await self._call(lambda s: make(
                    s.service_type, protocol, port, internal, client, lease, self.description))
            except UPnPFault as fault:
                if fault.code in (725, 402) and lease != 0:
                    self.log.info("The IGD refused lease {lease} ({code}): asking for a "
                                  "permanent one, renewed and deleted all the same",
                                  lease=lease, code=fault.code)
                    self._permanent_only = True
                    continue
                if fault.code == 401 and any_port:
                    self.log.info("The IGD does not know AddAnyPortMapping: using "
                                  "AddPortMapping")
                    self._no_add_any = True
                    continue
                raise
            except PortConflict:
                tries += 1
                if tries >= CONFLICT_TRIES:
                    raise
                port = self._random_port(protocol)
                renewal = False  # the old port is gone: let an IGD:2 pick
                continue
            device = self.device or device
            if any_port:
                port = _reserved_port(outputs.get("NewReservedPort", ""))
            break
        mapping = Mapping(protocol, internal, port, lease if lease else lifetime, 0, "upnp",
                          device.external_address)
        key = (protocol, internal)
        self._held[key] = mapping
        self._wanted_lifetime[key] = lifetime
        return mapping

    def check(self, mapping: Mapping) -> Deferred[bool]:
        """
        Whether the device still holds C{mapping} (GetSpecificPortMappingEntry).  A vanished
        mapping is reported to the restart observers, and C{False} returned.
        """
        return Deferred.fromCoroutine(self._check(mapping))

    async def _check(self, mapping: Mapping) -> bool:
        try:
            outputs = await self._call(lambda s: soap.get_specific_port_mapping_entry(
                s.service_type, mapping.protocol, mapping.external_port))
        except UPnPFault as fault:
            if fault.code != 714:
                raise
            self._restarted(f"mapping {mapping.protocol} {mapping.external_port} vanished")
            return False
        return outputs.get("NewInternalPort") == str(mapping.internal_port)

    def unmap_port(self, mapping: Mapping) -> Deferred[Mapping]:
        """
        Delete C{mapping} (DeletePortMapping); one the device no longer has (714) counts as
        deleted.  Returns the mapping with external port and lifetime 0.
        """
        return Deferred.fromCoroutine(self._unmap(mapping))

    async def _unmap(self, mapping: Mapping) -> Mapping:
        key = (mapping.protocol, mapping.internal_port)
        try:
            await self._call(lambda s: soap.delete_port_mapping(
                s.service_type, mapping.protocol, mapping.external_port))
        except UPnPFault as fault:
            if fault.code != 714:
                raise
        held = self._held.get(key)
        if held is not None and held.external_port == mapping.external_port:
            del self._held[key]
            self._wanted_lifetime.pop(key, None)
        return attrs.evolve(mapping, external_port=0, lifetime=0)

    def reestablish(self) -> Deferred[list[Mapping]]:
        """Discover the device again and add every mapping this client holds once more."""
        return Deferred.fromCoroutine(self._reestablish())

    async def _reestablish(self) -> list[Mapping]:
        await self.rediscover()
        return [await self._map(m.protocol, m.internal_port, m.external_port,
                                self._wanted_lifetime.get(key, m.lifetime), renewal=True)
                for key, m in list(self._held.items())]

    # Plumbing

    async def _call(self, make: Callable[[Service], soap.Action]) -> dict[str, str]:
        """
        Run the action C{make} builds for the device's service.  If the device stops answering
        HTTP, discover it again, and if it moved or restarted, run the action there once.
        """
        device = await self.discover()
        try:
            return await self._post(make(device.service), device.service)
        except IGDUnreachable:
            moved = await self.rediscover()
            if (moved.location, moved.boot_id) == (device.location, device.boot_id):
                raise
            return await self._post(make(moved.service), moved.service)

    async def _post(self, action: soap.Action, service: Service) -> dict[str, str]:
        status, data = await fetch(
            self._agent, self._reactor, b"POST", service.control_url,
            limit=soap.MAX_RESPONSE, timeout=self.timeout,
            headers={b"Content-Type": b'text/xml; charset="utf-8"',
                     b"SOAPAction": action.soap_action.encode("ascii")},
            body=action.encode(),
        )
        self.last_heard = self._reactor.seconds()  # any HTTP answer: the device is there
        return soap.decode_response(status, data, action)

    def _client_address(self) -> str:
        """This host's address toward the gateway: a UDP connect() sends nothing."""
        if self._internal_client is None:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.connect((self.gateway.host, self.gateway.port))
                self._internal_client = str(probe.getsockname()[0])
            except OSError as error:
                raise IGDUnreachable(self.gateway.host, f"no route: {error}") from None
            finally:
                probe.close()
        return self._internal_client

    def _taken_by_us(self, protocol: str, external: int, internal: int) -> bool:
        """Whether another of our mappings holds C{external}: adding there would replace it."""
        return any(m.protocol == protocol and m.external_port == external
                   and m.internal_port != internal for m in self._held.values())

    def _suggest(self, protocol: str, internal: int, external: int) -> int:
        port = external or (internal if internal >= _FIRST_UNPRIVILEGED else 0)
        if not port or self._taken_by_us(protocol, port, internal):
            port = self._random_port(protocol)
        return port

    def _random_port(self, protocol: str) -> int:
        while True:
            port = self._random.randint(_FIRST_UNPRIVILEGED, 0xFFFF)
            if not any(m.protocol == protocol and m.external_port == port
                       for m in self._held.values()):
                return port


def _check_port(port: int, what: str, low: int) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not low <= port <= 0xFFFF:
        raise ValueError(f"{what} must be from {low} to 65535, not {port!r}")


def _reserved_port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 0xFFFF):
        raise DecodeError(f"AddAnyPortMapping answered NewReservedPort {text[:10]!r}")
    return int(text)


def _usable_address(text: str) -> str | None:
    """C{text} if it is an IPv4 address that can be external: not 0.0.0.0, loopback or multicast."""
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        return None
    if address.is_unspecified or address.is_loopback or address.is_multicast:
        return None
    return str(address)
