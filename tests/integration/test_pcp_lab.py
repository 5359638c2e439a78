"""
PCPClient against a real PCP server: Debian's miniupnpd 2.3.1 in network namespaces, and a
NAT-PMP-only gateway beside it.  Tests are named after shared/rfc6887-client.md.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.task import Clock

from txnatpmp._pcp.wire import AnnounceRequest, MapRequest, Option, encode, encode_address
from txnatpmp.testing import FakeGateway, MemoryNetwork

from lab.agent import GREETING
from lab import CLIENT, EXTERNAL_ADDRESS, GATEWAY_LAN, Agent, Lab
from lab import eventually


def pcp_agent(lab: Lab, **options: Any) -> Agent:
    agent = lab.agent()
    assert agent.call("pcp_connect", **options) == {"server": GATEWAY_LAN}
    return agent


def test_P20_P23_P29_create_renew_and_delete_tcp_and_udp(lab: Lab) -> None:
    agent = pcp_agent(lab)
    created = {}
    for protocol, port in [("tcp", 60110), ("udp", 60111)]:
        mapping = agent.call("pcp_map", protocol=protocol, internal_port=port, lifetime=600)
        assert (mapping["external_port"], mapping["lifetime"]) == (port, 600)
        assert (mapping["method"], mapping["external_address"]) == ("pcp", EXTERNAL_ADDRESS)
        assert len(bytes.fromhex(mapping["nonce"])) == 12
        created[protocol] = mapping
    assert lab.mappings() == [("tcp", 60110, CLIENT, 60110), ("udp", 60111, CLIENT, 60111)]
    for mapping in created.values():
        renewed = agent.call("pcp_renew", mapping=mapping)
        assert (renewed["external_port"], renewed["nonce"]) == (mapping["external_port"],
                                                                mapping["nonce"])
    assert len(lab.mappings()) == 2
    for mapping in created.values():
        assert agent.call("pcp_unmap", mapping=mapping)["lifetime"] == 0
    assert lab.mappings() == []


def test_P22_a_delete_with_another_nonce_is_refused(lab: Lab) -> None:
    agent = pcp_agent(lab)
    mapping = agent.call("pcp_map", protocol="tcp", internal_port=60112, lifetime=600)
    forged = {**mapping, "nonce": "00" * 12}
    answer = agent.call("pcp_unmap", mapping=forged)
    assert (answer["error"], answer["code"]) == ("NotAuthorized", 2)
    assert lab.mappings() == [("tcp", 60112, CLIENT, 60112)]
    assert agent.call("pcp_unmap", mapping=mapping)["lifetime"] == 0
    assert lab.mappings() == []


def test_P22_a_delete_from_another_process_with_the_stored_nonce(lab: Lab) -> None:
    mapping = pcp_agent(lab).call("pcp_map", protocol="udp", internal_port=60113, lifetime=600)
    assert pcp_agent(lab).call("pcp_unmap", mapping=mapping)["lifetime"] == 0
    assert lab.mappings() == []


def test_P28_deleting_a_missing_mapping_is_done_not_frozen(lab: Lab) -> None:
    agent = pcp_agent(lab)
    mapping = agent.call("pcp_map", protocol="tcp", internal_port=60114, lifetime=600)
    agent.call("pcp_unmap", mapping=mapping)
    again = agent.call("pcp_unmap", mapping=mapping)  # miniupnpd: NO_RESOURCES, lifetime 30
    assert (again["lifetime"], again["external_port"]) == (0, 0)
    assert agent.call("pcp_map", protocol="tcp", internal_port=60114,
                      lifetime=600)["external_port"] == 60114
    agent.call("pcp_unmap", mapping=mapping)


def test_wan_host_connects_through_a_pcp_mapping(lab: Lab) -> None:
    agent = pcp_agent(lab)
    agent.call("serve", protocol="tcp", port=60115)
    mapping = agent.call("pcp_map", protocol="tcp", internal_port=60115, external_port=61115,
                         lifetime=600)
    assert lab.mappings() == [("tcp", mapping["external_port"], CLIENT, 60115)]
    assert lab.wan_tcp(mapping["external_port"]) == GREETING
    agent.call("pcp_unmap", mapping=mapping)


def test_P07_P13_a_wrong_client_address_is_an_address_mismatch_held_30_minutes(
    lab: Lab,
) -> None:
    agent = pcp_agent(lab, client_address="198.51.100.77")
    answer = agent.call("pcp_map", protocol="tcp", internal_port=60116)
    assert (answer["error"], answer["code"]) == ("AddressMismatch", 12)
    assert "another NAT sits between you and the gateway" in answer["message"]
    assert answer["retry_after"] == 1800  # miniupnpd said lifetime 0
    lab.count_requests()
    assert agent.call("pcp_map", protocol="tcp", internal_port=60116)["code"] == 12
    assert lab.requests_counted() == 0  # held, not sent again
    assert lab.mappings() == []


def wait_for_epoch(agent: Agent, at_least: int) -> None:
    eventually(lambda: agent.call("pcp_announce")["epoch"] >= at_least, timeout=8,
               interval=0.25)


def test_P36_P38_gateway_restart_noticed_from_the_epoch_and_mapping_recreated(lab: Lab) -> None:
    agent = pcp_agent(lab)
    mapping = agent.call("pcp_map", protocol="tcp", internal_port=60117, lifetime=600)
    wait_for_epoch(agent, 3)
    assert agent.call("pcp_lost_state") == {"lost": []}
    lab.restart_gateway()
    assert lab.mappings() == []
    recreated = agent.call("pcp_renew", mapping=mapping)  # the same MAP, same nonce
    assert recreated["external_port"] == 60117 and recreated["epoch"] < 3
    [lost] = agent.call("pcp_lost_state")["lost"]
    assert lost["received"] + 1 < lost["expected"]
    assert lab.mappings() == [("tcp", 60117, CLIENT, 60117)]
    agent.call("pcp_unmap", mapping=mapping)


def test_P34_gateway_restart_noticed_from_its_announce_on_224_0_0_1(lab: Lab) -> None:
    agent = pcp_agent(lab)
    agent.call("pcp_listen_announcements", server=GATEWAY_LAN)
    wait_for_epoch(agent, 3)
    lab.restart_gateway()  # miniupnpd multicasts one PCP ANNOUNCE with epoch 0
    heard = eventually(lambda: agent.call("pcp_announcements")["heard"])
    assert heard == [0]
    [lost] = agent.call("pcp_lost_state")["lost"]
    assert lost["received"] == 0


def test_P42_P46_against_a_natpmp_only_gateway_fails_fast(lab: Lab) -> None:
    lab.start_natpmp_only_gateway(5352)
    agent = pcp_agent(lab, port=5352)
    for op, arguments in [("pcp_announce", {}),
                          ("pcp_map", {"protocol": "tcp", "internal_port": 60118})]:
        answer = agent.call(op, **arguments)
        assert (answer["error"], answer["code"], answer["server_version"]) == (
            "UnsupportedVersion", 1, 0)
        assert answer["seconds"] < 1  # one round trip, not 128 s of retransmissions


# FakeGateway(pcp="miniupnpd") against the real thing: the same datagrams, the same answers.

_C = CLIENT
_A, _B = bytes(range(1, 13)), bytes(range(21, 33))


def _map(nonce: bytes = _A, port: int = 60200, external: int = 0, lifetime: int = 600,
         client: str = _C, options: tuple[Option, ...] = (), protocol: int = 6,
         address: str = "0.0.0.0") -> bytes:
    return encode(MapRequest(nonce, protocol, port, external, address, lifetime, client, options))


QUIRK_PROBES = [
    ("create", _map()),
    ("renewal with the same nonce", _map(external=60200, address=EXTERNAL_ADDRESS)),
    ("renewal with another nonce takes over", _map(nonce=_B, external=60200,
                                                   address=EXTERNAL_ADDRESS)),
    ("delete with the old nonce", _map(lifetime=0)),
    ("delete with the new nonce", _map(nonce=_B, lifetime=0)),
    ("delete of a missing mapping", _map(nonce=_B, lifetime=0)),
    ("udp create", _map(protocol=17, port=60201)),
    ("udp delete", _map(protocol=17, port=60201, lifetime=0)),
    ("lifetime 1", _map(port=60202, lifetime=1)),
    ("lifetime 2^32-1", _map(port=60202, lifetime=0xFFFFFFFF)),
    ("delete", _map(port=60202, lifetime=0)),
    ("61 bytes", _map(port=60203) + b"\x00"),
    ("20 bytes", _map()[:20]),
    ("3 bytes", _map()[:3]),
    ("2 bytes", _map()[:2]),
    ("R bit set", bytes((2, 0x81)) + _map()[2:]),
    ("opcode 5", bytes((2, 5)) + _map()[2:]),
    ("version 3 MAP", bytes((3,)) + _map()[1:]),
    ("version 255 ANNOUNCE", bytes((255,)) + encode(AnnounceRequest(_C))[1:]),
    ("ANNOUNCE with lifetime 500", encode(AnnounceRequest(_C, 500))),
    ("ANNOUNCE with a wrong client address", encode(AnnounceRequest("198.51.100.77"))),
    ("ANNOUNCE with option 99", encode(AnnounceRequest(_C, 0, (Option(99, bytes(4)),)))),
    ("MAP with a wrong client address", _map(port=60204, client="198.51.100.77")),
    ("unknown mandatory option", _map(port=60205, options=(Option(99, bytes(4)),))),
    ("unknown optional option", _map(port=60206, options=(Option(200, bytes(4)),))),
    ("delete", _map(port=60206, lifetime=0)),
    ("THIRD_PARTY", _map(port=60207, options=(Option(1, encode_address(_C)),))),
    ("protocol 0", _map(protocol=0, port=0)),
    ("TCP internal port 0", _map(port=0)),
    ("MAP cut to 48 bytes", _map(port=60208)[:48]),
]

_PROBE = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(0.5)
for line in sys.stdin:
    sock.sendto(bytes.fromhex(line), (sys.argv[1], 5351))
    try:
        print(sock.recvfrom(2048)[0].hex(), flush=True)
    except socket.timeout:
        print("-", flush=True)
"""


