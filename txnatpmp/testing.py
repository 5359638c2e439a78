"""
Test doubles for code that uses txnatpmp.

L{FakeGateway} is a real NAT-PMP server: bind it to loopback and point a client (yours, txnatpmp's,
or a peer such as libnatpmp's C{natpmpc}) at it::

    gateway = FakeGateway()
    port = gateway.listen()                     # 127.0.0.1, any free port
    client = NATPMPClient("127.0.0.1", port.getHost().port)

Its knobs simulate what real routers do: reboot, drop or delay replies, refuse with a result
code, change the external address and announce it.  It records what it received and the highest
number of distinct requests it ever had outstanding at once.
"""

from __future__ import annotations

import errno
import heapq
import random
from typing import Any, Callable, Literal, Sequence

from attrs import define, frozen
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from ._reactor import global_reactor
from ._upnp.fake import FakeIGD, IGDMapping
from ._errors import DecodeError
from ._pcp.fake_server import PCPServer
from ._wire import (
    NATPMP_VERSION,
    OP_EXTERNAL_ADDRESS,
    OP_MAP_TCP,
    OP_MAP_UDP,
    RESPONSE_BIT,
    ErrorResponse,
    ExternalAddressResponse,
    MappingRequest,
    MappingResponse,
    PCPAnnounce,
    Protocol,
    Request,
    Response,
    decode_request,
    encode,
)

__all__ = [
    "Datagram",
    "GatewayRig",
    "FakeGateway",
    "FakeIGD",
    "FakeMapping",
    "IGDMapping",
    "MemoryHost",
    "MemoryNetwork",
    "MemoryPort",
    "Received",
    "gateway_rig",
]

_FIRST_DYNAMIC_PORT = 1024


@frozen
class Received:
    """One datagram that reached the gateway, and whether it was dropped as if lost."""

    data: bytes
    source: tuple[str, int]
    time: float
    dropped: bool

    @property
    def request(self) -> Request | None:
        """The request these bytes carry, if they are a well-formed one."""
        try:
            return decode_request(self.data)
        except (DecodeError, ValueError):
            return None


@define
class FakeMapping:
    """A mapping in the gateway's table."""

    client: str
    protocol: Protocol
    internal_port: int
    external_port: int
    expires: float
    nonce: bytes | None = None  # PCP's, for mappings a PCP MAP made


