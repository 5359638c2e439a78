"""
L{PCPClient}: a PCP (RFC 6887) client as a Twisted C{DatagramProtocol}, talking to one server.
"""

from __future__ import annotations

import ipaddress
import random
import secrets
import socket
from typing import Any, Callable, Literal, Union

from attrs import evolve
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP
from twisted.logger import Logger

from .._errors import (
    DecodeError,
    GatewayTimeout,
    OutOfResources,
    ResultError,
    UnsupportedVersion,
    pcp_error_for_result,
)
from .._exchanges import Exchange, ExchangeQueue
from .._reactor import global_reactor
from .._results import Mapping
from .._source import check_assigned, global_address_toward, is_global_unicast
from .._source import source_address_toward as _source_toward
from .._spec import DEFAULT_LIFETIME, Gateway
from .._wire import check_protocol
from .epoch import PCPEpochTracker
from .schedule import RFC_PCP_SCHEDULE, PCPSchedule
from .wire import (
    CANNOT_PROVIDE_EXTERNAL,
    NATPMP_VERSION,
    NO_RESOURCES,
    PROTOCOL_NAMES,
    PROTOCOL_NUMBERS,
    SERVER_PORT,
    SHORT_ERRORS,
    AnnounceRequest,
    AnnounceResponse,
    MapRequest,
    MapResponse,
    Response,
    VersionRejected,
    decode_response,
    encode,
    unspecified_address,
)

#: Requested lifetimes are capped here: a server may wrap larger ones (P26).
MAX_REQUESTED_LIFETIME = 7 * 86400
#: Granted lifetimes are reported at most this long, so renewals stay timely (P26, P50).
MAX_REPORTED_LIFETIME = 86400
#: The client's own floors under an error's lifetime (P13), and the cap on any hold (P50).
SHORT_ERROR_HOLD = 30.0
LONG_ERROR_HOLD = 1800.0
MAX_ERROR_HOLD = 1800.0

Kind = Literal["announce", "create", "renew", "delete"]
Template = Union[AnnounceRequest, MapRequest]
MappingUpdateObserver = Callable[[Mapping, Union[Mapping, None]], None]
AnnounceObserver = Callable[[int], None]
SourceObserver = Callable[[str, str], None]

#: Stands in for the client address in a request template; the real one is filled in on sending.
_PLACEHOLDER = "::"


class _Exchange(Exchange):
    """One PCP request and its transmissions, from queueing to its answer."""

    __slots__ = ("kind", "template", "data", "sent", "wait", "schedule")

    def __init__(self, kind: Kind, template: Template, schedule: PCPSchedule,
                 withdraw: Callable[[_Exchange], None]) -> None:
        super().__init__(withdraw)
        self.kind = kind
        self.schedule = schedule
        self.template = template  # the request without its client address
        self.data: bytes | None = None  # built at the first transmission, then sent unchanged
        self.sent = 0
        self.wait: float | None = None  # the last RT drawn

    def answered_by(self, response: Response) -> bool:
        """Whether C{response} answers this request (P24)."""
        if isinstance(response, VersionRejected):
            return True  # it names no request: with one in flight, it is that one's (P41)
        if isinstance(response, AnnounceResponse):
            return self.kind == "announce"
        if not isinstance(response, MapResponse) or not isinstance(self.template, MapRequest):
            return False
        request = self.template
        if (response.nonce, response.protocol, response.internal_port) != (
                request.nonce, request.protocol, request.internal_port):
            return False
        # A success with lifetime 0 is a late answer to a delete, never a create's answer.
        return self.kind == "delete" or response.result != 0 or response.lifetime > 0


def _check_server(host: str, port: int) -> Gateway:
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except (ValueError, AttributeError):
        raise ValueError(f"PCP server must be an IP address, not {host!r}") from None
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 0xFFFF:
        raise ValueError(f"PCP server port must be from 1 to 65535, not {port!r}")
    return Gateway(str(address), port)