def _without_epoch(reply: str) -> str:
    return reply if len(reply) < 24 else reply[:16] + "0" * 8 + reply[24:]


def fake_miniupnpd_replies(requests: list[bytes]) -> list[str]:
    clock = Clock()
    network = MemoryNetwork(clock)
    network.attach(FakeGateway(clock, EXTERNAL_ADDRESS, pcp="miniupnpd"), (GATEWAY_LAN, 5351))
    replies = []
    for request in requests:
        before = len(network.sent_to((CLIENT, 40000)))
        network.deliver(request, (CLIENT, 40000), (GATEWAY_LAN, 5351))
        clock.advance(0)
        answers = network.sent_to((CLIENT, 40000))[before:]
        replies.append(answers[0].data.hex() if answers else "-")
    return replies


def test_fake_gateway_miniupnpd_preset_answers_as_miniupnpd_2_3_1_does(lab: Lab) -> None:
    requests = [data for _, data in QUIRK_PROBES]
    real = lab.run("client", sys.executable, "-c", _PROBE, GATEWAY_LAN,
                   input="".join(data.hex() + "\n" for data in requests)).stdout.split()
    fake = fake_miniupnpd_replies(requests)
    differences = [
        f"{name}: miniupnpd {theirs}, fake {ours}"
        for (name, _), theirs, ours in zip(QUIRK_PROBES, real, fake)
        if _without_epoch(theirs) != _without_epoch(ours)
    ]
    assert len(real) == len(QUIRK_PROBES)
    assert differences == []