class FakeGateway(DatagramProtocol):
    """
    A NAT-PMP gateway double that answers real UDP datagrams.

    Knobs (plain attributes, change them at any time):
      - C{external_address}: reported to clients; see L{set_external_address}.
      - C{delay}: seconds before each reply is sent (0 sends it on the next reactor turn).
      - C{drop_next}: drop this many coming requests, as if lost; C{drop_rate}: drop each with
        this probability (seeded with C{seed}, so runs repeat).
      - C{online}: C{False} ignores everything, like a gateway that is off.
      - C{refuse_with}: answer every request with this result code until set back to C{None}.
      - C{min_lifetime}, C{max_lifetime}: bounds of granted lifetimes.
      - C{reserved_ports}: external ports held by someone else, never handed out.
      - C{grant_lifetime}: grant exactly this lifetime (0 included) instead of the bounded one.
      - C{duplicate_replies}: send every reply twice.
      - C{rewrite_reply}: a function given each reply's bytes, returning the bytes to send
        instead (truncated, oversized, another opcode...) or C{None} to send nothing.
      - C{epoch_offset}: added to the epoch the gateway reports (jumps forwards or back).
      - C{announce_to}: C{(host, port)} destinations of announcements.  Empty by default: nothing
        is multicast unless a test asks for it, and only inside a network namespace it made.

    With C{pcp=True} it also answers PCP (RFC 6887) MAP and ANNOUNCE on the same table, as the
    RFC says; C{pcp="miniupnpd"} reproduces miniupnpd 2.3.1's quirks instead (see
    L{txnatpmp._pcp.fake_server.PCPServer}, which is C{gateway.pcp}).  Without it, PCP gets the
    8-byte version-0 "unsupported version" reply of a NAT-PMP-only gateway.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime | None = None,
        external_address: str = "203.0.113.1",
        seed: int = 0,
        pcp: bool | Literal["rfc", "miniupnpd"] = False,
    ) -> None:
        if reactor is None:
            reactor = global_reactor()
        self._clock: IReactorTime = reactor
        self.external_address = external_address
        self.delay = 0.0
        self.drop_next = 0
        self.drop_rate = 0.0
        self.online = True
        self.refuse_with: int | None = None
        self.min_lifetime = 1
        self.max_lifetime = 86400
        self.reserved_ports: set[int] = set()
        self.grant_lifetime: int | None = None
        self.duplicate_replies = False
        self.rewrite_reply: Callable[[bytes], bytes | None] | None = None
        self.epoch_offset = 0
        self.announce_to: list[tuple[str, int]] = []
        self.received: list[Received] = []
        self.max_outstanding = 0
        self._random = random.Random(seed)
        self._outstanding: set[tuple[tuple[str, int], bytes]] = set()
        self._table: dict[tuple[str, str, int], FakeMapping] = {}
        self._used: dict[str, set[int]] = {"tcp": set(), "udp": set()}  # external ports
        self._expiries: list[tuple[float, tuple[str, str, int]]] = []  # a heap
        self._started = self._clock.seconds()
        self.pcp: PCPServer | None = None
        if pcp:
            self.pcp = PCPServer(self, "rfc" if pcp is True else pcp)

    def listen(
        self, reactor: IReactorUDP | None = None, port: int = 0, interface: str = "127.0.0.1"
    ) -> IListeningPort:
        """Start serving on C{interface}:C{port} (loopback, any free port, by default)."""
        if reactor is None:
            reactor = global_reactor()
        return reactor.listenUDP(port, self, interface=interface, maxPacketSize=8192)

    # State

    @property
    def epoch(self) -> int:
        """Seconds since start of epoch, as the gateway reports it."""
        return max(0, int(self._clock.seconds() - self._started) + self.epoch_offset)

    @property
    def mappings(self) -> list[FakeMapping]:
        """The live mappings."""
        self._expire()
        return list(self._table.values())

    def mapping_for(self, protocol: str, internal_port: int) -> FakeMapping | None:
        """The live mapping of C{protocol}/C{internal_port} (for any client), if there is one."""
        return next(
            (m for m in self.mappings if (m.protocol, m.internal_port) == (protocol, internal_port)),
            None,
        )

    @property
    def requests(self) -> list[Request]:
        """Every well-formed request that was not dropped, in order of arrival."""
        return [r.request for r in self.received if not r.dropped and r.request is not None]

    # Knobs that act

    def reboot(self, announce: bool = True) -> None:
        """Forget every mapping and restart the epoch at 0, as a router that rebooted."""
        for key in list(self._table):
            self._remove(key)
        self._started = self._clock.seconds()
        if announce:
            self.announce()

    def set_external_address(self, address: str, announce: bool = True) -> None:
        """Change the external address and, by default, announce it (R22)."""
        self.external_address = address
        if announce:
            self.announce()

    def announce(self, pcp: bool = False) -> None:
        """Send an announcement to every C{announce_to} destination, in NAT-PMP or PCP format."""
        message = (
            PCPAnnounce(0, self.epoch)
            if pcp
            else ExternalAddressResponse(0, self.epoch, self.external_address)
        )
        for destination in self.announce_to:
            self._send(encode(message), destination)

    # DatagramProtocol

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        source = (addr[0], addr[1])
        dropped = not self.online or self._drops()
        self.received.append(Received(data, source, self._clock.seconds(), dropped))
        if dropped:
            return
        reply = self._reply_bytes(data, source[0])
        if reply is None:
            return
        key = (source, data)
        self._outstanding.add(key)
        self.max_outstanding = max(self.max_outstanding, len(self._outstanding))
        self._clock.callLater(self.delay, self._answer, key, reply)

    # Internals

    def _drops(self) -> bool:
        if self.drop_next > 0:
            self.drop_next -= 1
            return True
        return self.drop_rate > 0 and self._random.random() < self.drop_rate

    def _answer(self, key: tuple[tuple[str, int], bytes], reply: bytes) -> None:
        self._outstanding.discard(key)
        data = reply if self.rewrite_reply is None else self.rewrite_reply(reply)
        if data is None:
            return
        for _ in range(2 if self.duplicate_replies else 1):
            self._send(data, key[0])

    def _send(self, data: bytes, destination: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.write(data, destination)

    def _reply_bytes(self, data: bytes, client: str) -> bytes | None:
        """The bytes of the answer to a datagram: PCP's server takes every non-zero version."""
        if self.pcp is not None and data[:1] != bytes((NATPMP_VERSION,)):
            return self.pcp.reply(data, client)
        reply = self._reply(data, client)
        return None if reply is None else encode(reply)

    def _reply(self, data: bytes, client: str) -> Response | None:
        """The server's answer to a datagram, or C{None} to ignore it (RFC 6886 section 3.5)."""
        if len(data) < 2 or data[1] >= RESPONSE_BIT:
            return None
        version, opcode = data[0], data[1]
        if version != NATPMP_VERSION:
            return ErrorResponse(RESPONSE_BIT, 1, self.epoch)
        if opcode not in (OP_EXTERNAL_ADDRESS, OP_MAP_UDP, OP_MAP_TCP):
            return ErrorResponse(RESPONSE_BIT + opcode, 5, self.epoch)
        try:
            request = decode_request(data)
        except (DecodeError, ValueError):
            return None
        if not isinstance(request, MappingRequest):
            return ExternalAddressResponse(
                self.refuse_with or 0,
                self.epoch,
                "0.0.0.0" if self.refuse_with else self.external_address,
            )
        if self.refuse_with:
            return MappingResponse(
                request.protocol, self.refuse_with, self.epoch, request.internal_port, 0, 0
            )
        return self._map(client, request)

    def _map(self, client: str, request: MappingRequest) -> MappingResponse:
        self._expire()
        key = (client, request.protocol, request.internal_port)
        if request.lifetime == 0:
            if request.internal_port == 0:
                for other in [k for k in self._table if k[:2] == key[:2]]:
                    self._remove(other)
            else:
                self._remove(key)
            return MappingResponse(request.protocol, 0, self.epoch, request.internal_port, 0, 0)
        lifetime = min(max(request.lifetime, self.min_lifetime), self.max_lifetime)
        if self.grant_lifetime is not None:
            lifetime = self.grant_lifetime
        existing = self._table.get(key)
        if existing is not None:
            external = existing.external_port
        else:
            external = self._free_port(
                request.protocol, request.external_port or request.internal_port
            )
        expires = self._clock.seconds() + lifetime
        self._table[key] = FakeMapping(
            client, request.protocol, request.internal_port, external, expires
        )
        self._used[request.protocol].add(external)
        heapq.heappush(self._expiries, (expires, key))
        return MappingResponse(
            request.protocol, 0, self.epoch, request.internal_port, external, lifetime
        )

    def _free_port(self, protocol: str, preferred: int) -> int:
        used = self._used[protocol]

        def taken(port: int) -> bool:
            return port in used or port in self.reserved_ports

        if preferred and not taken(preferred):
            return preferred
        return next(p for p in range(_FIRST_DYNAMIC_PORT, 0x10000) if not taken(p))

    def _remove(self, key: tuple[str, str, int]) -> None:
        mapping = self._table.pop(key, None)
        if mapping is not None:
            self._used[mapping.protocol].discard(mapping.external_port)

    def _expire(self) -> None:
        """Drop mappings whose lifetime ran out (the heap may hold stale entries: skip them)."""
        now = self._clock.seconds()
        while self._expiries and self._expiries[0][0] <= now:
            expires, key = heapq.heappop(self._expiries)
            mapping = self._table.get(key)
            if mapping is not None and mapping.expires <= now:
                self._remove(key)


