"""
L{MappingService}: keeps port mappings alive on a gateway for as long as it runs.

The façade over these parts, each in its own module: one lane per address family
(L{txnatpmp._service.lane}), each with its link to that family's gateway (an explicit state
machine, L{txnatpmp._service.link} and L{txnatpmp._service.machine}) and one keeper per mapping
(L{txnatpmp._service.keeper}); and the status file (L{txnatpmp._service.status}), an observer
of the events.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.defer import FirstError
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._events import EventKind, MappingEvent
from .._gateway import find_gateway
from .._gateway6 import find_gateway6
from .._mapper.shared import Mapper, check_methods
from .._reactor import global_reactor
from .._results import Mapping
from .._schedule import RFC_SCHEDULE, RetransmitSchedule, RetryBackoff
from .._spec import (
    DEFAULT_LIFETIME,
    Gateway,
    MappingSpec,
    check_families,
    check_gateway,
    check_gateway6,
    gateway_family,
    parse_lifetime,
    parse_spec,
)
from .._wire import ANNOUNCE_GROUP, ANNOUNCE_PORT, SERVER_PORT, check_protocol
from .keeper import MappingKeeper
from .lane import FamilyLane, describe
from .link import Finder
from .machine import State
from .shutdown import STOP_BUDGET, delete_all
from .status import StatusFile

Observer = Callable[[MappingEvent], object]


def find_router6(reactor: Any) -> Deferred[str]:
    """The IPv6 default router as a gateway address (C{fe80::1%eth0}): L{find_gateway6}'s."""
    return find_gateway6(reactor).addCallback(lambda router: router.host)


