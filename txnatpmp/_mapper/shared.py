"""
One mapper, so one request queue, per gateway per reactor in a process, chosen by discovery.

Discovery (RFC 6886 section 1.1, RFC 6887 section 9 and appendix A; P42-P46): one PCP
ANNOUNCE to the gateway.  A PCP answer means PCP.  A version-0 "unsupported version" answer
means a NAT-PMP-only server: NAT-PMP, and that verdict is remembered for 30 minutes (or until
L{forget_verdict}: an announcement, a new epoch, a change of network), then PCP is tried again.
No answer at all to the ANNOUNCE within its deadline, where C{"upnp"} is allowed, means: look
for a UPnP-IGD at the gateway's address (L{_upnp}).  With C{"upnp"} alone nothing goes to 5351.
Every front end in the process shares what this module hands out: two endpoints never probe
twice, nor have two requests in flight at one gateway.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Protocol, Sequence, Union
from weakref import WeakKeyDictionary

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._client import NATPMPClient
from .._errors import GatewayTimeout, ResultError, UnsupportedVersion
from .._pcp.client import PCPClient
from .._pcp.schedule import PCPSchedule
from .._schedule import RetransmitSchedule
from .._spec import Gateway, gateway_family
from .._upnp.client import UPnPClient
from .._upnp.ssdp import SSDP_PORT
from .natpmp import NATPMPMapper
from .pcp import PCPMapper
from .upnp import UPnPMapper

Mapper = Union[NATPMPMapper, PCPMapper, UPnPMapper]

#: Every method, in the order C{auto} prefers them.
METHODS = ("pcp", "natpmp", "upnp")
#: The methods a gateway is asked again about, for PCP, once their verdict runs out.
FALLBACKS = ("natpmp", "upnp")
#: How long a NAT-PMP-only verdict stands before PCP is tried again (RFC 6887 section 9).
VERDICT_MEMORY = 1800.0
#: Seconds a UPnP-IGD's answer waits for PCP or NAT-PMP to answer too (they are preferred).
UPNP_GRACE = 0.5
#: The discovery probe: an ANNOUNCE retransmitted after 1 s, given up after 3 s.
PROBE_SCHEDULE = PCPSchedule(initial=1.0, max_duration=3.0)

log = Logger(namespace="txnatpmp._mapper")


class _Closable(Protocol):
    def stopListening(self) -> Any: ...


class _Shared:
    """One protocol client (one request queue) at one gateway, and how many use it."""

    __slots__ = ("gateway", "mapper", "port", "users", "current")

    def __init__(self, gateway: Gateway, mapper: Mapper, port: IListeningPort | _Closable) -> None:
        self.gateway = gateway
        self.mapper = mapper
        self.port = port
        self.users = 0
        self.current = True  # what the next acquire for its gateway and protocol gets

    @property
    def method(self) -> str:
        return self.mapper.method

    def view(self, schedule: RetransmitSchedule) -> Mapper:
        """The mapper a caller gets: the shared client, with the caller's own schedule."""
        if isinstance(self.mapper, NATPMPMapper):
            return NATPMPMapper(self.mapper.client, schedule)
        if isinstance(self.mapper, PCPMapper):
            return PCPMapper(self.mapper.client, gateway=self.gateway)
        return self.mapper


_Key = tuple[Gateway, tuple[str, ...]]
_shared: WeakKeyDictionary[Any, list[_Shared]] = WeakKeyDictionary()
_discovering: WeakKeyDictionary[Any, dict[_Key, list[Deferred[Mapper]]]] = WeakKeyDictionary()
_running: WeakKeyDictionary[Any, dict[_Key, Deferred[_Shared]]] = WeakKeyDictionary()
_verdicts: WeakKeyDictionary[Any, dict[Gateway, float]] = WeakKeyDictionary()
_ssdp_ports: WeakKeyDictionary[Any, dict[str, int]] = WeakKeyDictionary()


def check_methods(methods: Sequence[str] | str) -> tuple[str, ...]:
    """
    The methods to try, in order: C{"auto"} or a sequence of C{"pcp"}, C{"natpmp"}, C{"upnp"}.

    @raise ValueError: for anything else, before anything is sent.
    """
    if isinstance(methods, str):
        methods = METHODS if methods == "auto" else (methods,)
    chosen = tuple(methods)
    unknown = [m for m in chosen if m not in METHODS]
    if not chosen or unknown or len(set(chosen)) != len(chosen):
        raise ValueError(f"methods must be 'auto' or some of {', '.join(METHODS)}, "
                         f"not {methods!r}")
    return tuple(m for m in METHODS if m in chosen)