def _scope_of(host: str, scope_id: int) -> int:
    """
    The interface index for a link-local server: C{scope_id} when given, else from the
    C{%zone} of C{fe80::1%eth0} (a name or an index); 0 for any other server.

    @raise ValueError: for a link-local server on no known interface.
    """
    address, _, zone = host.partition("%")
    if not (":" in address and ipaddress.IPv6Address(address).is_link_local):
        return 0
    if scope_id:
        return scope_id
    try:
        index = int(zone) if zone.isdigit() else socket.if_nametoindex(zone) if zone else 0
    except OSError:
        index = 0
    if not index:
        raise ValueError(f"a link-local PCP server needs its interface, as in fe80::1%eth0, "
                         f"not {host!r}")
    return index


def _zoned(address: str, given: str, scope_id: int) -> str:
    """
    C{address} with the zone requests really go out on, for a link-local server: the zone as
    given (C{fe80::1%eth0}) when it names C{scope_id}, else that interface's name, else its
    index.
    """
    if not scope_id:
        return address
    zone = given.partition("%")[2]
    try:
        if zone and _scope_of(given, 0) == scope_id:
            return f"{address}%{zone}"
    except ValueError:
        pass  # a zone that names no interface: the scope id says which
    try:
        return f"{address}%{socket.if_indextoname(scope_id)}"
    except OSError:
        return f"{address}%{scope_id}"


def source_address_toward(server: Gateway) -> str:
    """
    The address the kernel sends from toward C{server} (P06): a throwaway UDP socket is
    connected (which sends nothing) and asked its name.

    @raise OSError: when there is no route.
    """
    return _source_toward((server.host, server.port))


