"""
The natpmp: server endpoint, against FakeGateway on loopback.
"""

from __future__ import annotations

import socket
from typing import Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol

from txnatpmp import EventKind, MappingEvent, NotAuthorized, hold_mapping
from txnatpmp._mapper.shared import check_methods
from txnatpmp.endpoints import NATPMPServerEndpoint, NATPMPServerParser
from txnatpmp.testing import FakeGateway


def parse(description: str) -> NATPMPServerEndpoint:
    endpoint = serverFromString(reactor, description)
    assert isinstance(endpoint, NATPMPServerEndpoint)
    return endpoint


def test_plugin_parses_the_short_form_with_options() -> None:
    endpoint = parse(r"natpmp:8080:interface=127.0.0.1:external=80:lifetime=3600:"
                     r"gateway=198.51.100.1\:15351")
    assert isinstance(endpoint.inner, TCP4ServerEndpoint)
    assert (endpoint.inner._port, endpoint.inner._interface) == (8080, "127.0.0.1")
    assert (endpoint.external_port, endpoint.lifetime) == (80, 3600)
    assert (endpoint.gateway, endpoint.gateway_port) == ("198.51.100.1", 15351)
    assert (parse("natpmp:8080").gateway, parse("natpmp:8080").lifetime) == (None, 7200)


def test_plugin_wraps_any_inner_endpoint() -> None:
    endpoint = parse(r"natpmp:tcp:8080:interface=127.0.0.1:external=9090")
    assert isinstance(endpoint.inner, TCP4ServerEndpoint)
    assert (endpoint.inner._port, endpoint.inner._interface) == (8080, "127.0.0.1")
    assert endpoint.external_port == 9090


@pytest.mark.parametrize(
    "description, message",
    [
        ("natpmp:", "needs a port"),
        ("natpmp:65536", "port must be a port from 0 to 65535"),
        ("natpmp:http", "Unknown endpoint type"),
        ("natpmp:8080:external=0", "external must be a port from 1"),
        ("natpmp:8080:external=x", "external must be a port"),
        ("natpmp:8080:lifetime=0", "lifetime"),
        ("natpmp:8080:lifetime=forever", "lifetime"),
        ("natpmp:8080:gateway=router.lan", "IPv4 address"),
        (r"natpmp:8080:gateway=198.51.100.1\:x", "gateway port"),
        ("natpmp:8080:colour=blue", "unknown options"),
        ("natpmp:8080:method=igd", "methods must be 'auto' or some of"),
        ("natpmp:8080:method=", "methods must be 'auto' or some of"),
    ],
)
def test_bad_descriptions_raise_value_error(description: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        serverFromString(reactor, description)


def test_method_keyword_chooses_the_methods() -> None:
    assert parse("natpmp:8080").methods == ("pcp", "natpmp", "upnp")
    assert parse("natpmp:8080:method=auto").methods == ("pcp", "natpmp", "upnp")
    assert parse("natpmp:8080:method=pcp").methods == ("pcp",)
    assert parse("natpmp:8080:method=upnp").methods == ("upnp",)
    endpoint = parse(r"natpmp:tcp:8080:interface=127.0.0.1:method=natpmp")
    assert endpoint.methods == ("natpmp",)
    assert endpoint.inner._interface == "127.0.0.1"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="methods must be"):
        NATPMPServerEndpoint(reactor, TCP4ServerEndpoint(reactor, 0), methods="igd")


def test_family_keyword_chooses_the_families_and_an_ipv6_listener() -> None:
    assert parse("natpmp:8080").families == (4,)
    assert isinstance(parse("natpmp:8080").inner, TCP4ServerEndpoint)
    for description in ("natpmp:8080:family=46", "natpmp:8080:family=6"):
        endpoint = parse(description)
        assert isinstance(endpoint.inner, TCP6ServerEndpoint)
        assert endpoint.inner._interface == "::"  # type: ignore[attr-defined]
    assert parse("natpmp:8080:family=46").families == (4, 6)
    endpoint = parse(r"natpmp:8080:family=46:gateway6=fe80\:\:1%eth0")
    assert endpoint._service_options["gateway6"] == ("fe80::1%eth0", 5351)
    endpoint = parse(r"natpmp:8080:family=46:gateway6=[2001\:db8\:\:1]\:6000")
    assert endpoint._service_options["gateway6"] == ("2001:db8::1", 6000)
    for bad, message in [("natpmp:8080:family=5", "family must be 4, 6 or 46"),
                         ("natpmp:8080:family=", "family must be 4, 6 or 46"),
                         (r"natpmp:8080:family=6:gateway6=fe80\:\:1", "needs its interface"),
                         ("natpmp:8080:family=46:gateway6=198.51.100.1",
                          "gateway6 must be the IPv6 router")]:
        with pytest.raises(ValueError, match=message):
            serverFromString(reactor, bad)


def test_parser_object_is_the_plugin() -> None:
    assert NATPMPServerParser.prefix == "natpmp"
    endpoint = NATPMPServerParser().parseStreamServer(reactor, "8080")
    assert isinstance(endpoint, NATPMPServerEndpoint)


class Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"hi")
        self.transport.loseConnection()


@pytest.fixture
def gateway() -> Iterator[tuple[FakeGateway, int]]:
    fake = FakeGateway(external_address="80.100.100.1")
    fake.min_lifetime = 1
    port = fake.listen()
    yield fake, port.getHost().port
    port.stopListening()