def acquire_mapper(
    reactor: Any, gateway: Gateway, methods: Sequence[str], schedule: RetransmitSchedule
) -> Deferred[Mapper]:
    """
    The mapper for C{gateway} with the best of C{methods} it speaks; made (and discovered) on
    first use, shared after.  A NAT-PMP mapper whose verdict has run out (or was forgotten) is
    discovered again: PCP may be there now.  Each success must be matched by one
    L{release_mapper}.

    Fails with L{txnatpmp.GatewayTimeout} when the gateway answers no probe.
    """
    key = (gateway, tuple(methods))
    shared = _current(reactor, key)
    if shared is not None and not _worth_asking_again(reactor, key, shared):
        shared.users += 1
        return succeed(shared.view(schedule))
    pending = _discovering.setdefault(reactor, {})
    discoveries = _running.setdefault(reactor, {})

    def withdraw(cancelled: Deferred[Mapper]) -> None:
        """A caller gave up: when nobody waits any more, the discovery stops too."""
        others = pending.get(key, [])
        if cancelled in others:
            others.remove(cancelled)
        if not others and key in discoveries:
            discoveries[key].cancel()

    waiter: Deferred[Mapper] = Deferred(withdraw)
    if key in pending:  # one discovery per gateway at a time, whoever asks
        pending[key].append(waiter)
        return waiter
    waiters = pending[key] = [waiter]

    def hand_out(result: _Shared | Failure) -> None:
        pending.pop(key, None)
        discoveries.pop(key, None)
        for each in list(waiters):
            if each.called:  # cancelled meanwhile
                continue
            if isinstance(result, Failure):
                each.errback(result)
            else:
                result.users += 1
                each.callback(result.view(schedule))
        if not isinstance(result, Failure) and result.users == 0:  # nobody wants it now
            _close(reactor, result)

    discovery = discoveries[key] = Deferred.fromCoroutine(_discover(reactor, key, schedule))
    discovery.addBoth(hand_out)
    return waiter


def release_mapper(reactor: Any, mapper: Mapper) -> None:
    """Give back a mapper from L{acquire_mapper}; the last user's release closes its port."""
    entries = _shared.get(reactor, [])
    for shared in entries:
        if shared.mapper.client is mapper.client:
            shared.users -= 1
            if shared.users <= 0:
                _close(reactor, shared)
            return


def mappers_in_use(reactor: Any) -> int:
    """How many shared mappers are open on C{reactor} (for tests and resource checks)."""
    return len(_shared.get(reactor, []))


def forget_verdict(reactor: Any, gateway: Gateway) -> None:
    """Drop a remembered "NAT-PMP only" for C{gateway}: the next discovery tries PCP."""
    _verdicts.get(reactor, {}).pop(gateway, None)


def natpmp_verdict_until(reactor: Any, gateway: Gateway) -> float | None:
    """When a remembered "NAT-PMP only" for C{gateway} runs out, if one stands."""
    until = _verdicts.get(reactor, {}).get(gateway)
    if until is not None and until <= reactor.seconds():
        forget_verdict(reactor, gateway)
        return None
    return until


def same_mapper(one: Mapper | None, other: Mapper | None) -> bool:
    """Whether two mappers talk through the same client (the same request queue)."""
    return one is not None and other is not None and one.client is other.client


def _current(reactor: Any, key: _Key, method: str | None = None) -> _Shared | None:
    """The best shared client for C{key}'s gateway among its methods (or just C{method})."""
    gateway, methods = key
    for wanted in (method,) if method else methods:
        for shared in _shared.get(reactor, []):
            if shared.gateway == gateway and shared.method == wanted and shared.current:
                return shared
    return None


def _worth_asking_again(reactor: Any, key: _Key, shared: _Shared) -> bool:
    """A fallback (NAT-PMP, UPnP) whose verdict ran out: PCP may answer now (P43)."""
    gateway, methods = key
    return (shared.method in FALLBACKS and "pcp" in methods
            and natpmp_verdict_until(reactor, gateway) is None)


