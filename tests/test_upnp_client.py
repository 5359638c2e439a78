"""
UPnPClient: against FakeIGD on real loopback sockets (HTTP and unicast SSDP), and on a Clock
with MemoryNetwork for its schedules and limits.  Also FakeIGD against a real peer client,
Debian's miniupnpc C{upnpc}.
"""

from __future__ import annotations

import shutil
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.iweb import IAgent
from zope.interface import implementer

from txnatpmp import (
    DecodeError,
    IGDNotFound,
    IGDUnreachable,
    Mapping,
    NotAuthorized,
    PortConflict,
    RetransmitSchedule,
)
from txnatpmp._upnp import UPnPClient
from txnatpmp._upnp.client import CONFLICT_TRIES, MAX_LEASE
from txnatpmp._upnp.description import MAX_DESCRIPTION
from txnatpmp._upnp.http import fetch
from txnatpmp._upnp import soap
from txnatpmp._upnp.ssdp import SSDP_GROUP
from txnatpmp.testing import FakeIGD, MemoryNetwork

WANIP2 = "urn:schemas-upnp-org:service:WANIPConnection:2"
QUICK = RetransmitSchedule(0.05, 2)


@pytest.fixture
def igd() -> Iterator[FakeIGD]:
    fake = FakeIGD(external_address="80.100.100.1")
    fake.listen()
    yield fake
    fake.stop()


def client_for(igd: FakeIGD, **options: Any) -> UPnPClient:
    return UPnPClient("127.0.0.1", reactor, ssdp_port=igd.ssdp_port, seed=1, **options)


# Discovery


@pytest_twisted.ensureDeferred
async def test_discovery_then_one_soap_call_per_mapping(igd: FakeIGD) -> None:
    client = client_for(igd)
    device = await client.discover()
    assert device.location == igd.location and device.boot_id == 1
    assert device.service.service_type == WANIP2
    assert device.service.control_url == f"http://127.0.0.1:{igd.http_port}/ctl/IPConn"
    assert device.external_address == "80.100.100.1"
    assert (igd.searches, igd.description_fetches, igd.actions) == (1, 1, ["GetExternalIPAddress"])
    mappings = [await client.map_port("tcp", port, lifetime=600) for port in (60010, 60011, 60012)]
    assert igd.actions[1:] == ["AddAnyPortMapping"] * 3
    assert mappings[0] == Mapping("tcp", 60010, 60010, 600, 0, "upnp", "80.100.100.1")
    assert [(m.protocol, m.external_port, m.internal_port, m.internal_client)
            for m in igd.mappings] == [("tcp", p, p, "127.0.0.1") for p in (60010, 60011, 60012)]


@pytest_twisted.ensureDeferred
async def test_requests_before_discovery_share_one_discovery(igd: FakeIGD) -> None:
    client = client_for(igd)
    mappings = await defer.gatherResults(
        [client.map_port("udp", port) for port in (5001, 5002, 5003)], consumeErrors=True)
    assert [m.external_port for m in mappings] == [5001, 5002, 5003]
    assert (igd.searches, igd.description_fetches) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_igd1_maps_with_add_port_mapping_on_the_internal_port(igd: FakeIGD) -> None:
    igd.version = 1
    client = client_for(igd)
    mapping = await client.map_port("tcp", 60010, lifetime=600)
    assert client.device is not None
    assert client.device.service.service_type.endswith("WANIPConnection:1")
    assert (mapping.external_port, mapping.lifetime) == (60010, 600)
    assert igd.actions == ["GetExternalIPAddress", "AddPortMapping"]


@pytest_twisted.ensureDeferred
async def test_ppp_only_device_maps_through_wanpppconnection(igd: FakeIGD) -> None:
    igd.ppp_only = True
    client = client_for(igd)
    mapping = await client.map_port("tcp", 60010)
    assert client.device is not None
    assert client.device.service.service_type.endswith("WANPPPConnection:1")
    assert igd.actions == ["GetExternalIPAddress", "AddPortMapping"]
    assert igd.mapping_for("tcp", mapping.external_port) is not None