class PCPClient(ExchangeQueue[_Exchange]):
    """
    Talks PCP to one server.

    Start it with C{reactor.listenUDP(0, client)} (C{interface="::"} for an IPv6 server).
    Requests made before it listens wait in the queue.  Requests go out one at a time in the
    order they were made (P41), each retransmitted on C{schedule} (P39) until answered.  Every
    request method returns a C{Deferred}; cancelling it withdraws the request.

    The client keeps one nonce per (protocol, internal port), drawn on first use and reused for
    every retransmission, renewal and delete of that mapping (P22).  After an error it does not
    send the same request again within the error's lifetime, floored at 30 s or 30 min (P13);
    such a request fails at once with the same error.  A new epoch or L{clear_holds} lifts that.

    @ivar epoch: The server's L{PCPEpochTracker}: add an observer to learn when it lost state.
    @ivar last_heard: The clock's time of the last well-formed datagram from the server, or
        C{None}.
    """

    log = Logger()
    _peer_field = "server"

    def __init__(
        self,
        server: str,
        server_port: int = SERVER_PORT,
        reactor: IReactorTime | None = None,
        *,
        schedule: PCPSchedule = RFC_PCP_SCHEDULE,
        client_address: str | None = None,
        rng: random.Random | None = None,
        scope_id: int = 0,
    ) -> None:
        """
        @param server: The PCP server's IP address: the default router, usually.
        @param server_port: Its port; tests use a FakeGateway's.
        @param reactor: Provides the clock; the global reactor by default.
        @param schedule: When to retransmit and when, if ever, to give up.
        @param client_address: The address written in requests; by default the source address
            toward the server, looked up for each request.
        @param rng: Draws the retransmission jitter (nonces always come from L{secrets}).
        @param scope_id: The interface index of a link-local IPv6 server; by default from the
            C{%zone} in C{server} (C{fe80::1%eth0}), as L{Router6.host} writes it.
        """
        self.server = _check_server(server, server_port)
        self.scope_id = _scope_of(server, scope_id)
        #: Where requests go: a 4-tuple with the scope id for a link-local server (P47).
        self.destination: tuple[str, int] | tuple[str, int, int, int] = (
            (self.server.host, self.server.port, 0, self.scope_id) if self.scope_id
            else self.server)
        self.family = 6 if ":" in self.server.host else 4
        if client_address is not None:
            client_address = str(ipaddress.ip_address(client_address))
        self._client_address = client_address
        if reactor is None:
            reactor = global_reactor()
        #: The server as the log names it: with its zone when link-local (fe80::1%eth0), since
        #: every interface has its own fe80::1.
        self.host = _zoned(self.server.host, server, self.scope_id)
        super().__init__(reactor, "server", str(Gateway(self.host, self.server.port)))
        self.schedule = schedule
        self._rng = rng if rng is not None else random.Random()
        self.epoch = PCPEpochTracker(reactor.seconds)
        self.epoch.add_observer(self._server_lost_state)
        self._nonces: dict[tuple[str, int], bytes] = {}
        self._lifetimes: dict[tuple[str, int], int] = {}
        self._mappings: dict[tuple[str, int], Mapping] = {}
        self._holds: dict[Template, tuple[float, ResultError]] = {}
        self._no_new_mappings: tuple[float, ResultError] | None = None
        self._update_observers: list[MappingUpdateObserver] = []
        self._announce_observers: list[AnnounceObserver] = []
        self._source_observers: list[SourceObserver] = []
        self._last_source: str | None = None
        self._listener: tuple[IReactorUDP, IListeningPort] | None = None
        self._rebinding = False
        self._lookup_failing = False

    def __repr__(self) -> str:
        return f"<PCPClient for {self._peer_name}>"

    @property
    def window(self) -> int:
        """
        How many requests may be in flight at once (P41): 1 while the server's version is
        unknown (a version-0 reply names no request); more is safe once it speaks PCP.  Raising
        it sends waiting requests at once.
        """
        return self._window

    @window.setter
    def window(self, size: int) -> None:
        _check_range("window", size, 1, 0xFFFF)
        self._window = size
        self._send_next()

    # Public requests

    def announce(self, *, schedule: PCPSchedule | None = None) -> Deferred[int]:
        """
        Send a solicited ANNOUNCE (P33): fires with the server's epoch, or fails with
        L{UnsupportedVersion} (C{server_version} 0 for a NAT-PMP-only server).

        @param schedule: Retransmissions for this request instead of the client's (as for
            every request below).
        """
        return self._submit("announce", AnnounceRequest(_PLACEHOLDER), schedule)

    def map_port(
        self, protocol: str, internal_port: int, external_port: int = 0,
        lifetime: int = DEFAULT_LIFETIME, *, schedule: PCPSchedule | None = None,
    ) -> Deferred[Mapping]:
        """
        Create a mapping.  C{external_port} is only a suggestion (0 for any); the server decides
        the port, address and lifetime: use the returned L{Mapping}'s.  Lifetimes above a week
        are asked as a week (P26).

        @raise ValueError: for a protocol other than C{"tcp"}/C{"udp"}, an internal port
            outside 1-65535, an external port outside 0-65535 or a lifetime outside
            1-4294967295; nothing is sent.
        """
        key = self._key(protocol, internal_port)
        _check_range("external port", external_port, 0, 0xFFFF)
        _check_range("lifetime", lifetime, 1, 0xFFFFFFFF)
        lifetime = min(lifetime, MAX_REQUESTED_LIFETIME)
        if self._no_new_mappings is not None:
            until, error = self._no_new_mappings
            if self._clock.seconds() < until:
                return self._refused(error, until)
            self._no_new_mappings = None
        nonce = self._nonces.setdefault(key, secrets.token_bytes(12))
        self._lifetimes[key] = lifetime
        if self.family == 6 and not external_port:
            # A pinhole's port is the internal port (P48); miniupnpd echoes a suggested 0.
            external_port = internal_port
        template = MapRequest(nonce, PROTOCOL_NUMBERS[key[0]], internal_port, external_port,
                              unspecified_address(self.server.host), lifetime, _PLACEHOLDER)
        return self._submit("create", template, schedule)

    def renew(self, mapping: Mapping, lifetime: int | None = None, *,
              schedule: PCPSchedule | None = None) -> Deferred[Mapping]:
        """
        Renew C{mapping}, or create it again after the server lost it: the same MAP each time,
        with the mapping's nonce, suggesting its assigned port and address (P23, P27, P38).

        @param lifetime: Asked for; by default what C{map_port} asked for.
        @raise ValueError: if C{mapping} has no PCP nonce.
        """
        key = self._key(mapping.protocol, mapping.internal_port)
        nonce = self._nonce_of(mapping)
        self.check_source()
        if lifetime is None:
            lifetime = self._lifetimes.get(key, DEFAULT_LIFETIME)
        _check_range("lifetime", lifetime, 1, 0xFFFFFFFF)
        address = mapping.external_address or unspecified_address(self.server.host)
        template = MapRequest(nonce, PROTOCOL_NUMBERS[key[0]], mapping.internal_port,
                              mapping.external_port, address,
                              min(lifetime, MAX_REQUESTED_LIFETIME), _PLACEHOLDER)
        return self._submit("renew", template, schedule)

    def unmap_port(self, mapping: Mapping, *,
                   schedule: PCPSchedule | None = None) -> Deferred[Mapping]:
        """
        Delete C{mapping} with its nonce (P29): suggested port 0, all-zero address, lifetime 0.
        A L{Mapping} rebuilt from a stored nonce works too.  Fires with the mapping as the
        server left it: lifetime 0, or more if it keeps a busy mapping alive.

        @raise ValueError: if neither C{mapping} nor this client knows its nonce.
        """
        key = self._key(mapping.protocol, mapping.internal_port)
        nonce = mapping.nonce if mapping.nonce is not None else self._nonces.get(key)
        if nonce is None:
            raise ValueError(f"no PCP nonce is known for {mapping.protocol}:"
                             f"{mapping.internal_port}, so it cannot be deleted")
        template = MapRequest(nonce, PROTOCOL_NUMBERS[key[0]], mapping.internal_port, 0,
                              unspecified_address(self.server.host), 0, _PLACEHOLDER)
        return self._submit("delete", template, schedule)

    @property
    def mappings(self) -> list[Mapping]:
        """The mappings the server granted this client, as last answered."""
        return list(self._mappings.values())

    def forget(self, protocol: str, internal_port: int) -> None:
        """Stop listing a mapping in L{mappings}: its owner let it go (it ends by itself)."""
        self._mappings.pop((protocol, internal_port), None)

    def nonce_for(self, protocol: str, internal_port: int) -> bytes | None:
        """The nonce this client uses for C{protocol}/C{internal_port}, if it drew one."""
        return self._nonces.get((protocol, internal_port))

    # IPv6: listening, the source address and its changes (P08)

    def bind_address(self) -> str:
        """
        The address to listen on: C{""} for an IPv4 server; for a link-local IPv6 server this
        host's global address, so that requests leave from it and the pinhole is for it (P08:
        toward a link-local address the kernel picks a link-local source); for a global IPv6
        server C{"::"} when the kernel's source toward it is global, else the global address.

        @raise NoGlobalAddress: (a C{ValueError}) for an IPv6 server when this host has no
            global address.
        """
        if self.family == 4:
            return ""
        if self._client_address is not None:
            return self._client_address if self.scope_id else "::"
        if not self.scope_id:
            try:
                if is_global_unicast(_source_toward(self.destination)):
                    return "::"
            except OSError:
                pass
        return global_address_toward(self.destination)

    def listen(self, reactor: IReactorUDP | None = None) -> IListeningPort:
        """
        Start listening on L{bind_address}, port 0: the way to start a client for an IPv6
        server (C{reactor.listenUDP(0, client)} remains fine for IPv4).  A client started so
        rebinds by itself when L{check_source} finds that its global address changed.

        @raise NoGlobalAddress: see L{bind_address}.
        """
        interface = self.bind_address()
        if reactor is None:
            reactor = global_reactor()
        assert reactor is not None
        port = reactor.listenUDP(0, self, interface=interface, maxPacketSize=8192)
        self._listener = (reactor, port)
        return port

    @property
    def source_address(self) -> str:
        """
        The client address requests carry now (P06, P08), looked up afresh: the configured
        one, the address the socket is bound to, or the kernel's source toward the server.

        @raise OSError: when there is no route to the server.
        """
        if self._client_address is not None:
            return self._client_address
        if self.transport is not None:  # a socket bound to one address sends from it
            bound = str(self.transport.getHost().host).partition("%")[0]
            if bound not in ("", "::", "0.0.0.0"):
                return bound
        return _source_toward(self.destination)

    def add_source_observer(self, observer: SourceObserver) -> None:
        """
        Call C{observer(old, new)} when L{check_source} finds that the client address changed
        (an IPv6 privacy address rotated, the host moved): the mappings made from C{old} belong
        to it (P08), so map again from C{new}; the old ones cannot be deleted from C{new} and
        lapse at their lifetime.
        """
        self._source_observers.append(observer)

    def remove_source_observer(self, observer: SourceObserver) -> None:
        """Stop calling an observer added with L{add_source_observer}."""
        self._source_observers.remove(observer)

    def check_source(self) -> str | None:
        """
        Look whether the client's address changed since its last request; L{renew} calls this
        before each renewal, and a service may call it on a network change.  For an IPv6 server
        the wanted address is this host's current global one: a client bound to an old one
        (started with L{listen}) listens again on the new one, keeping its queue.

        @return: The new address when it changed (after telling the source observers), else
            C{None}.
        """
        old = self._last_source
        if old is None or self._client_address is not None:
            return None
        try:
            if self.family == 6 and self._listener is not None and self.scope_id:
                new = global_address_toward(self.destination)
            else:
                new = self.source_address
        except (OSError, ValueError) as error:
            if not self._lookup_failing:  # said once until it works again
                self._lookup_failing = True
                self.log.warn("Could not look up this host's address toward {server}: {error}",
                              server=self.host, error=error)
            return None
        if self._lookup_failing:
            self._lookup_failing = False
            self.log.info("This host has an address toward {server} again: {address}",
                          server=self.host, address=new)
        if new == old:
            return None
        self.log.debug("The address toward {server} changed from {old} to {new}",
                       server=self.host, old=old, new=new)
        self._last_source = new
        for exchange in self._inflight:
            exchange.data = None  # rebuilt with the new address at its next transmission
        if self._listener is not None and self.bind_address() not in ("", "::"):
            self._rebind()
        for observer in list(self._source_observers):
            try:
                observer(old, new)
            except Exception:
                self.log.failure("A source address observer failed")
        return new

    def _rebind(self) -> None:
        """Listen again on the current L{bind_address}, keeping the queue and the timers."""
        assert self._listener is not None
        reactor, port = self._listener
        self._rebinding = True
        self._listener = None

        def listen_again(_: object) -> None:
            self._rebinding = False
            stranded = list(self._inflight)  # their last transmissions left from the old address
            try:
                self.listen(reactor)  # which sends those that waited meanwhile
            except (OSError, ValueError) as error:
                self.log.warn("Could not listen again: {error}", error=error)
                self.stopProtocol()
                return
            for exchange in stranded:
                if exchange in self._inflight:
                    self._stop_timer(exchange)
                    exchange.data = None
                    self._transmit(exchange)
            self._send_next()

        stopped = port.stopListening()
        if stopped is None:
            listen_again(None)
        else:
            stopped.addBoth(listen_again)

    def clear_holds(self) -> None:
        """Forget every error hold (P13): a user asked again, or the network changed."""
        self._holds.clear()
        self._no_new_mappings = None

    # Unsolicited news

    def add_update_observer(self, observer: MappingUpdateObserver) -> None:
        """
        Call C{observer(previous, current)} on a Mapping Update from the server (P35):
        C{current} is the mapping with its new port or address, or C{None} when the server
        says it can no longer provide it.
        """
        self._update_observers.append(observer)

    def remove_update_observer(self, observer: MappingUpdateObserver) -> None:
        """Stop calling an observer added with L{add_update_observer}."""
        self._update_observers.remove(observer)

    def add_announce_observer(self, observer: AnnounceObserver) -> None:
        """Call C{observer(epoch)} for each unsolicited ANNOUNCE from the server (P34)."""
        self._announce_observers.append(observer)

    def remove_announce_observer(self, observer: AnnounceObserver) -> None:
        """Stop calling an observer added with L{add_announce_observer}."""
        self._announce_observers.remove(observer)

    def observe_announce(self, epoch: int) -> bool:
        """
        Take an unsolicited ANNOUNCE from the server, heard here or by a multicast listener on
        224.0.0.1:5350 (P34): check its epoch, then tell the announce observers.

        @return: Whether the epoch shows the server lost its state.
        """
        lost = self.epoch.observe(epoch)
        for observer in list(self._announce_observers):
            observer(epoch)
        return lost

    # DatagramProtocol

    def stopProtocol(self) -> None:
        if self._rebinding:  # listening again elsewhere (check_source): keep everything
            return
        super().stopProtocol()

    # The queue

    def _key(self, protocol: str, internal_port: int) -> tuple[str, int]:
        _check_range("internal port", internal_port, 1, 0xFFFF)
        return (check_protocol(protocol), internal_port)

    def _nonce_of(self, mapping: Mapping) -> bytes:
        if mapping.nonce is None or len(mapping.nonce) != 12:
            raise ValueError(f"{mapping} carries no PCP nonce")
        return mapping.nonce

    def _refused(self, error: ResultError, until: float) -> Deferred[Any]:
        error.retry_after = max(0.0, until - self._clock.seconds())
        return fail(error)

    def _submit(self, kind: Kind, template: Template,
                schedule: PCPSchedule | None = None) -> Deferred[Any]:
        held = self._holds.get(template)
        if held is not None:
            if self._clock.seconds() < held[0]:
                return self._refused(held[1], held[0])
            del self._holds[template]
        return self._enqueue(_Exchange(kind, template, schedule or self.schedule,
                                       self._withdraw))

    def _may_send(self) -> bool:
        return self.transport is not None and not self._rebinding  # see check_source

    def _transmit(self, exchange: _Exchange) -> None:
        exchange.wait = exchange.schedule.next_wait(exchange.wait, self._rng)
        elapsed = self._clock.seconds() - exchange.started
        exchange.sent += 1
        # The timer first: a transport may deliver the answer before write() returns.
        exchange.timer = self._clock.callLater(
            exchange.schedule.cut(exchange.wait, elapsed), self._no_answer, exchange)
        self._send(exchange)  # an OSError is a lost transmission (P39)

    def _write(self, exchange: _Exchange) -> None:
        if self.transport is None or self._rebinding:  # see check_source
            raise OSError("listening again on a new address")
        if exchange.data is None:
            source = self.source_address  # no route: an OSError, a lost transmission too
            self._last_source = source
            exchange.data = encode(evolve(exchange.template, client_address=source))
        if self.family == 6:  # Linux drops static IPv6 addresses when a link goes down
            bound = str(self.transport.getHost().host).partition("%")[0]
            if bound != "::":
                check_assigned(bound)  # bound to an address this host lost: a lost transmission
        self.transport.write(exchange.data, self.destination)  # type: ignore[arg-type]

    def _no_answer(self, exchange: _Exchange) -> None:
        exchange.timer = None
        waited = self._clock.seconds() - exchange.started
        if exchange.schedule.exhausted(exchange.sent, waited):
            self._finish(exchange, GatewayTimeout(
                Gateway(self.host, self.server.port), exchange.sent, waited, "PCP", last_heard=self._silence(),
                send_error=exchange.send_error))
            return
        self.log.info(
            "no answer from {host} yet, retrying, attempt {attempt}",
            host=self.host, attempt=exchange.sent + 1, request=exchange.template,
            retransmit=True,
        )
        self._transmit(exchange)

    # Responses

    def _receive(self, data: bytes, source: Any) -> None:
        if (str(source[0]).partition("%")[0], source[1]) != self.server:  # P03
            self.log.debug("Ignored {size} bytes from {source}: not the server", size=len(data),
                           source=source)
            return
        try:
            response = decode_response(data)
        except DecodeError as error:
            self.log.debug("Ignored a malformed datagram from the server: {error}", error=error)
            return
        self.last_heard = self._clock.seconds()
        exchange = next((e for e in self._inflight if e.answered_by(response)), None)
        if exchange is not None:
            self._answer(exchange, response)
        elif isinstance(response, AnnounceResponse) and response.result == 0:
            self.observe_announce(response.epoch)
        elif isinstance(response, MapResponse):
            self._mapping_update(response)
        else:
            self.log.debug("Ignored {response}: it answers no request in flight",
                           response=response)

    def _answer(self, exchange: _Exchange, response: Response) -> None:
        if isinstance(response, VersionRejected):
            self._finish(exchange, self._version_error(exchange, response))
            return
        assert isinstance(response, (AnnounceResponse, MapResponse))
        self.epoch.observe(response.epoch)  # P36: errors and ANNOUNCEs included
        if exchange not in self._inflight:  # an epoch observer withdrew it
            return
        if isinstance(response, AnnounceResponse):
            outcome: object = response.epoch
            if response.result:
                outcome = self._error(exchange, response.result, response.lifetime)
            self._finish(exchange, outcome)
            return
        if response.result == NO_RESOURCES and exchange.kind == "delete":
            # P28: miniupnpd says so for a mapping that does not exist; nothing is held.
            self._mappings.pop(self._response_key(response), None)
            self._finish(exchange, evolve(self._mapping(response), external_port=0, lifetime=0))
            return
        if response.result:
            self._finish(exchange, self._error(exchange, response.result, response.lifetime))
            return
        mapping = self._mapping(response)
        key = self._response_key(response)
        if exchange.kind == "delete":
            self._mappings.pop(key, None)
            if mapping.lifetime == 0:
                mapping = evolve(mapping, external_port=0)
        else:
            self._mappings[key] = mapping
            self._nonces[key] = response.nonce
        self._finish(exchange, mapping)

    def _version_error(self, exchange: _Exchange, response: VersionRejected) -> ResultError:
        error = UnsupportedVersion(protocol="pcp", lifetime=response.lifetime,
                                   server_version=response.version)
        if response.version == NATPMP_VERSION:
            self.log.info("{host} speaks NAT-PMP only", host=self.host)
        else:  # P42: no version left to try
            self.log.warn("{host} speaks PCP version {version} only; will not ask again "
                          "for 30 minutes", host=self.host, version=response.version)
            self._hold(exchange, error, LONG_ERROR_HOLD)
        return error

    def _error(self, exchange: _Exchange, result: int, lifetime: int) -> ResultError:
        error = pcp_error_for_result(result, lifetime)
        floor = SHORT_ERROR_HOLD if result in SHORT_ERRORS else LONG_ERROR_HOLD
        until = self._hold(exchange, error, max(float(lifetime), floor))
        if result == NO_RESOURCES and exchange.kind != "announce":
            self._no_new_mappings = (until, OutOfResources(result, protocol="pcp",
                                                           lifetime=lifetime))
        return error

    def _hold(self, exchange: _Exchange, error: ResultError, seconds: float) -> float:
        """Refuse to send C{exchange}'s request again for C{seconds}, capped (P13, P50)."""
        seconds = min(seconds, MAX_ERROR_HOLD)
        error.retry_after = seconds
        until = self._clock.seconds() + seconds
        self._holds[exchange.template] = (until, error)
        return until

    def _mapping(self, response: MapResponse) -> Mapping:
        protocol = PROTOCOL_NAMES[response.protocol]
        external_port = response.external_port
        if self.family == 6 and not external_port and response.lifetime:
            # A pinhole is the internal port (P48); miniupnpd 2.3.1 answers a MAP for a pinhole
            # that exists already (another nonce's) with the suggested port, 0 if none.
            external_port = response.internal_port
        return Mapping(
            protocol,  # type: ignore[arg-type]
            response.internal_port,
            external_port,
            min(response.lifetime, MAX_REPORTED_LIFETIME),
            response.epoch,
            method="pcp",
            external_address=response.external_address,
            nonce=response.nonce,
        )

    @staticmethod
    def _response_key(response: MapResponse) -> tuple[str, int]:
        return (PROTOCOL_NAMES[response.protocol], response.internal_port)

    def _mapping_update(self, response: MapResponse) -> None:
        """An unsolicited MAP response: a Mapping Update if it matches a live mapping (P35)."""
        key = (PROTOCOL_NAMES.get(response.protocol, "?"), response.internal_port)
        previous = self._mappings.get(key)
        if previous is None or previous.nonce != response.nonce:
            self.log.debug("Ignored {response}: it matches no mapping", response=response)
            return
        current: Mapping | None
        if response.result == 0 and response.lifetime > 0:
            current = self._mapping(response)
            if (current.external_port, current.external_address) == (
                    previous.external_port, previous.external_address):
                self.epoch.observe(response.epoch)
                return  # a duplicate answer, no news
            self._mappings[key] = current
        elif response.result == CANNOT_PROVIDE_EXTERNAL:  # the mapping is lost
            current = None
            del self._mappings[key]
        else:
            self.log.debug("Ignored {response}: no update", response=response)
            return
        self.epoch.observe(response.epoch)
        self.log.info("{host} updated {protocol}:{port}: {current}", host=self.host,
                      protocol=key[0], port=key[1], current=current)
        for observer in list(self._update_observers):
            observer(previous, current)

    def _server_lost_state(self, received: int, expected: float) -> None:
        """A new epoch: what the server refused before may work now (P13)."""
        self.clear_holds()


def _check_range(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