async def _discover(reactor: Any, key: _Key, schedule: RetransmitSchedule) -> _Shared:
    gateway, methods = key
    if gateway_family(gateway.host) == 6:
        return _pcp6(reactor, gateway, methods)
    if methods == ("upnp",):
        return await _upnp(reactor, key, None)
    if "upnp" in methods and "pcp" not in methods and natpmp_verdict_until(
            reactor, gateway) is None:
        # The ANNOUNCE is the probe here too: any answer means a NAT-PMP/PCP server is there.
        client = PCPClient(gateway.host, gateway.port, reactor)
        port = reactor.listenUDP(0, client)
        try:
            await _probe(reactor, key, client)
        except _IGDFirst as first:
            return _use_igd(reactor, gateway, first.client, fallback=True)
        except ResultError:
            pass
        finally:
            port.stopListening()
    elif "pcp" in methods and ("natpmp" not in methods
                               or natpmp_verdict_until(reactor, gateway) is None):
        client = PCPClient(gateway.host, gateway.port, reactor)
        port = reactor.listenUDP(0, client)
        try:
            if "natpmp" in methods or "upnp" in methods:
                await _probe(reactor, key, client)
        except _IGDFirst as first:
            port.stopListening()
            return _use_igd(reactor, gateway, first.client, fallback=True)
        except UnsupportedVersion as error:
            port.stopListening()
            if error.server_version not in (0, None):
                log.warn("{gateway} speaks PCP version {version}, which txnatpmp does not: "
                         "trying NAT-PMP", gateway=gateway.host, version=error.server_version)
            else:
                log.info("{gateway} speaks NAT-PMP, not PCP: using NAT-PMP for {minutes} "
                         "minutes before asking again", gateway=gateway.host,
                         minutes=int(VERDICT_MEMORY / 60))
            _verdicts.setdefault(reactor, {})[gateway] = reactor.seconds() + VERDICT_MEMORY
            if "natpmp" not in methods:  # a NAT-PMP server, and NAT-PMP is not allowed
                return await _upnp(reactor, key, None)
        except ResultError:
            return _register(reactor, gateway, PCPMapper(client), port)  # PCP answered (P44)
        except BaseException:  # GatewayTimeout: nothing answered, the IGD search included
            port.stopListening()
            raise
        else:
            return _register(reactor, gateway, PCPMapper(client), port)
    existing = _current(reactor, key, "natpmp")
    if existing is not None:
        return existing  # asked again, and it is still NAT-PMP only; or another user's
    natpmp = NATPMPClient(gateway.host, gateway.port, reactor, schedule)
    return _register(reactor, gateway, NATPMPMapper(natpmp), reactor.listenUDP(0, natpmp))


def _pcp6(reactor: Any, gateway: Gateway, methods: Sequence[str]) -> _Shared:
    """
    An IPv6 gateway: PCP only, never NAT-PMP (P48) nor UPnP-IGD, and no probe (its first
    request tells).  The client listens on this host's global address (P08).

    @raise ValueError: when PCP is not allowed, or this host has no global IPv6 address
        (L{txnatpmp.NoGlobalAddress}).
    """
    if "pcp" not in methods:
        raise ValueError(f"{gateway.host} is an IPv6 gateway, and only PCP works over IPv6 "
                         "(NAT-PMP and UPnP-IGD here are IPv4 only)")
    client = PCPClient(gateway.host, gateway.port, reactor)
    port = client.listen(reactor)
    return _register(reactor, gateway, PCPMapper(client, gateway=gateway), port)


async def _upnp(reactor: Any, key: _Key, silent: GatewayTimeout | None) -> _Shared:
    """
    The UPnP step: a UPnP-IGD at the gateway's address, found by an SSDP search (unicast to it,
    and multicast only where the gateway is not loopback, as L{UPnPClient} does), its
    description and one GetExternalIPAddress.  After a silent NAT-PMP/PCP probe (C{silent}),
    finding no IGD either fails with that probe's timeout.
    """
    gateway, _ = key
    try:
        ipaddress.IPv4Address(gateway.host)
    except ValueError:
        if silent is not None:
            raise silent from None
        raise ValueError(f"UPnP-IGD needs an IPv4 gateway, not {gateway.host}") from None
    try:
        client = await _find_igd(reactor, gateway)
    except GatewayTimeout:
        if silent is None:
            raise
        raise silent from None
    return _use_igd(reactor, gateway, client, silent is not None)


