"""
NATPMPClient and FakeGateway on real UDP sockets bound to 127.0.0.1.
"""

from __future__ import annotations

import shutil
import socket

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue

from txnatpmp import GatewayTimeout, NATPMPClient, RetransmitSchedule
from txnatpmp._wire import MappingRequest, MappingResponse, encode
from txnatpmp.testing import FakeGateway


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def client_for():  # type: ignore[no-untyped-def]
    ports = []

    def start(gateway_port: int, **kwargs: object) -> NATPMPClient:
        client = NATPMPClient("127.0.0.1", gateway_port, **kwargs)  # type: ignore[arg-type]
        ports.append(reactor.listenUDP(0, client, interface="127.0.0.1"))
        return client

    yield start
    for port in ports:
        port.stopListening()


@pytest_twisted.ensureDeferred
async def test_R08_thousand_concurrent_mappings_one_in_flight(loopback_gateway, client_for) -> None:  # type: ignore[no-untyped-def]
    fake, port = loopback_gateway
    client = client_for(port)
    internal_ports = range(20000, 21000)
    mappings = await defer.gatherResults(
        [client.map_port("tcp", p, lifetime=600) for p in internal_ports], consumeErrors=True
    )
    assert [m.internal_port for m in mappings] == list(internal_ports)
    assert len({m.external_port for m in mappings}) == 1000
    assert len(fake.mappings) == 1000
    assert fake.max_outstanding == 1


@pytest_twisted.ensureDeferred
async def test_fake_gateway_sees_concurrency_of_a_client_that_does_not_queue(loopback_gateway) -> None:  # type: ignore[no-untyped-def]
    """The measure behind R08 can fail: requests sent all at once are seen outstanding together."""
    fake, port = loopback_gateway
    received = defer.Deferred()  # type: ignore[var-annotated]
    answers: list[bytes] = []

    class Blaster(DatagramProtocol):
        def datagramReceived(self, data: bytes, addr: object) -> None:
            answers.append(data)
            if len(answers) == 50:
                received.callback(None)

    blaster = reactor.listenUDP(0, Blaster(), interface="127.0.0.1")
    try:
        for p in range(50):
            blaster.write(encode(MappingRequest("udp", 3000 + p, 0, 60)), ("127.0.0.1", port))
        await received
    finally:
        blaster.stopListening()
    assert fake.max_outstanding > 1


@pytest_twisted.ensureDeferred
async def test_R11_forged_answer_from_another_local_socket_is_ignored(loopback_gateway, client_for) -> None:  # type: ignore[no-untyped-def]
    fake, port = loopback_gateway
    fake.delay = 0.1
    client = client_for(port)
    pending = client.map_port("tcp", 8080, lifetime=600)
    client_address = ("127.0.0.1", client.transport.getHost().port)
    forger = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    try:
        forger.write(encode(MappingResponse("tcp", 0, 0, 8080, 6666, 600)), client_address)
        mapping = await pending
    finally:
        forger.stopListening()
    assert mapping.external_port == 8080
    assert mapping.external_port == fake.mapping_for("tcp", 8080).external_port


@pytest_twisted.ensureDeferred
async def test_R10_port_unreachable_does_not_kill_the_client(client_for) -> None:  # type: ignore[no-untyped-def]
    """Nothing listens at first: loopback answers with ICMP port unreachable.  An unconnected
    UDP port ignores that, so the client still works once a gateway appears there."""
    gateway_port = free_udp_port()
    client = client_for(gateway_port, schedule=RetransmitSchedule(0.05, 2))
    with pytest.raises(GatewayTimeout):
        await client.get_external_address()
    fake = FakeGateway(external_address="80.100.100.1")
    listening = fake.listen(port=gateway_port)
    try:
        address = await client.get_external_address()
    finally:
        listening.stopListening()
    assert address.address == "80.100.100.1"


@pytest_twisted.ensureDeferred
async def test_fake_gateway_announces_to_unicast_destinations(loopback_gateway) -> None:  # type: ignore[no-untyped-def]
    fake, _ = loopback_gateway
    heard: defer.Deferred[bytes] = defer.Deferred()

    class Listener(DatagramProtocol):
        def datagramReceived(self, data: bytes, addr: object) -> None:
            if not heard.called:
                heard.callback(data)

    listener = reactor.listenUDP(0, Listener(), interface="127.0.0.1")
    try:
        fake.announce_to.append(("127.0.0.1", listener.getHost().port))
        fake.set_external_address("80.100.100.2")
        data = await heard
    finally:
        listener.stopListening()
    assert data[:2] == b"\x00\x80" and socket.inet_ntoa(data[8:12]) == "80.100.100.2"


natpmpc = shutil.which("natpmpc")


@pytest.mark.skipif(natpmpc is None, reason="Debian's natpmpc is not installed (apt-get install natpmpc)")
@pytest_twisted.ensureDeferred
async def test_fake_gateway_serves_natpmpc() -> None:
    """libnatpmp's client, a real peer, maps and deletes through FakeGateway.  It only talks to
    port 5351, and always gets -g 127.0.0.1 so that it never contacts the machine's router."""
    fake = FakeGateway(external_address="80.100.100.1")
    try:
        listening = fake.listen(port=5351)
    except Exception as error:  # pragma: no cover - depends on the machine
        pytest.skip(f"127.0.0.1:5351 is taken: {error}")
    try:
        out, err, code = await getProcessOutputAndValue(
            natpmpc, ["-g", "127.0.0.1", "-a", "9000", "9001", "tcp", "600"], reactor=reactor
        )
        assert code == 0, (out, err)
        assert b"80.100.100.1" in out
        mapping = fake.mapping_for("tcp", 9001)
        assert mapping is not None and mapping.external_port == 9000
        out, err, code = await getProcessOutputAndValue(
            natpmpc, ["-g", "127.0.0.1", "-a", "9000", "9001", "tcp", "0"], reactor=reactor
        )
        assert code == 0, (out, err)
        assert fake.mapping_for("tcp", 9001) is None
    finally:
        await listening.stopListening()
        await deferLater(reactor, 0, lambda: None)