def endpoint_for(gateway_port: int, lifetime: int = 7200, port: int = 0) -> NATPMPServerEndpoint:
    inner = TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
    return NATPMPServerEndpoint(reactor, inner, lifetime=lifetime, gateway="127.0.0.1",
                                gateway_port=gateway_port, announcements=False)


async def refused(port: int) -> bool:
    try:
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(Factory.forProtocol(Protocol))
    except ConnectionRefusedError:
        return True
    return False


@pytest_twisted.ensureDeferred
async def test_listen_maps_and_stop_listening_unmaps(gateway: tuple[FakeGateway, int]) -> None:
    fake, gateway_port = gateway
    listening = await endpoint_for(gateway_port).listen(Factory.forProtocol(Greeter))
    local = listening.getHost().port
    mapping = fake.mapping_for("tcp", local)
    assert mapping is not None
    assert (listening.public_address, listening.public_port) == ("80.100.100.1",
                                                                 mapping.external_port)
    await listening.stopListening()
    assert fake.mappings == []
    assert await refused(local)


@pytest_twisted.ensureDeferred
async def test_refused_mapping_fails_listen_and_closes_the_port(
    gateway: tuple[FakeGateway, int],
) -> None:
    fake, gateway_port = gateway
    fake.refuse_with = 2
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with pytest.raises(NotAuthorized):
        await endpoint_for(gateway_port, port=free).listen(Factory.forProtocol(Greeter))
    assert await refused(free)


@pytest_twisted.ensureDeferred
async def test_mapping_renewed_and_restored_after_a_reboot_while_listening(
    gateway: tuple[FakeGateway, int],
) -> None:
    fake, gateway_port = gateway
    listening = await endpoint_for(gateway_port, lifetime=1).listen(Factory.forProtocol(Greeter))
    try:
        renewals: list[defer.Deferred[MappingEvent]] = [defer.Deferred() for _ in range(2)]

        def observe(event: MappingEvent) -> None:
            if event.kind is EventKind.RENEWED and renewals:
                renewals.pop(0).callback(event)

        listening.service.add_observer(observe)
        first = renewals[0]
        await first.addTimeout(5, reactor)
        fake.reboot(announce=False)
        assert fake.mappings == []
        await renewals[0].addTimeout(5, reactor)  # the next renewal re-creates it
        assert fake.mapping_for("tcp", listening.getHost().port) is not None
    finally:
        await listening.stopListening()
    assert fake.mappings == []


@pytest.mark.parametrize(
    "description, message",
    [
        ("natpmp:8080:external=\u0668\u0660", "external must be a port"),
        ("natpmp:8080:external=\uff18\uff10", "external must be a port"),
        ("natpmp:8080:lifetime=\u0663\u0666\u0660\u0660", "lifetime"),
        ("natpmp:8080:gateway=198.51.100.1\\:\u0665\u0663\u0665\u0661", "gateway port"),
    ],
)
def test_only_ascii_digits_make_a_number_in_an_endpoint_string(description: str,
                                                                message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(description)
    with pytest.raises(ValueError):
        parse("natpmp:\u0668\u0660\u0668\u0660")  # not the short form, and no endpoint either


@pytest.fixture
def pcp_gateway() -> Iterator[tuple[FakeGateway, int]]:
    fake = FakeGateway(external_address="80.100.100.1", pcp=True)
    port = fake.listen()
    yield fake, port.getHost().port
    port.stopListening()


def _methods_seen(fake: FakeGateway) -> set[str]:
    return {"pcp" if r.data[:1] == b"\x02" else "natpmp" for r in fake.received}


@pytest.mark.parametrize("methods, used", [("auto", "pcp"), ("pcp", "pcp"),
                                           (("natpmp",), "natpmp")])
@pytest_twisted.ensureDeferred
async def test_endpoint_maps_with_the_method_asked_for(
    pcp_gateway: tuple[FakeGateway, int], methods: str | tuple[str, ...], used: str,
) -> None:
    """The endpoint's methods: auto and pcp map through PCP on a PCP gateway; natpmp keeps to
    NAT-PMP; the delete on stopListening uses the same method (P30)."""
    fake, gateway_port = pcp_gateway
    inner = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    endpoint = NATPMPServerEndpoint(reactor, inner, gateway="127.0.0.1",
                                    gateway_port=gateway_port, announcements=False,
                                    methods=methods)
    listening = await endpoint.listen(Factory.forProtocol(Greeter))
    assert listening.mapping is not None and listening.mapping.method == used
    assert listening.public_address == "80.100.100.1"
    await listening.stopListening()
    assert fake.mappings == []
    assert _methods_seen(fake) == {used}


@pytest.mark.parametrize("methods, used", [("auto", "pcp"), (("natpmp",), "natpmp")])
@pytest_twisted.ensureDeferred
async def test_hold_mapping_passes_methods_to_the_service(
    pcp_gateway: tuple[FakeGateway, int], methods: str | tuple[str, ...], used: str,
) -> None:
    """hold_mapping(..., methods=...) reaches the service that holds the mapping."""
    fake, gateway_port = pcp_gateway
    async with hold_mapping("udp:18090", "127.0.0.1", gateway_port, reactor,
                            methods=methods, announcements=False) as held:
        assert held.service.methods == check_methods(methods)
        assert held.mapping is not None and held.mapping.method == used
        assert fake.mapping_for("udp", 18090) is not None
    assert fake.mappings == []
    assert _methods_seen(fake) == {used}