@frozen
class Datagram:
    """One datagram sent across a L{MemoryNetwork}."""

    time: float
    source: tuple[str, int]
    destination: tuple[str, int]
    data: bytes


class MemoryNetwork:
    """
    Datagrams between protocols of this process, without sockets, so clients, L{FakeGateway}s
    and a test share one C{Clock}::

        clock = Clock()
        network = MemoryNetwork(clock)
        network.attach(FakeGateway(clock), ("198.51.100.1", 5351))
        host = network.host("198.51.100.10")      # a reactor for code on that host
        service = MappingService("198.51.100.1", reactor=host)

    Delivery is immediate; a FakeGateway replies after its C{delay} on the clock, so advance the
    clock (C{clock.advance(0)} at least) for answers to arrive.  Several protocols may share an
    address (as multicast listeners do); each gets every datagram sent there.  Every datagram is
    recorded in C{sent}, also those to addresses nobody listens on.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._listeners: dict[tuple[str, int], list[DatagramProtocol]] = {}
        self._next_port = 40000
        self.sent: list[Datagram] = []
        self.links_down: set[str] = set()
        self._ports: list[MemoryPort] = []

    def bound(self, host: str) -> list[tuple[str, int]]:
        """The addresses on which something listens that C{host} bound (its own address, or a
        group it listens on), one entry per protocol: what a host has open."""
        return [port.address for port in self._ports if port.owner == host]

    def attach(self, protocol: DatagramProtocol, address: tuple[str, int],
               owner: str | None = None) -> MemoryPort:
        """Give C{protocol} the address C{address} and start it.  C{owner} is the host that
        opened it (its own address by default; a group's listener names its host)."""
        if address[1] == 0:
            address = (address[0], self._ephemeral_port())
        self._listeners.setdefault(address, []).append(protocol)
        port = MemoryPort(self, protocol, address, owner or address[0])
        self._ports.append(port)
        protocol.makeConnection(port)  # type: ignore[arg-type]
        return port

    def detach(self, address: tuple[str, int]) -> None:
        """Stop every protocol at C{address}, as if their ports stopped listening."""
        for protocol in self._listeners.pop(address, []):
            protocol.doStop()  # type: ignore[no-untyped-call]
            protocol.transport = None
        self._ports = [port for port in self._ports if port.address != address]

    def host(self, address: str) -> MemoryHost:
        """A reactor for programs on the host C{address}: its clock is the network's."""
        return MemoryHost(self, address)

    def sent_to(self, address: tuple[str, int]) -> list[Datagram]:
        """The datagrams sent to C{address}."""
        return [d for d in self.sent if d.destination == address]

    def deliver(self, data: bytes, source: tuple[str, int], destination: tuple[str, int]) -> None:
        """Send C{data} from C{source}: any host can forge any source address here."""
        self.sent.append(Datagram(self.clock.seconds(), source, destination, data))
        for receiver in list(self._listeners.get(destination, [])):
            receiver.datagramReceived(data, source)

    def _remove(self, port: MemoryPort) -> None:
        listeners = self._listeners.get(port.address, [])
        if port._protocol in listeners:
            listeners.remove(port._protocol)
            port._protocol.doStop()  # type: ignore[no-untyped-call]
        if port in self._ports:
            self._ports.remove(port)

    def _ephemeral_port(self) -> int:
        self._next_port += 1
        return self._next_port


class MemoryPort:
    """A port on a L{MemoryNetwork}: the protocol's transport, and the listening port."""

    def __init__(self, network: MemoryNetwork, protocol: DatagramProtocol,
                 address: tuple[str, int], owner: str | None = None) -> None:
        self._network = network
        self._protocol = protocol
        self.address = address
        self.owner = owner or address[0]

    def write(self, packet: bytes, addr: tuple[str, int]) -> None:
        """Send; raises C{OSError} (network unreachable) while the host's link is down."""
        if self.owner in self._network.links_down:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        self._network.deliver(packet, self.address, (addr[0], addr[1]))

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", *self.address)

    def stopListening(self) -> Deferred[None]:
        self._network._remove(self)
        return succeed(None)

    def joinGroup(self, addr: str, interface: str = "") -> Deferred[None]:
        return succeed(None)

    def leaveGroup(self, addr: str, interface: str = "") -> Deferred[None]:
        return succeed(None)


class MemoryHost:
    """
    The reactor of one host on a L{MemoryNetwork}: time from the network's clock, and
    C{listenUDP}/C{listenMulticast} that bind on the network.
    """

    def __init__(self, network: MemoryNetwork, address: str) -> None:
        self._network = network
        self.address = address

    def seconds(self) -> float:
        return self._network.clock.seconds()

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any, **kw: Any) -> IDelayedCall:
        return self._network.clock.callLater(delay, f, *args, **kw)

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        return self._network.clock.getDelayedCalls()

    @property
    def link_up(self) -> bool:
        """Whether this host can send; set it to C{False} for a link that is down."""
        return self.address not in self._network.links_down

    @link_up.setter
    def link_up(self, up: bool) -> None:
        if up:
            self._network.links_down.discard(self.address)
        else:
            self._network.links_down.add(self.address)

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "",
                  maxPacketSize: int = 8192) -> MemoryPort:
        return self._network.attach(protocol, (interface or self.address, port), self.address)

    def listenMulticast(self, port: int, protocol: DatagramProtocol, interface: str = "",
                        maxPacketSize: int = 8192, listenMultiple: bool = False) -> MemoryPort:
        return self._network.attach(protocol, (interface or self.address, port), self.address)


