"""
IPv6 reachability through PCP against Debian's miniupnpd 2.3.1 (issue 15): the lab with its IPv6
step (global addresses, the client's default route through the gateway's link-local address as a
Router Advertisement sets it) and a forward chain that drops new inbound IPv6, so the wan host
reaches the client only through a pinhole.  Tests are named after shared/rfc6887-client.md.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from lab import CLIENT6, Agent, Lab, eventually
from lab.agent import GREETING

from .conftest import DEBUG, running_lab


@pytest.fixture(scope="module")
def lab6() -> Iterator[Lab]:
    for lab in running_lab(lambda: Lab(debug=DEBUG, ipv6=True)):
        lab.block_inbound_ipv6()
        yield lab


@pytest.fixture
def lab(lab6: Lab) -> Iterator[Lab]:
    """The module's IPv6 lab, handed back with no agents and no pinholes."""
    yield lab6
    lab6.stop_processes()
    if not lab6.gateway_alive() or lab6.pinholes() or lab6.mappings():
        lab6.restart_gateway()


def pcp6_agent(lab: Lab) -> Agent:
    agent = lab.agent()
    answer = agent.call("pcp6_connect")
    assert answer["server"] == lab.gateway_link_local(), answer
    return agent


def client_interface_index(lab: Lab) -> int:
    shown = lab.run("client", "ip", "-o", "link", "show", "dev", lab.veth["client"]).stdout
    return int(shown.split(":", 1)[0])


def test_P47_find_gateway6_gives_the_gateways_link_local_address_and_interface(lab: Lab) -> None:
    answer = lab.agent().call("find_gateway6")
    assert answer == {
        "address": lab.gateway_link_local(),
        "interface": lab.veth["client"],
        "scope_id": client_interface_index(lab),
        "host": f"{lab.gateway_link_local()}%{lab.veth['client']}",
    }


def test_P08_P48_a_map_to_the_link_local_router_opens_a_pinhole_for_the_global_address(
        lab: Lab) -> None:
    agent = lab.agent()
    connected = agent.call("pcp6_connect")
    assert (connected["scope_id"], connected["bound"]) == (client_interface_index(lab), CLIENT6)
    for protocol, port in [("tcp", 60210), ("udp", 60211)]:
        mapping = agent.call("pcp_map", protocol=protocol, internal_port=port, lifetime=600)
        assert (mapping["external_address"], mapping["external_port"], mapping["method"]) == (
            CLIENT6, port, "pcp")
    # The client's global address, never its link-local one (lab-pcp-upnp.md).
    assert lab.pinholes() == [("tcp", 60210, CLIENT6), ("udp", 60211, CLIENT6)]
    assert agent.call("pcp6_source") == {"source": CLIENT6, "changed": None, "changes": []}


def test_P48_the_wan_host_reaches_the_client_over_ipv6_only_while_the_pinhole_exists(
        lab: Lab) -> None:
    agent = pcp6_agent(lab)
    agent.call("serve6", protocol="tcp", port=60212)
    assert lab.wan_tcp6(CLIENT6, 60212) is None  # the forward chain drops it
    mapping = agent.call("pcp_map", protocol="tcp", internal_port=60212, lifetime=600)
    assert lab.pinholes() == [("tcp", 60212, CLIENT6)]
    assert lab.wan_tcp6(CLIENT6, 60212) == GREETING
    assert agent.call("pcp_unmap", mapping=mapping)["lifetime"] == 0
    assert lab.pinholes() == []
    assert lab.wan_tcp6(CLIENT6, 60212) is None


def test_P27_a_renewal_keeps_the_pinhole_and_its_port(lab: Lab) -> None:
    agent = pcp6_agent(lab)
    mapping = agent.call("pcp_map", protocol="udp", internal_port=60213, lifetime=600)
    renewed = agent.call("pcp_renew", mapping=mapping)
    assert (renewed["external_port"], renewed["nonce"], renewed["external_address"]) == (
        60213, mapping["nonce"], CLIENT6)
    assert lab.pinholes() == [("udp", 60213, CLIENT6)]


def test_miniupnpd_2_3_1_quirk_a_renewed_pinhole_refuses_its_own_nonces_delete(
        lab: Lab) -> None:
    # Measured here (not in lab-pcp-upnp.md): over IPv6, once a pinhole was renewed, even with
    # its own nonce, a delete with that nonce gets NOT_AUTHORIZED and the rule stays until its
    # lifetime ends.  Over IPv4 the same sequence deletes.  The fixture restarts the gateway.
    agent = pcp6_agent(lab)
    mapping = agent.call("pcp_map", protocol="tcp", internal_port=60214, lifetime=600)
    agent.call("pcp_renew", mapping=mapping)
    answer = agent.call("pcp_unmap", mapping=mapping)
    assert (answer["error"], answer["code"]) == ("NotAuthorized", 2)
    assert lab.pinholes() == [("tcp", 60214, CLIENT6)]


def test_P34_the_routers_ff02_1_announcement_after_a_restart_is_an_epoch_signal(
        lab: Lab) -> None:
    agent = pcp6_agent(lab)
    agent.call("pcp6_listen_announcements")
    eventually(lambda: agent.call("pcp_announce")["epoch"] >= 3, timeout=8, interval=0.25)
    assert agent.call("pcp_lost_state") == {"lost": []}
    lab.restart_gateway()  # miniupnpd announces once to [ff02::1]:5350 from its fe80 address
    heard = eventually(lambda: agent.call("pcp_announcements")["heard"])
    assert heard == [0]
    [lost] = agent.call("pcp_lost_state")["lost"]
    assert lost["received"] == 0


def test_P08_mappings_follow_a_change_of_the_global_address(lab: Lab) -> None:
    new_address = "2001:db8:100::20"
    device = lab.veth["client"]
    agent = pcp6_agent(lab)
    mapping = agent.call("pcp_map", protocol="tcp", internal_port=60215, lifetime=600)
    assert lab.pinholes() == [("tcp", 60215, CLIENT6)]
    try:
        # The address rotates, as a privacy address does: the new one comes, the old one goes.
        lab.run("client", "ip", "addr", "add", f"{new_address}/64", "dev", device, "nodad")
        lab.run("client", "ip", "addr", "del", f"{CLIENT6}/64", "dev", device)
        renewed = agent.call("pcp_renew", mapping=mapping)  # a renewal checks the source first
        assert agent.call("pcp6_source") == {"source": new_address, "changed": None,
                                             "changes": [[CLIENT6, new_address]]}
        assert (renewed["external_address"], renewed["external_port"]) == (new_address, 60215)
        assert ("tcp", 60215, new_address) in lab.pinholes()
    finally:
        lab.run("client", "ip", "addr", "add", f"{CLIENT6}/64", "dev", device, "nodad",
                check=False)
        lab.run("client", "ip", "addr", "del", f"{new_address}/64", "dev", device, check=False)