class MappingService(Service):
    """
    Keeps mappings on a gateway: creates them (one request queue per gateway, shared with every
    other user of it in this process), renews each when its protocol says (halfway through its
    lifetime for NAT-PMP, R15; at RFC 6887's points for PCP) suggesting the same external port
    and keeps trying until that lifetime runs out, re-creates them after the gateway loses its
    state (R18, R19), follows announcements (R21-R23, P34), probes a silent gateway with one
    request, and deletes them all when stopped.

    With C{families=(4, 6)} each spec gets an IPv4 mapping and an IPv6 pinhole (PCP, P48): each
    family has its own gateway, client, nonces and epoch, and its own link state.

    Observers added with L{add_observer} receive a L{MappingEvent} for each change; the same
    story goes to the log in plain words.
    """

    log = Logger(namespace="txnatpmp._service")

    def __init__(
        self,
        gateway: str | Gateway | None = None,
        gateway_port: int = SERVER_PORT,
        reactor: Any = None,
        *,
        methods: Sequence[str] | str = "auto",
        families: int | str | Sequence[int] = (4,),
        gateway6: str | Gateway | None = None,
        lifetime: int = DEFAULT_LIFETIME,
        status_file: str | None = None,
        announcements: bool = True,
        announce_port: int = ANNOUNCE_PORT,
        announce_group: str | None = ANNOUNCE_GROUP,
        announce_interface: str = "",
        schedule: RetransmitSchedule = RFC_SCHEDULE,
        retry: RetryBackoff = RetryBackoff(),
        stop_timeout: float = STOP_BUDGET,
        rng: random.Random | None = None,
        gateway_finder: Finder = find_gateway,
        gateway_finder6: Finder = find_router6,
    ) -> None:
        """
        @param gateway: The gateway's address (or a L{Gateway}): IPv4, or the IPv6 router's
            (C{fe80::1%eth0}) for a service of family 6.  A family without one finds its own on
            start (L{find_gateway}, L{find_gateway6}) and looks again whenever it falls silent,
            so the service follows a change of network.
        @param reactor: Provides time, UDP and multicast; the global reactor by default.
        @param methods: The protocols to use, best first: C{"auto"} (PCP, then NAT-PMP, then
            UPnP-IGD, as the gateway answers) or some of C{"pcp"}, C{"natpmp"}, C{"upnp"}.
            Over IPv6 only PCP is ever used.
        @param families: C{4} (IPv4 mappings), C{6} (IPv6 pinholes, through PCP), or C{(4, 6)}
            (C{"46"}): both for each spec.
        @param gateway6: The IPv6 router, when C{gateway} is the IPv4 one.
        @param lifetime: Lifetime requested for mappings added without one.
        @param status_file: If given, the current mappings are written there as JSON, atomically,
            after every change.
        @param announcements: Listen for gateway announcements on C{announce_group}, ports
            C{announce_port} (5350) and 5351, where draft-era gateways announce; for IPv6 on
            C{[ff02::1]:5350}.  With C{announce_group=None}, bind
            C{announce_interface}:C{announce_port} instead (for gateway doubles that announce
            by unicast).
        @param schedule: Retransmissions for each request (the RFC's by default).
        @param retry: Waits between attempts after a failure.
        @param stop_timeout: Seconds L{stopService} may spend deleting mappings.
        @raise ValueError: for a bad gateway, family, lifetime or status file, before anything
            is sent.
        """
        chosen = check_methods(methods)
        self.families = check_families(families)
        fixed = _gateways(gateway, gateway_port, gateway6, self.families)
        if 6 in self.families and "pcp" not in chosen:
            raise ValueError("IPv6 pinholes need PCP: NAT-PMP and UPnP-IGD here are IPv4 only, "
                             f"and the methods are {', '.join(chosen)}")
        self.clock = reactor if reactor is not None else global_reactor()
        self.lifetime = parse_lifetime(lifetime)
        self.schedule = schedule
        self.retry = retry
        self.rng = rng or random.Random()
        if not stop_timeout > 0:
            raise ValueError(f"stop_timeout must be positive, not {stop_timeout!r}")
        self.stop_timeout = stop_timeout
        self._specs: dict[tuple[str, int], MappingSpec] = {}
        self._observers: list[Observer] = []
        self._status: StatusFile | None = None
        if status_file is not None:
            self._status = StatusFile(status_file, self._snapshot)
            self._observers.append(self._status)
        finders = {4: gateway_finder, 6: gateway_finder6}
        self._lanes = [
            FamilyLane(
                self, family, fixed[family],
                None if fixed[family] is not None else finders[family],
                methods=chosen if family == 4 else ("pcp",), schedule=schedule, retry=retry,
                rng=self.rng, announcements=announcements,
                announce_ports=(announce_port, SERVER_PORT), announce_group=announce_group,
                announce_interface=announce_interface,
            )
            for family in self.families
        ]
        self._stopping: Deferred[None] | None = None

    # Public API

    @property
    def _first(self) -> FamilyLane:
        return self._lanes[0]

    def _lane(self, family: int) -> FamilyLane:
        """The lane of C{family} (4 or 6).

        @raise ValueError: if the service does not keep that family."""
        for lane in self._lanes:
            if lane.family == family:
                return lane
        raise ValueError(f"this service keeps IPv{'/IPv'.join(map(str, self.families))} "
                         f"mappings, not IPv{family}")

    @property
    def gateway(self) -> str | None:
        """The gateway's address, once known (the first family's)."""
        return self.gateway_for(self.families[0])

    def gateway_for(self, family: int) -> str | None:
        """C{family}'s gateway address, once known."""
        gateway = self._lane(family).link.gateway
        return gateway.host if gateway is not None else None

    @property
    def state(self) -> State:
        """Where the link to the gateway stands (a L{State}; the first family's)."""
        return self._first.link.state

    @property
    def mapper(self) -> Mapper | None:
        """The (shared) mapper talking to the gateway, while connected: its C{method} says
        which protocol the gateway speaks (the first family's)."""
        return self._first.link.mapper

    @property
    def client(self) -> Any:
        """The protocol client under the mapper (a NATPMPClient or PCPClient), if connected."""
        mapper = self.mapper
        return mapper.client if mapper is not None else None

    @property
    def methods(self) -> tuple[str, ...]:
        return self._first.link.methods

    @property
    def external_address(self) -> str | None:
        """The gateway's external address, when known (the first family's)."""
        return self._first.external_address

    def external_address_for(self, family: int) -> str | None:
        """C{family}'s public address when known: the IPv4 gateway's external address, or
        for IPv6 this host's own global address its pinholes are for."""
        return self._lane(family).external_address

    @property
    def status_file(self) -> str | None:
        return self._status.path if self._status is not None else None

    @property
    def announcement_port(self) -> int | None:
        """The port announcements are heard on, once listening (the first family's)."""
        ports = self._first.link.announcement_ports
        return ports[0] if ports else None

    @property
    def specs(self) -> list[MappingSpec]:
        """The mappings the service keeps, whether the gateway grants them now or not."""
        return list(self._specs.values())

    @property
    def mappings(self) -> list[Mapping]:
        """The mappings the gateways currently grant, family by family."""
        return [k.mapping for lane in self._lanes for k in lane.keepers() if k.mapping is not None]

    def mapping_for(self, spec: MappingSpec, family: int | None = None) -> Mapping | None:
        """The mapping currently granted for C{spec} on C{family} (by default the first family
        in L{families}), if any."""
        keeper = self._lane(self.families[0] if family is None else family).keeper(spec)
        return keeper.mapping if keeper is not None else None

    def mappings_for(self, spec: MappingSpec) -> list[Mapping]:
        """The mappings currently granted for C{spec}, one per family that has one."""
        return [m for m in (self.mapping_for(spec, f) for f in self.families) if m is not None]

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

        @return: A Deferred firing with the first family's first L{Mapping} once every family
            has one (L{mappings_for} has them all then), or failing with the first error (the
            service goes on trying).
        @raise ValueError: for a bad spec, or one the service already keeps.
        """
        wanted = _to_spec(spec, internal_port, external_port)
        if wanted.key in self._specs:
            raise ValueError(f"{wanted.protocol} {wanted.internal_port} is already kept")
        kept = parse_lifetime(self.lifetime if lifetime is None else lifetime)
        self._specs[wanted.key] = wanted
        keepers = [lane.add(wanted, kept) for lane in self._lanes]
        firsts = [keeper.first() for keeper in keepers]
        for keeper in keepers:
            keeper.refresh()
        if len(firsts) == 1:
            return firsts[0]
        return _all(firsts).addCallback(_first_of)

    def remove_mapping(
        self, spec: str | MappingSpec, internal_port: int | None = None
    ) -> Deferred[None]:
        """
        Stop keeping a mapping and delete it from the gateway (from each family's).

        @raise ValueError: if the service does not keep it.
        """
        wanted = _to_spec(spec, internal_port, 0)
        if self._specs.pop(wanted.key, None) is None:
            raise ValueError(f"{wanted.protocol} {wanted.internal_port} is not kept")
        deletes = []
        for lane in self._lanes:
            keeper = lane.remove(wanted)
            assert keeper is not None
            keeper.stop()
            keeper.fail_waiting(CancelledError(f"{wanted} was removed"))
            mapper = lane.mapper
            if mapper is not None and keeper.needs_delete:
                deleted = mapper.delete(wanted, keeper.mapping)
                deletes.append(deleted.addCallback(self._deleted, lane, keeper))
        if not deletes:
            return succeed(None)
        return _all(deletes).addCallback(lambda _: None)

    # Service

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._stopping is not None:  # started again while deleting: once that is done
            self._stopping.addBoth(self._start_again)
        else:
            for lane in self._lanes:
                lane.link.start()

    def _start_again(self, result: object) -> object:
        if self.running:
            for lane in self._lanes:
                lane.link.start()
        return result

    def stopService(self) -> Deferred[None]:
        """
        Cancel everything queued or in flight, then delete every mapping, each with its own
        retransmissions, every family at once, within C{stop_timeout} seconds (sooner when
        nothing answers at all).
        """
        super().stopService()  # type: ignore[no-untyped-call]
        if self._stopping is not None:
            return self._stopping
        deletes = [Deferred.fromCoroutine(self._delete_all(lane)) for lane in self._lanes]
        stopping = self._stopping = _all(deletes).addCallback(lambda _: None)
        stopping.addBoth(self._stopped)
        return stopping

    async def _delete_all(self, lane: FamilyLane) -> None:
        # Creates still unanswered may exist at a gateway that answers; at a silent one (or
        # one never found) they almost surely do not, and waiting on them made stops slow.
        answering = lane.link.state in (State.CONNECTED, State.RECOVERING)
        lane.link.stop()
        kept = list(lane.keepers())
        mapper = lane.mapper
        held = [k for k in kept if k.mapping is not None or (answering and k.unsettled)]
        if mapper is not None:
            which = f" (IPv{lane.family})" if len(self._lanes) > 1 else ""
            await delete_all(held, mapper, self.clock, self.stop_timeout,
                             lambda keeper, left: self._removed(lane, keeper, left), which)
        for keeper in kept:
            keeper.stop()
            keeper.fail_waiting(CancelledError("the service stopped"))

    def _stopped(self, result: object) -> object:
        self._stopping = None
        for lane in self._lanes:
            lane.link.deleted()
        self.write_status()
        return result

    def _deleted(self, left: object, lane: FamilyLane, keeper: MappingKeeper) -> None:
        self._removed(lane, keeper, left)

    def _removed(self, lane: FamilyLane, keeper: MappingKeeper, left: object) -> None:
        """C{keeper}'s mapping was deleted; C{left} is the delete's answer (a L{Mapping} with
        a lifetime where the gateway keeps it a while: a busy PCP mapping, or a pinhole
        L{txnatpmp._mapper.pcp.PCPMapper} could only shorten)."""
        previous = keeper.forget()
        family = f" (IPv{lane.family})" if len(self._lanes) > 1 else ""
        kept = left if isinstance(left, Mapping) and left.lifetime > 0 else None
        if kept is not None:
            self.log.info("Let go of {spec.protocol} {spec.internal_port}{family}: the gateway "
                          "keeps it {lifetime} s more", spec=keeper.spec, family=family,
                          lifetime=kept.lifetime)
        else:
            self.log.info("Removed {spec.protocol} {spec.internal_port}{family}",
                          spec=keeper.spec, family=family)
        lane.tell(MappingEvent(EventKind.REMOVED, keeper.spec, kept, previous,
                               lane.external_address))

    # What the lanes ask

    def tell(self, event: MappingEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                self.log.failure("Observer {observer} failed on {event}", observer=observer,
                                 event=event)

    def write_status(self) -> None:
        if self._status is not None:
            self._status.write()

    # The status file's content

    def _snapshot(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "state": self.state.value,
            "external_address": self.external_address,
            "links": [describe(lane) for lane in self._lanes],
            "mappings": [
                {
                    "protocol": k.mapping.protocol,
                    "internal_port": k.mapping.internal_port,
                    "external_port": k.mapping.external_port,
                    "lifetime": k.mapping.lifetime,
                    "method": k.mapping.method,
                    "family": lane.family,
                    "external_address": k.mapping.external_address or lane.external_address,
                    "expires": k.expires_at,
                }
                for lane in self._lanes
                for k in lane.keepers()
                if k.mapping is not None
            ],
        }


def _gateways(gateway: str | Gateway | None, port: int, gateway6: str | Gateway | None,
              families: tuple[int, ...]) -> dict[int, Gateway | None]:
    """Each family's fixed gateway (C{None}: find it), checked."""
    fixed: dict[int, Gateway | None] = {4: None, 6: None}
    given = [(gateway, port)] if gateway is not None else []
    if gateway6 is not None:
        host6 = gateway6[0] if isinstance(gateway6, tuple) else gateway6
        if gateway_family(host6) != 6:
            raise ValueError(f"gateway6 must be the IPv6 router's address, not {host6!r}")
        given.append((gateway6, SERVER_PORT))
    for each, each_port in given:
        host, each_port = each if isinstance(each, tuple) else (each, each_port)
        family = gateway_family(host)
        if fixed[family] is not None:
            raise ValueError(f"two IPv{family} gateways given: {fixed[family]} and {host}")
        fixed[family] = (check_gateway if family == 4 else check_gateway6)(host, each_port)
        if family not in families:
            raise ValueError(f"gateway {host} is IPv{family}, but the service keeps only "
                             f"IPv{families[0]} mappings (families={families})")
    return fixed


def _all(waits: list[Deferred[Any]]) -> Deferred[list[Any]]:
    """Every result, or the first failure itself (not wrapped in a C{FirstError})."""

    def first_error(failure: Failure) -> Failure:
        error = failure.value
        return error.subFailure if isinstance(error, FirstError) else failure

    return gatherResults(waits, consumeErrors=True).addErrback(first_error)


def _first_of(mappings: list[Mapping]) -> Mapping:
    return mappings[0]


def _to_spec(spec: str | MappingSpec, internal_port: int | None, external_port: int) -> MappingSpec:
    if isinstance(spec, MappingSpec):
        return spec
    if internal_port is None:
        return parse_spec(spec)
    return parse_spec(f"{check_protocol(spec)}:{internal_port}" +
                      (f":{external_port}" if external_port else ""))
