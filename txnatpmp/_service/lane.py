"""
L{FamilyLane}: what a service keeps on one address family, an IPv4 mapping or an IPv6 pinhole
per spec, with its own link to that family's gateway (its own client, so its own nonces and
epoch, P48).  The lane is what its keepers and its link talk to; the service holds one lane per
family and speaks for all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from attrs import evolve

from .._errors import GatewayTimeout
from .._events import EventKind, MappingEvent
from .._mapper.shared import Mapper
from .._results import Mapping
from .._spec import Gateway, MappingSpec
from .keeper import MappingKeeper
from .link import Finder, GatewayLink

if TYPE_CHECKING:
    from .service import MappingService


class FamilyLane:
    """
    The mappings of one address family (C{4} or C{6}) and the link that keeps them.

    @ivar link: The L{GatewayLink} to this family's gateway (the IPv6 router for C{6}).
    """

    def __init__(self, service: MappingService, family: int, gateway: Gateway | None,
                 finder: Finder | None, **link_options: Any) -> None:
        """
        @param gateway: This family's gateway, or C{None} to find it with C{finder}.
        @param link_options: For the L{GatewayLink}.
        """
        self.service = service
        self.family = family
        self.link = GatewayLink(service.clock, gateway, finder, self, family=family,
                                **link_options)
        self.clock = service.clock
        self.retry = service.retry
        self.rng = service.rng
        self._keepers: dict[tuple[str, int], MappingKeeper] = {}

    def __repr__(self) -> str:
        return f"<FamilyLane IPv{self.family}: {len(self._keepers)} mappings>"

    # The service's side

    def keepers(self) -> Iterator[MappingKeeper]:
        return iter(list(self._keepers.values()))

    def keeper(self, spec: MappingSpec) -> MappingKeeper | None:
        return self._keepers.get(spec.key)

    def add(self, spec: MappingSpec, lifetime: int) -> MappingKeeper:
        keeper = self._keepers[spec.key] = MappingKeeper(spec, lifetime, self)
        return keeper

    def remove(self, spec: MappingSpec) -> MappingKeeper | None:
        return self._keepers.pop(spec.key, None)

    # What keepers ask (KeeperHost)

    @property
    def mapper(self) -> Mapper | None:
        return self.link.mapper

    @property
    def may_send(self) -> bool:
        return bool(self.service.running) and self.link.may_send

    @property
    def external_address(self) -> str | None:
        return self.link.external_address

    def heard(self) -> None:
        self.link.heard()

    def timed_out(self, error: GatewayTimeout) -> bool:
        return self.link.timed_out(error)

    def check_address(self, max_age: float) -> None:
        self.link.check_address(max_age)

    def saw_address(self, address: str | None) -> None:
        self.link.saw_address(address)

    def tell(self, event: MappingEvent) -> None:
        if event.family != self.family:  # events are made for family 4 by default
            event = evolve(event, family=self.family)
        self.service.tell(event)

    # What the link asks (Keepers)

    def count(self) -> int:
        return len(self._keepers)

    def granted(self) -> list[Mapping]:
        return [k.mapping for k in self._keepers.values() if k.mapping is not None]

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
        self.service.write_status()

    def refresh_all(self) -> None:
        for keeper in list(self._keepers.values()):
            keeper.refresh()

    def recreate_all(self) -> None:
        for keeper in list(self._keepers.values()):
            keeper.recreate()


def describe(lane: FamilyLane) -> dict[str, Any]:
    """A lane's link as the status file shows it."""
    gateway = lane.link.gateway
    return {"family": lane.family, "gateway": gateway.host if gateway is not None else None,
            "state": lane.link.state.value, "external_address": lane.external_address}