@pytest_twisted.ensureDeferred
async def test_several_devices_the_wanipconnection_is_chosen(igd: FakeIGD) -> None:
    igd.several_devices = True  # a WANPPPConnection:1 listed first, and a printer
    device = await client_for(igd).discover()
    assert device.service.service_type == WANIP2
    assert device.service.control_url.endswith("/ctl/IPConn")


@pytest_twisted.ensureDeferred
async def test_oversized_description_is_refused(igd: FakeIGD) -> None:
    igd.description_padding = MAX_DESCRIPTION
    with pytest.raises(IGDUnreachable, match="over"):
        await client_for(igd).discover()


@pytest_twisted.ensureDeferred
async def test_description_with_a_doctype_is_refused(igd: FakeIGD) -> None:
    igd.doctype = True
    with pytest.raises(DecodeError, match="DOCTYPE"):
        await client_for(igd).discover()


@pytest_twisted.ensureDeferred
async def test_soap_responses_oversized_or_with_a_doctype_are_refused(igd: FakeIGD) -> None:
    client = client_for(igd)
    await client.discover()
    igd.response_padding = 16 * 1024
    with pytest.raises(IGDUnreachable, match="over"):
        await client.map_port("tcp", 60010)
    igd.response_padding = 0
    igd.doctype = True
    with pytest.raises(DecodeError, match="DOCTYPE"):
        await client.get_external_address()


@pytest_twisted.ensureDeferred
async def test_location_on_another_host_is_not_fetched(igd: FakeIGD) -> None:
    igd.location_host = "127.0.0.2"
    with pytest.raises(IGDNotFound):
        await client_for(igd, search_schedule=QUICK).discover()
    assert igd.searches == 2 and igd.description_fetches == 0


@pytest_twisted.ensureDeferred
async def test_silence_is_igd_not_found(igd: FakeIGD) -> None:
    igd.answer_searches = False
    with pytest.raises(IGDNotFound) as caught:
        await client_for(igd, search_schedule=QUICK).discover()
    assert caught.value.attempts == 2


@pytest_twisted.ensureDeferred
async def test_external_address_zero_is_unknown(igd: FakeIGD) -> None:
    igd.external_address = "0.0.0.0"
    client = client_for(igd)
    assert (await client.get_external_address()).address == "0.0.0.0"
    assert (await client.map_port("tcp", 60010)).external_address is None


