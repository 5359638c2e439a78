"""
L{MappingService}: keeps port mappings alive on a NAT-PMP gateway for as long as it runs.

The façade over three parts, each in its own module: the link to the gateway (an explicit
state machine, L{txnatpmp._service.link} and L{txnatpmp._service.machine}), one keeper per
mapping (L{txnatpmp._service.keeper}), and the status file (L{txnatpmp._service.status}), an
observer of the events.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger

from .._errors import GatewayTimeout
from .._events import EventKind, MappingEvent
from .._gateway import find_gateway
from .._mapper.shared import Mapper, check_methods
from .._reactor import global_reactor
from .._results import Mapping
from .._schedule import RFC_SCHEDULE, RetransmitSchedule, RetryBackoff
from .._spec import DEFAULT_LIFETIME, Gateway, MappingSpec, check_gateway, parse_lifetime, parse_spec
from .._wire import ANNOUNCE_GROUP, ANNOUNCE_PORT, SERVER_PORT, check_protocol
from .keeper import MappingKeeper
from .link import GatewayLink
from .machine import State
from .shutdown import STOP_BUDGET, delete_all
from .status import StatusFile

Observer = Callable[[MappingEvent], object]


class MappingService(Service):
    """
    Keeps mappings on a NAT-PMP gateway: creates them (one request at a time, shared with every
    other user of the gateway in this process), renews each halfway through its granted lifetime
    suggesting the same external port (R15) and keeps trying until that lifetime runs out,
    re-creates them after the gateway loses its state (R18, R19), follows announcements
    (R21-R23), probes a silent gateway with one request, and deletes them all when stopped.

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
        gateway_finder: Callable[[Any], Deferred[str]] = find_gateway,
    ) -> None:
        """
        @param gateway: The gateway's IPv4 address (or a L{Gateway}); found with
            L{find_gateway} on start if C{None}, and looked for again whenever it falls silent,
            so the service follows a change of network.
        @param reactor: Provides time, UDP and multicast; the global reactor by default.
        @param methods: The protocols to use, best first: C{"auto"} (PCP, then NAT-PMP, then
            UPnP-IGD, as the gateway answers) or some of C{"pcp"}, C{"natpmp"}, C{"upnp"}.
        @param lifetime: Lifetime requested for mappings added without one.
        @param status_file: If given, the current mappings are written there as JSON, atomically,
            after every change.
        @param announcements: Listen for gateway announcements on C{announce_group}, ports
            C{announce_port} (5350) and 5351, where draft-era gateways announce.  With
            C{announce_group=None}, bind C{announce_interface}:C{announce_port} instead (for
            gateway doubles that announce by unicast).
        @param schedule: Retransmissions for each request (the RFC's by default).
        @param retry: Waits between attempts after a failure.
        @param stop_timeout: Seconds L{stopService} may spend deleting mappings.
        @raise ValueError: for a bad gateway, lifetime or status file, before anything is sent.
        """
        if isinstance(gateway, tuple):
            gateway, gateway_port = gateway
        fixed = check_gateway(gateway, gateway_port) if gateway is not None else None
        chosen = check_methods(methods)
        self.clock = reactor if reactor is not None else global_reactor()
        self.lifetime = parse_lifetime(lifetime)
        self.schedule = schedule
        self.retry = retry
        self.rng = rng or random.Random()
        if not stop_timeout > 0:
            raise ValueError(f"stop_timeout must be positive, not {stop_timeout!r}")
        self.stop_timeout = stop_timeout
        self._keepers: dict[tuple[str, int], MappingKeeper] = {}
        self._observers: list[Observer] = []
        self._status: StatusFile | None = None
        if status_file is not None:
            self._status = StatusFile(status_file, self._snapshot)
            self._observers.append(self._status)
        self._link = GatewayLink(
            self.clock, fixed, None if fixed is not None else gateway_finder, self,
            methods=chosen, schedule=schedule, retry=retry, rng=self.rng,
            announcements=announcements,
            announce_ports=(announce_port, SERVER_PORT), announce_group=announce_group,
            announce_interface=announce_interface,
        )
        self._stopping: Deferred[None] | None = None

    # Public API

    @property
    def gateway(self) -> str | None:
        """The gateway's address, once known."""
        return self._link.gateway.host if self._link.gateway is not None else None

    @property
    def state(self) -> State:
        """Where the link to the gateway stands (a L{State})."""
        return self._link.state

    @property
    def mapper(self) -> Mapper | None:
        """The (shared) mapper talking to the gateway, while connected: its C{method} says
        which protocol the gateway speaks."""
        return self._link.mapper

    @property
    def client(self) -> Any:
        """The protocol client under the mapper (a NATPMPClient or PCPClient), if connected."""
        mapper = self._link.mapper
        return mapper.client if mapper is not None else None

    @property
    def methods(self) -> tuple[str, ...]:
        return self._link.methods

    @property
    def external_address(self) -> str | None:
        """The gateway's external address, when known."""
        return self._link.external_address

    @property
    def status_file(self) -> str | None:
        return self._status.path if self._status is not None else None

    @property
    def announcement_port(self) -> int | None:
        """The port announcements are heard on, once listening."""
        ports = self._link.announcement_ports
        return ports[0] if ports else None

    @property
    def specs(self) -> list[MappingSpec]:
        """The mappings the service keeps, whether the gateway grants them now or not."""
        return [k.spec for k in self._keepers.values()]

    @property
    def mappings(self) -> list[Mapping]:
        """The mappings the gateway currently grants."""
        return [k.mapping for k in self._keepers.values() if k.mapping is not None]

    def mapping_for(self, spec: MappingSpec) -> Mapping | None:
        """The mapping currently granted for C{spec}, if any."""
        keeper = self._keepers.get(spec.key)
        return keeper.mapping if keeper is not None else None

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
        if wanted.key in self._keepers:
            raise ValueError(f"{wanted.protocol} {wanted.internal_port} is already kept")
        keeper = MappingKeeper(
            wanted, parse_lifetime(self.lifetime if lifetime is None else lifetime), self
        )
        self._keepers[wanted.key] = keeper
        first = keeper.first()
        keeper.refresh()
        return first

    def remove_mapping(
        self, spec: str | MappingSpec, internal_port: int | None = None
    ) -> Deferred[None]:
        """
        Stop keeping a mapping and delete it from the gateway.

        @raise ValueError: if the service does not keep it.
        """
        wanted = _to_spec(spec, internal_port, 0)
        keeper = self._keepers.pop(wanted.key, None)
        if keeper is None:
            raise ValueError(f"{wanted.protocol} {wanted.internal_port} is not kept")
        keeper.stop()
        keeper.fail_waiting(CancelledError(f"{wanted} was removed"))
        mapper = self._link.mapper
        if mapper is None or not keeper.needs_delete:
            return succeed(None)
        deleted = mapper.delete(wanted, keeper.mapping)
        return deleted.addCallback(lambda _: self._removed(keeper))

    # Service

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._stopping is not None:  # started again while deleting: once that is done
            self._stopping.addBoth(self._start_again)
        else:
            self._link.start()

    def _start_again(self, result: object) -> object:
        if self.running:
            self._link.start()
        return result

    def stopService(self) -> Deferred[None]:
        """
        Cancel everything queued or in flight, then delete every mapping, each with its own
        retransmissions, within C{stop_timeout} seconds (sooner when nothing answers at all).
        """
        super().stopService()  # type: ignore[no-untyped-call]
        if self._stopping is not None:
            return self._stopping
        # Creates still unanswered may exist at a gateway that answers; at a silent one (or
        # one never found) they almost surely do not, and waiting on them made stops slow.
        answering = self._link.state in (State.CONNECTED, State.RECOVERING)
        self._link.stop()
        kept = list(self._keepers.values())
        stopping = self._stopping = Deferred.fromCoroutine(self._delete_all(kept, answering))
        stopping.addBoth(self._stopped)
        return stopping

    async def _delete_all(self, kept: list[MappingKeeper], answering: bool) -> None:
        mapper = self._link.mapper
        held = [k for k in kept if k.mapping is not None or (answering and k.unsettled)]
        if mapper is not None:
            await delete_all(held, mapper, self.clock, self.stop_timeout, self._removed)
        for keeper in kept:
            keeper.stop()
            keeper.fail_waiting(CancelledError("the service stopped"))

    def _stopped(self, result: object) -> object:
        self._stopping = None
        self._link.deleted()
        if self._status is not None:
            self._status.write()
        return result

    def _removed(self, keeper: MappingKeeper) -> None:
        previous = keeper.forget()
        self.log.info("Removed {spec.protocol} {spec.internal_port}", spec=keeper.spec)
        self.tell(MappingEvent(EventKind.REMOVED, keeper.spec, previous=previous,
                               external_address=self.external_address))

    # What keepers and the link ask (KeeperHost, Keepers)

    @property
    def may_send(self) -> bool:
        return bool(self.running) and self._link.may_send

    def heard(self) -> None:
        self._link.heard()

    def timed_out(self, error: GatewayTimeout) -> bool:
        return self._link.timed_out(error)

    def check_address(self, max_age: float) -> None:
        self._link.check_address(max_age)

    def saw_address(self, address: str | None) -> None:
        self._link.saw_address(address)

    def count(self) -> int:
        return len(self._keepers)

    def pause_all(self, error: BaseException | None) -> None:
        keepers = list(self._keepers.values())
        for keeper in keepers:
            keeper.pause()
        if error is None:
            return
        for keeper in keepers:  # observers and callers last: they may stop the service
            self.tell(MappingEvent(EventKind.FAILED, keeper.spec, previous=keeper.mapping,
                                   external_address=self.external_address, error=error))
            keeper.fail_waiting(error)

    def lose_all(self) -> None:
        for keeper in self._keepers.values():
            keeper.lose()
        if self._status is not None:
            self._status.write()

    def refresh_all(self) -> None:
        for keeper in list(self._keepers.values()):
            keeper.refresh()

    def recreate_all(self) -> None:
        for keeper in list(self._keepers.values()):
            keeper.recreate()

    def tell(self, event: MappingEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                self.log.failure("Observer {observer} failed on {event}", observer=observer,
                                 event=event)

    # The status file's content

    def _snapshot(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "state": self.state.value,
            "external_address": self.external_address,
            "mappings": [
                {
                    "protocol": k.mapping.protocol,
                    "internal_port": k.mapping.internal_port,
                    "external_port": k.mapping.external_port,
                    "lifetime": k.mapping.lifetime,
                    "method": k.mapping.method,
                    "external_address": k.mapping.external_address or self.external_address,
                    "expires": k.expires_at,
                }
                for k in self._keepers.values()
                if k.mapping is not None
            ],
        }


def _to_spec(spec: str | MappingSpec, internal_port: int | None, external_port: int) -> MappingSpec:
    if isinstance(spec, MappingSpec):
        return spec
    if internal_port is None:
        return parse_spec(spec)
    return parse_spec(f"{check_protocol(spec)}:{internal_port}" +
                      (f":{external_port}" if external_port else ""))