async def _find_igd(reactor: Any, gateway: Gateway) -> UPnPClient:
    """A UPnP-IGD at C{gateway}'s address, discovered (nothing registered yet)."""
    ssdp_port = _ssdp_ports.get(reactor, {}).get(gateway.host, SSDP_PORT)
    client = UPnPClient(gateway.host, reactor, ssdp_port=ssdp_port)
    await client.discover()
    return client


def _use_igd(reactor: Any, gateway: Gateway, client: UPnPClient, fallback: bool) -> _Shared:
    mapper = UPnPMapper(client, gateway)
    mapper.listen_for_restarts()
    if fallback:  # ask PCP and NAT-PMP again later, as after a NAT-PMP verdict
        log.info("{gateway} answers neither PCP nor NAT-PMP: using its UPnP-IGD; asking again "
                 "in {minutes} minutes", gateway=gateway.host, minutes=int(VERDICT_MEMORY / 60))
        _verdicts.setdefault(reactor, {})[gateway] = reactor.seconds() + VERDICT_MEMORY
    return _register(reactor, gateway, mapper, mapper)


class _IGDFirst(Exception):
    """A UPnP-IGD answered and the PCP/NAT-PMP probe stayed silent through the grace."""

    def __init__(self, client: UPnPClient) -> None:
        super().__init__("a UPnP-IGD answered first")
        self.client = client


async def _probe(reactor: Any, key: _Key, client: PCPClient) -> int:
    """
    The PCP ANNOUNCE probe; with UPnP allowed, an IGD search goes alongside it (design.md's
    discovery order).  PCP and NAT-PMP win whenever they answer; an IGD that answers wins only
    if the probe is still silent L{UPNP_GRACE} seconds later (L{_IGDFirst}).  A probe that times
    out falls back to the search's outcome.
    """
    gateway, methods = key
    probe = client.announce(schedule=PROBE_SCHEDULE)
    if "upnp" not in methods or _not_ipv4(gateway):
        return await probe
    search = Deferred.fromCoroutine(_find_igd(reactor, gateway))
    searched: Deferred[UPnPClient] = Deferred()

    def relay(result: UPnPClient | Failure) -> None:
        searched.callback(result)

    search.addBoth(relay)
    decided: Deferred[tuple[str, Any]] = Deferred()
    grace: list[Any] = []

    def probe_decides(result: object) -> None:
        if not decided.called:
            decided.callback(("probe", result))

    def igd_found(result: object) -> object:
        if not isinstance(result, Failure) and not decided.called:
            def igd_decides() -> None:
                if not decided.called:
                    decided.callback(("igd", result))

            grace.append(reactor.callLater(UPNP_GRACE, igd_decides))
        return result

    probe.addBoth(probe_decides)
    searched.addBoth(igd_found)
    try:
        which, outcome = await decided
    except BaseException:  # cancelled (a stop): neither goes on
        probe.cancel()
        search.cancel()
        searched.addErrback(lambda _: None)
        raise
    finally:
        for timer in grace:
            if timer.active():
                timer.cancel()
    if which == "igd":
        probe.cancel()
        raise _IGDFirst(outcome)
    if isinstance(outcome, Failure) and isinstance(outcome.value, GatewayTimeout):
        try:
            raise _IGDFirst(await searched)
        except GatewayTimeout:
            outcome.raiseException()  # neither answered: the probe's timeout says so
    search.cancel()
    searched.addErrback(lambda _: None)
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return int(outcome)


def _not_ipv4(gateway: Gateway) -> bool:
    try:
        ipaddress.IPv4Address(gateway.host)
    except ValueError:
        return True
    return False


def use_ssdp_port(reactor: Any, host: str, port: int) -> None:
    """UPnP discovery on C{reactor} searches C{host} on C{port} instead of 1900 (a test
    double's, such as L{txnatpmp._upnp.fake.FakeIGD}'s C{ssdp_port})."""
    _ssdp_ports.setdefault(reactor, {})[host] = port


def _close(reactor: Any, shared: _Shared) -> None:
    entries = _shared.get(reactor, [])
    if shared not in entries:
        return  # closed already: its only user released it from within hand_out's callback
    entries.remove(shared)
    shared.port.stopListening()


def _register(reactor: Any, gateway: Gateway, mapper: Mapper,
              port: IListeningPort | _Closable) -> _Shared:
    entries = _shared.setdefault(reactor, [])
    for older in entries:
        if older.gateway == gateway and older.method == mapper.method:
            older.current = False  # its users keep it until they move on
    shared = _Shared(gateway, mapper, port)
    entries.append(shared)
    return shared