@define
class GatewayRig:
    """
    What a test of code behind a gateway needs, made by L{gateway_rig}: a C{clock}, the
    in-memory C{network}, a L{FakeGateway} on it at C{gateway_address}:5351, and the C{host}
    (a reactor) the code under test runs on.
    """

    clock: Any
    network: MemoryNetwork
    gateway: FakeGateway
    host: MemoryHost
    gateway_address: str
    host_address: str

    def run_for(self, seconds: float, step: float = 0.25) -> None:
        """Advance the clock by C{seconds} in steps, as time passes."""
        self.clock.pump([step] * int(seconds / step))


def gateway_rig(
    gateway_address: str = "198.51.100.1",
    host_address: str = "198.51.100.10",
    external_address: str = "80.100.100.1",
    *,
    announce: bool = True,
    seed: int = 0,
    **gateway_options: Any,
) -> GatewayRig:
    """
    A clock, an in-memory network, a gateway and a host, in one call::

        rig = gateway_rig()
        service = MappingService(rig.gateway_address, reactor=rig.host)
        service.add_mapping("tcp:8080")
        service.startService()
        rig.clock.advance(0)
        assert rig.gateway.mapping_for("tcp", 8080)

    With C{announce}, the gateway's announcements go to 224.0.0.1:5350 on the in-memory
    network only (nothing is multicast for real).  Other keyword arguments go to the
    L{FakeGateway} (C{pcp=True}, say).
    """
    from twisted.internet.task import Clock

    clock = Clock()
    network = MemoryNetwork(clock)
    gateway = FakeGateway(clock, external_address=external_address, seed=seed, **gateway_options)
    if announce:
        gateway.announce_to = [("224.0.0.1", 5350)]
    network.attach(gateway, (gateway_address, 5351))
    return GatewayRig(clock, network, gateway, network.host(host_address), gateway_address,
                      host_address)
