"""
UPnP-IGD behind the mapper layer (issue 16): L{UPnPMapper} against L{FakeIGD} on loopback,
L{MappingService} with C{methods="upnp"}, and C{auto} falling through to UPnP when nothing
answers PCP or NAT-PMP.  Real loopback sockets only; no search is ever multicast (the gateway is
127.0.0.1, which L{UPnPClient} searches by unicast alone).
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from txnatpmp import EventKind, GatewayTimeout, MappingService, NotAuthorized, PortConflict
from txnatpmp._mapper import IPortMapper, UPnPMapper, check_methods
from txnatpmp._mapper.shared import mappers_in_use, use_ssdp_port
from txnatpmp._spec import parse_spec
from txnatpmp._upnp import UPnPClient
from txnatpmp.testing import FakeIGD

TCP = parse_spec("tcp:60010")


@pytest.fixture
def igd() -> Iterator[FakeIGD]:
    fake = FakeIGD(external_address="80.100.100.1")
    fake.listen()
    use_ssdp_port(reactor, "127.0.0.1", fake.ssdp_port)
    yield fake
    fake.stop()


class Silent(DatagramProtocol):
    """A UDP port where nothing answers: a gateway without NAT-PMP or PCP."""

    def __init__(self) -> None:
        self.received = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received += 1


@pytest.fixture
def silent_5351() -> Iterator[tuple[Silent, int]]:
    silent = Silent()
    port = reactor.listenUDP(0, silent, interface="127.0.0.1")  # type: ignore[attr-defined]
    yield silent, port.getHost().port
    port.stopListening()


def mapper_for(igd: FakeIGD) -> UPnPMapper:
    return UPnPMapper(UPnPClient("127.0.0.1", reactor, ssdp_port=igd.ssdp_port, seed=1))


async def until(condition: Callable[[], object], timeout: float = 15.0) -> None:
    """Wait for C{condition} on the reactor, failing after C{timeout} seconds."""
    waited = 0.0
    while not condition():
        assert waited < timeout, f"condition not met within {timeout} s"
        await deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


def table(igd: FakeIGD) -> list[tuple[str, int, int]]:
    return [(m.protocol, m.external_port, m.internal_port) for m in igd.mappings]


# The mapper


def test_upnp_mapper_provides_iportmapper_and_renews_at_half_the_lifetime() -> None:
    mapper = UPnPMapper(UPnPClient("127.0.0.1", reactor, ssdp_port=1))
    assert verifyObject(IPortMapper, mapper)
    assert (mapper.method, mapper.reports_address) == ("upnp", True)
    assert mapper.renewal_times(600, random.Random(0)) == [300]
    assert check_methods("upnp") == ("upnp",)
    assert check_methods("auto") == ("pcp", "natpmp", "upnp")


@pytest_twisted.ensureDeferred
async def test_upnp_mapper_maps_renews_and_deletes(igd: FakeIGD) -> None:
    mapper = mapper_for(igd)
    assert mapper.last_heard is None
    mapping = await mapper.map(TCP, 600)
    assert (mapping.method, mapping.external_port, mapping.lifetime) == ("upnp", 60010, 600)
    assert mapping.external_address == "80.100.100.1" and mapper.last_heard is not None
    assert table(igd) == [("tcp", 60010, 60010)]
    renewed = await mapper.renew(mapping, 900)
    assert (renewed.external_port, renewed.lifetime) == (60010, 900)
    # A renewal asks whether the mapping is still there, then adds it again on its port.
    assert igd.actions[-2:] == ["GetSpecificPortMappingEntry", "AddPortMapping"]
    assert (await mapper.external_address()).address == "80.100.100.1"
    await mapper.delete(TCP, renewed)
    assert table(igd) == [] and igd.actions[-1] == "DeletePortMapping"
    actions = len(igd.actions)
    await mapper.delete(parse_spec("udp:60011"))  # never mapped here: nothing is sent
    assert len(igd.actions) == actions


@pytest_twisted.ensureDeferred
async def test_upnp_mapper_remakes_a_lost_mapping_on_its_previous_port(igd: FakeIGD) -> None:
    mapper = mapper_for(igd)
    mapping = await mapper.map(parse_spec("udp:60011:61000"), 600)
    igd.forget_mappings()
    again = await mapper.map(parse_spec("udp:60011:61000"), 600, previous=mapping)
    assert again.external_port == mapping.external_port == 61000
    assert table(igd) == [("udp", 61000, 60011)]


@pytest_twisted.ensureDeferred
async def test_a_restart_is_state_lost_for_the_observers(igd: FakeIGD) -> None:
    mapper = mapper_for(igd)
    lost: list[tuple[int, float]] = []
    mapper.add_state_lost_observer(lambda received, expected: lost.append((received, expected)))
    mapping = await mapper.map(TCP, 600)
    await igd.reboot()  # new BOOTID and HTTP port, empty table
    await mapper.probe()
    assert lost == [(0, 0.0)]
    igd.forget_mappings()  # a vanished mapping (no new BOOTID) is state lost too
    await mapper.renew(mapping, 600)
    assert len(lost) == 2
    assert table(igd) == [("tcp", 60010, 60010)]


@pytest_twisted.ensureDeferred
async def test_removed_state_lost_observers_hear_nothing(igd: FakeIGD) -> None:
    mapper = mapper_for(igd)
    lost: list[object] = []

    def observer(received: int, expected: float) -> None:
        lost.append(received)

    mapper.add_state_lost_observer(observer)
    mapper.remove_state_lost_observer(observer)
    await mapper.map(TCP, 600)
    await igd.reboot()
    await mapper.probe()
    assert lost == []


@pytest_twisted.ensureDeferred
async def test_606_is_not_authorized_and_718_a_port_conflict(igd: FakeIGD) -> None:
    mapper = mapper_for(igd)
    igd.refuse_with = 606
    with pytest.raises(NotAuthorized) as refused:
        await mapper.map(TCP, 600)
    assert refused.value.code == 606
    igd.refuse_with = 718
    with pytest.raises(PortConflict) as conflict:
        await mapper.map(TCP, 600)
    assert conflict.value.code == 718
    igd.refuse_with = None
    assert table(igd) == []


@pytest_twisted.ensureDeferred
async def test_an_unreachable_device_is_a_gateway_timeout_within_the_deadline(
        igd: FakeIGD) -> None:
    mapper = mapper_for(igd)
    await mapper.map(TCP, 600)
    await igd.stop()  # the device is gone: HTTP refused, searches unanswered
    started = reactor.seconds()  # type: ignore[attr-defined]
    with pytest.raises(GatewayTimeout):
        await mapper.renew(mapper.client.mappings[0], 600, within=1.0)
    assert reactor.seconds() - started < 1.5  # type: ignore[attr-defined]


# The service


@pytest_twisted.ensureDeferred
async def test_service_with_upnp_keeps_a_mapping_through_a_reboot_and_deletes_on_stop(
        igd: FakeIGD, silent_5351: tuple[Silent, int]) -> None:
    silent, port = silent_5351
    service = MappingService("127.0.0.1", port, reactor, methods="upnp", lifetime=2,
                             announcements=False, rng=random.Random(3))
    events: list[EventKind] = []
    service.add_observer(lambda event: events.append(event.kind))
    first = service.add_mapping("tcp:60010")
    service.startService()
    mapping = await first
    assert service.mapper is not None and service.mapper.method == "upnp"
    assert (mapping.method, mapping.external_address) == ("upnp", "80.100.100.1")
    assert table(igd) == [("tcp", 60010, 60010)]
    await igd.reboot()  # noticed at the next renewal (after 1 s): re-created within 5 s more
    assert table(igd) == []
    await until(lambda: table(igd) == [("tcp", 60010, 60010)] and service.mappings)
    assert EventKind.STATE_LOST in events  # the restart, not just a renewal, re-made it
    assert EventKind.RECREATED in events[events.index(EventKind.STATE_LOST):]
    events.clear()
    igd.forget_mappings()  # a flushed table, no restart: the next renewal finds it gone
    await until(lambda: EventKind.RECREATED in events)
    assert events[0] is EventKind.STATE_LOST and table(igd) == [("tcp", 60010, 60010)]
    await service.stopService()
    assert table(igd) == []
    assert silent.received == 0  # "upnp" alone sends nothing to the NAT-PMP/PCP port
    assert mappers_in_use(reactor) == 0


@pytest_twisted.ensureDeferred
async def test_auto_picks_upnp_when_the_probe_gets_no_answer(
        igd: FakeIGD, silent_5351: tuple[Silent, int]) -> None:
    silent, port = silent_5351
    service = MappingService("127.0.0.1", port, reactor, announcements=False)
    first = service.add_mapping("udp:60011")
    started = reactor.seconds()  # type: ignore[attr-defined]
    service.startService()
    mapping = await first
    waited = reactor.seconds() - started  # type: ignore[attr-defined]
    assert mapping.method == "upnp" and service.mapper is not None
    assert service.mapper.method == "upnp"
    # The PCP ANNOUNCE went out with the IGD search beside it; the IGD answered, and the probe
    # stayed silent for the grace after it (design.md: PCP > NAT-PMP > UPnP, with a grace).
    assert 1 <= silent.received <= 2, silent.received
    assert waited < 2.0, waited
    assert table(igd) == [("udp", 60011, 60011)]
    await service.stopService()
    assert table(igd) == []


@pytest_twisted.ensureDeferred
async def test_auto_prefers_a_natpmp_answer_to_an_igd(
        igd: FakeIGD, loopback_gateway: tuple[Any, int]) -> None:
    natpmp, port = loopback_gateway
    service = MappingService("127.0.0.1", port, reactor, announcements=False)
    first = service.add_mapping("tcp:60012")
    service.startService()
    mapping = await first
    # The IGD was searched for beside the probe, and not used: NAT-PMP answered.
    assert mapping.method == "natpmp" and igd.searches <= 1 and table(igd) == []
    await service.stopService()


@pytest_twisted.ensureDeferred
async def test_natpmp_then_upnp_falls_through_when_5351_is_silent(
        igd: FakeIGD, silent_5351: tuple[Silent, int]) -> None:
    silent, port = silent_5351
    service = MappingService("127.0.0.1", port, reactor, methods=("natpmp", "upnp"),
                             announcements=False)
    first = service.add_mapping("tcp:60013")
    service.startService()
    mapping = await first
    assert mapping.method == "upnp" and silent.received >= 1
    assert table(igd) == [("tcp", 60013, 60013)]
    await service.stopService()
    assert table(igd) == []