def test_bad_arguments_raise_value_error_before_anything_is_sent() -> None:
    client = UPnPClient("127.0.0.1", Clock(), ssdp_port=9)
    for call in (lambda: client.map_port("sctp", 60010), lambda: client.map_port("tcp", 0),
                 lambda: client.map_port("tcp", 70000), lambda: client.map_port("tcp", 1, 70000),
                 lambda: client.map_port("tcp", 1, lifetime=0)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        UPnPClient("router.lan", Clock())


# Mapping pitfalls


@pytest_twisted.ensureDeferred
async def test_718_on_igd1_tries_another_port(igd: FakeIGD) -> None:
    igd.version = 1
    igd.fault_next = [718, 718]
    mapping = await client_for(igd).map_port("tcp", 60010)
    assert igd.actions.count("AddPortMapping") == 3
    assert mapping.external_port != 60010 and 1024 <= mapping.external_port <= 65535
    assert igd.mapping_for("tcp", mapping.external_port) is not None


@pytest_twisted.ensureDeferred
async def test_718_every_time_is_a_port_conflict(igd: FakeIGD) -> None:
    igd.version = 1
    igd.refuse_with = 718
    with pytest.raises(PortConflict) as caught:
        await client_for(igd).map_port("tcp", 60010)
    assert caught.value.code == 718
    assert igd.actions.count("AddPortMapping") == CONFLICT_TRIES


@pytest_twisted.ensureDeferred
async def test_another_internal_client_in_secure_mode_is_a_conflict(igd: FakeIGD) -> None:
    igd.version = 1
    with pytest.raises(PortConflict):
        await client_for(igd, internal_client="127.0.0.9").map_port("tcp", 60010)
    assert igd.mappings == []


@pytest_twisted.ensureDeferred
async def test_606_is_not_authorized_from_upnp(igd: FakeIGD) -> None:
    igd.refuse_with = 606
    with pytest.raises(NotAuthorized) as caught:
        await client_for(igd).map_port("tcp", 60010)
    assert caught.value.code == 606 and getattr(caught.value, "protocol") == "upnp"


@pytest_twisted.ensureDeferred
async def test_725_permanent_leases_only_still_renewed_and_deleted(igd: FakeIGD) -> None:
    igd.version = 1
    igd.permanent_only = True
    client = client_for(igd)
    mapping = await client.map_port("tcp", 60010, lifetime=600)
    assert mapping.lifetime == 600  # when to renew; the router holds it permanently
    held = igd.mapping_for("tcp", 60010)
    assert held is not None and held.lease == 0 and held.expires is None
    renewed = await client.renew(mapping)
    assert renewed.external_port == 60010
    assert igd.actions == ["GetExternalIPAddress", "AddPortMapping", "AddPortMapping",
                           "AddPortMapping"]  # 725, then lease 0; the renewal asks 0 at once
    await client.unmap_port(renewed)
    assert igd.mappings == []


@pytest_twisted.ensureDeferred
async def test_402_to_a_finite_lease_retries_with_lease_0(igd: FakeIGD) -> None:
    igd.fault_next = [402]
    mapping = await client_for(igd).map_port("udp", 5353, lifetime=600)
    assert igd.actions == ["GetExternalIPAddress", "AddAnyPortMapping", "AddAnyPortMapping"]
    assert mapping.lifetime == 600
    held = igd.mapping_for("udp", 5353)
    assert held is not None and held.lease == MAX_LEASE  # IGD:2 lease 0 is its longest


@pytest_twisted.ensureDeferred
async def test_401_to_add_any_port_mapping_falls_back_to_add_port_mapping(igd: FakeIGD) -> None:
    igd.fault_next = [401]
    client = client_for(igd)
    await client.map_port("tcp", 60010)
    await client.map_port("tcp", 60011)
    assert igd.actions == ["GetExternalIPAddress", "AddAnyPortMapping", "AddPortMapping",
                           "AddPortMapping"]


@pytest_twisted.ensureDeferred
async def test_ignored_leases_still_get_renewals_and_a_delete(igd: FakeIGD) -> None:
    igd.ignore_leases = True
    client = client_for(igd)
    mapping = await client.map_port("tcp", 60010, lifetime=600)
    assert mapping.lifetime == 600
    renewed = await client.renew(mapping)
    assert (renewed.external_port, igd.actions[-1]) == (60010, "AddPortMapping")
    await client.unmap_port(renewed)
    assert igd.mappings == [] and igd.actions[-1] == "DeletePortMapping"


@pytest_twisted.ensureDeferred
async def test_lease_is_capped_as_igd2_caps_it(igd: FakeIGD) -> None:
    mapping = await client_for(igd).map_port("tcp", 60010, lifetime=10**7)
    held = igd.mapping_for("tcp", 60010)
    assert mapping.lifetime == MAX_LEASE and held is not None and held.lease == MAX_LEASE


@pytest_twisted.ensureDeferred
async def test_own_mappings_are_never_overwritten(igd: FakeIGD) -> None:
    client = client_for(igd)
    first = await client.map_port("tcp", 60010, 50000)
    second = await client.map_port("tcp", 60011, 50000)
    assert first.external_port == 50000 and second.external_port != 50000
    assert {(m.external_port, m.internal_port) for m in igd.mappings} == {
        (50000, 60010), (second.external_port, 60011)}


@pytest_twisted.ensureDeferred
async def test_privileged_internal_port_gets_an_unprivileged_external_suggestion(
        igd: FakeIGD) -> None:
    igd.version = 1
    mapping = await client_for(igd).map_port("tcp", 80)
    assert mapping.external_port >= 1024


@pytest_twisted.ensureDeferred
async def test_internal_client_is_the_source_address_toward_the_gateway(igd: FakeIGD) -> None:
    await client_for(igd).map_port("tcp", 60010)  # secure mode: 718 unless it is the requester
    assert [m.internal_client for m in igd.mappings] == ["127.0.0.1"]


@pytest_twisted.ensureDeferred
async def test_deleting_a_missing_mapping_succeeds(igd: FakeIGD) -> None:
    client = client_for(igd)
    mapping = await client.map_port("tcp", 60010)
    await client.unmap_port(mapping)
    again = await client.unmap_port(mapping)
    assert (again.external_port, again.lifetime) == (0, 0)
    assert client.mappings == []


# Restarts


@pytest_twisted.ensureDeferred
async def test_reboot_is_noticed_by_a_renewal_which_recreates_the_mapping(igd: FakeIGD) -> None:
    client = client_for(igd)
    heard: list[str] = []
    client.add_restart_observer(heard.append)
    mapping = await client.map_port("tcp", 60010, lifetime=600)
    await igd.reboot()  # new BOOTID, new HTTP port, empty table
    renewed = await client.renew(mapping)
    assert heard == ["BOOTID 1 became 2"]
    assert renewed == mapping
    assert client.device is not None and client.device.location == igd.location
    assert [(m.external_port, m.internal_port) for m in igd.mappings] == [(60010, 60010)]
    assert igd.searches == 2


@pytest_twisted.ensureDeferred
async def test_check_reports_a_vanished_mapping_and_reestablish_recreates_all(
        igd: FakeIGD) -> None:
    client = client_for(igd)
    heard: list[str] = []
    client.add_restart_observer(heard.append)
    tcp = await client.map_port("tcp", 60010, lifetime=600)
    await client.map_port("udp", 60011, lifetime=900)
    assert await client.check(tcp)
    igd.forget_mappings()  # the router lost its table without restarting
    assert not await client.check(tcp)
    assert heard == ["mapping tcp 60010 vanished"]
    back = await client.reestablish()
    assert sorted((m.protocol, m.external_port, m.lifetime) for m in back) == [
        ("tcp", 60010, 600), ("udp", 60011, 900)]
    assert len(igd.mappings) == 2


@pytest_twisted.ensureDeferred
async def test_a_device_that_stays_unreachable_fails_with_igd_unreachable(igd: FakeIGD) -> None:
    client = client_for(igd, search_schedule=QUICK)
    mapping = await client.map_port("tcp", 60010)
    igd.answer_searches = False
    await igd.stop()
    with pytest.raises((IGDNotFound, IGDUnreachable)):
        await client.renew(mapping)


# FakeIGD against a real peer client


@pytest.mark.skipif(shutil.which("upnpc") is None, reason="miniupnpc's upnpc is not installed")
@pytest_twisted.ensureDeferred
async def test_upnpc_maps_lists_and_deletes_through_fake_igd(igd: FakeIGD) -> None:
    async def upnpc(*argv: str) -> str:
        out, err, code = await getProcessOutputAndValue("upnpc", ["-u", igd.location, *argv])
        assert code == 0, err
        return out.decode()

    added = await upnpc("-a", "127.0.0.1", "60010", "60010", "tcp", "600")
    assert "external 80.100.100.1:60010 TCP is redirected to internal 127.0.0.1:60010" in added
    assert [(m.external_port, m.lease) for m in igd.mappings] == [(60010, 600)]
    await upnpc("-d", "60010", "tcp")
    assert igd.mappings == []


# On a Clock: schedules and limits, nothing on a real network


@implementer(IAgent)
class SilentAgent:
    """An agent whose requests are never answered; records them."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes, defer.Deferred[Any]]] = []
        self.cancelled = 0

    def request(self, method: bytes, uri: bytes, headers: Any = None,
                bodyProducer: Any = None) -> defer.Deferred[Any]:
        def cancel(d: defer.Deferred[Any]) -> None:
            self.cancelled += 1

        d: defer.Deferred[Any] = defer.Deferred(cancel)
        self.requests.append((method, uri, d))
        return d


def memory_client(
    multicast: bool | None = None, gateway: str = "198.51.100.1",
) -> tuple[Clock, MemoryNetwork, UPnPClient, SilentAgent]:
    clock = Clock()
    network = MemoryNetwork(clock)
    agent = SilentAgent()
    client = UPnPClient(gateway, network.host("198.51.100.10"), agent=agent,
                        multicast=multicast, internal_client="198.51.100.10")
    return clock, network, client, agent


def test_searches_at_0_half_and_one_and_a_half_seconds_then_gives_up_at_3_5() -> None:
    clock, network, client, _ = memory_client(multicast=True)
    failures: list[Any] = []
    client.discover().addErrback(failures.append)
    clock.pump([0.25] * 14)
    unicast = [d.time for d in network.sent_to(("198.51.100.1", 1900))]
    multicast = [d.time for d in network.sent_to((SSDP_GROUP, 1900))]
    assert unicast == multicast == [0, 0.5, 1.5]
    assert len(failures) == 1 and failures[0].check(IGDNotFound)
    assert failures[0].value.attempts == 3 and failures[0].value.waited == 3.5


def test_a_loopback_gateway_is_never_searched_by_multicast() -> None:
    clock, network, client, _ = memory_client(gateway="127.0.0.1")
    client.discover().addErrback(lambda _: None)
    clock.pump([1] * 5)
    assert len(network.sent_to(("127.0.0.1", 1900))) == 3
    assert network.sent_to((SSDP_GROUP, 1900)) == []


def test_answers_from_elsewhere_or_malformed_are_ignored_then_the_gateways_is_taken() -> None:
    clock, network, client, agent = memory_client(multicast=False)
    client.discover()
    clock.advance(0)
    search = network.sent_to(("198.51.100.1", 1900))[0].source
    good = (b"HTTP/1.1 200 OK\r\nLOCATION: http://198.51.100.1:5000/d.xml\r\n"
            b"BOOTID.UPNP.ORG: 3\r\n\r\n")
    network.deliver(good, ("198.51.100.66", 1900), search)           # another host
    network.deliver(b"\x00" * 3000, ("198.51.100.1", 1900), search)  # garbage
    network.deliver(good.replace(b"198.51.100.1:", b"198.51.100.66:"), ("198.51.100.1", 1900),
                    search)                                          # LOCATION elsewhere
    assert agent.requests == []
    network.deliver(good, ("198.51.100.1", 1900), search)
    assert [(m, u) for m, u, _ in agent.requests] == [(b"GET", b"http://198.51.100.1:5000/d.xml")]


def test_every_http_request_times_out_on_the_clock() -> None:
    clock = Clock()
    agent = SilentAgent()
    failures: list[Any] = []
    d = defer.Deferred.fromCoroutine(fetch(agent, clock, b"GET", "http://198.51.100.1/d.xml",
                                           limit=100, timeout=2.0))
    d.addErrback(failures.append)
    clock.advance(1.9)
    assert failures == []
    clock.advance(0.1)
    assert len(failures) == 1 and failures[0].check(IGDUnreachable)
    assert "within 2.0 s" in str(failures[0].value) and agent.cancelled == 1
    assert clock.getDelayedCalls() == []


class Transport:
    stopped = 0

    def stopProducing(self) -> None:
        self.stopped += 1


class Response:
    """A response of unknown length whose body arrives in 60-byte pieces."""

    code = 200
    length = None

    def __init__(self) -> None:
        self.transport = Transport()

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(self.transport)
        for _ in range(5):
            protocol.dataReceived(b"x" * 60)


def test_a_body_over_the_cap_stops_the_transfer() -> None:
    clock = Clock()
    agent = SilentAgent()
    failures: list[Any] = []
    d = defer.Deferred.fromCoroutine(fetch(agent, clock, b"GET", "http://198.51.100.1/d.xml",
                                           limit=100, timeout=2.0))
    d.addErrback(failures.append)
    response = Response()
    agent.requests[0][2].callback(response)
    assert len(failures) == 1 and failures[0].check(IGDUnreachable)
    assert "over 100 bytes" in str(failures[0].value)
    assert response.transport.stopped == 1
    assert clock.getDelayedCalls() == []


class CannedAgent:
    """Answers HTTP requests at once from a FakeIGD's texts, with no sockets."""

    def __init__(self, igd: FakeIGD, requester: str) -> None:
        self.igd = igd
        self.requester = requester

    def request(self, method: bytes, uri: bytes, headers: Any = None,
                bodyProducer: Any = None) -> defer.Deferred[Any]:
        if method == b"GET":
            return defer.succeed(Canned(200, self.igd.description()))
        sink = Sink()
        bodyProducer.startProducing(sink)
        status, body = self.igd.act(*soap.decode_request(sink.data), self.requester)
        return defer.succeed(Canned(status, body))


class Sink:
    data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class Canned:
    def __init__(self, code: int, body: bytes) -> None:
        self.code, self.body, self.length = code, body, len(body)

    def deliverBody(self, protocol: Any) -> None:
        from twisted.web.client import ResponseDone
        from twisted.python.failure import Failure

        protocol.makeConnection(Transport())
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


def notify(boot_id: int, port: int, kind: str = "alive") -> bytes:
    return (f"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\n"
            f"NTS: ssdp:{kind}\r\nLOCATION: http://198.51.100.1:{port}/rootDesc.xml\r\n"
            f"BOOTID.UPNP.ORG: {boot_id}\r\n\r\n").encode()


def test_an_announced_new_bootid_tells_the_observers_once() -> None:
    clock = Clock()
    network = MemoryNetwork(clock)
    igd = FakeIGD(clock)
    client = UPnPClient("198.51.100.1", network.host("198.51.100.10"),
                        agent=CannedAgent(igd, "198.51.100.10"), multicast=False,
                        internal_client="198.51.100.10")
    heard: list[str] = []
    client.add_restart_observer(heard.append)

    def discover(boot_id: int, port: int) -> None:
        found = client.discover()
        clock.advance(0)
        search = network.sent[-1].source
        network.deliver(notify(boot_id, port).replace(b"NOTIFY * HTTP/1.1", b"HTTP/1.1 200 OK"),
                        ("198.51.100.1", 1900), search)
        assert found.called

    discover(1, 5000)
    listener = client.listen_for_restarts()
    here = ("198.51.100.10", 1900)
    network.deliver(notify(1, 5000), ("198.51.100.1", 1900), here)     # the same boot
    network.deliver(notify(2, 5001), ("198.51.100.66", 1900), here)    # another host
    network.deliver(b"NOTIFY * HTTP/1.1\r\nNTS: nonsense\r\n\r\n", ("198.51.100.1", 1900), here)
    network.deliver(notify(2, 5001).replace(b"198.51.100.1:", b"198.51.100.66:"),
                    ("198.51.100.1", 1900), here)                      # LOCATION elsewhere
    assert heard == []
    network.deliver(notify(2, 5001, "byebye"), ("198.51.100.1", 1900), here)
    for _ in range(3):
        network.deliver(notify(2, 5001), ("198.51.100.1", 1900), here)
    assert heard == ["BOOTID 1 became 2 (announced)"]
    discover(2, 5001)  # the discovery the next request makes reports nothing more
    assert heard == ["BOOTID 1 became 2 (announced)"]
    assert client.device is not None and client.device.location.endswith(":5001/rootDesc.xml")
    listener.stopListening()
