"""
PCPClient against a real PCP server: Debian's miniupnpd 2.3.1 in network namespaces, and a
NAT-PMP-only gateway beside it.  Tests are named after shared/rfc6887-client.md.
"""

from __future__ import annotations

from typing import Any

from .agent import GREETING
from .lab import CLIENT, EXTERNAL_ADDRESS, GATEWAY_LAN, Agent, Lab
from .test_real_gateway import eventually


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
