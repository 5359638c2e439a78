"""
UPnPClient against a real UPnP-only router: Debian's miniupnpd with NAT-PMP and PCP switched off,
in network namespaces; Debian's miniupnpc C{upnpc} as the peer client that checks what it sees.
"""

from __future__ import annotations

import time
from typing import Iterator

import pytest

from lab.agent import GREETING

from .conftest import DEBUG, running_lab
from lab import CLIENT, EXTERNAL_ADDRESS, GATEWAY_LAN, Agent, UPnPLab

IGD2 = "urn:schemas-upnp-org:service:WANIPConnection:2"
IGD1 = "urn:schemas-upnp-org:service:WANIPConnection:1"


def _lab(**options: bool) -> Iterator[UPnPLab]:
    yield from running_lab(lambda: UPnPLab(debug=DEBUG, **options))


@pytest.fixture(scope="module")
def upnp_lab_session() -> Iterator[UPnPLab]:
    yield from _lab()


@pytest.fixture
def upnp_lab(upnp_lab_session: UPnPLab) -> Iterator[UPnPLab]:
    """The UPnP-only lab, handed back clean: no agents, no mappings."""
    yield upnp_lab_session
    upnp_lab_session.stop_processes()
    if not upnp_lab_session.gateway_alive() or upnp_lab_session.mappings():
        upnp_lab_session.restart_gateway()


@pytest.fixture(scope="module")
def igd1_lab() -> Iterator[UPnPLab]:
    yield from _lab(igd_v1=True)


def connected(lab: UPnPLab, **options: str) -> tuple[Agent, dict[str, object]]:
    agent = lab.agent()
    device = agent.call("upnp_connect", **options)
    assert "error" not in device, device
    return agent, device


def listed_by_upnpc(lab: UPnPLab) -> str:
    return lab.upnpc("-l")


def test_discovery_finds_the_igd2_service_on_a_upnp_only_router(upnp_lab: UPnPLab) -> None:
    assert upnp_lab.gw("ss", "-Hlun", "sport", "=", ":5351").stdout.strip() == ""  # no NAT-PMP/PCP
    agent, device = connected(upnp_lab)
    assert device["location"] == f"http://{GATEWAY_LAN}:{upnp_lab.http_port()}/rootDesc.xml"
    assert device["service"] == IGD2
    assert device["external_address"] == EXTERNAL_ADDRESS
    assert agent.call("upnp_address") == {"address": EXTERNAL_ADDRESS, "epoch": 0}


def test_tcp_mapping_is_a_rule_upnpc_lists_and_a_wan_host_reaches(upnp_lab: UPnPLab) -> None:
    agent, _ = connected(upnp_lab)
    agent.call("serve", protocol="tcp", port=60010)
    mapping = agent.call("upnp_map", protocol="tcp", internal_port=60010, lifetime=600)
    assert mapping["external_port"] == 60010 and mapping["lifetime"] == 600
    assert mapping["method"] == "upnp" and mapping["external_address"] == EXTERNAL_ADDRESS
    assert upnp_lab.mappings() == [("tcp", 60010, CLIENT, 60010)]
    assert f"TCP 60010->{CLIENT}:60010 'txnatpmp'" in listed_by_upnpc(upnp_lab)
    assert upnp_lab.wan_tcp(60010) == GREETING
    deleted = agent.call("upnp_unmap", protocol="tcp", internal_port=60010)
    assert deleted["lifetime"] == 0
    assert upnp_lab.mappings() == []
    assert "60010->" not in listed_by_upnpc(upnp_lab)


def test_udp_mapping_on_a_suggested_port_echoes_from_the_wan(upnp_lab: UPnPLab) -> None:
    agent, _ = connected(upnp_lab)
    agent.call("serve", protocol="udp", port=60011)
    mapping = agent.call("upnp_map", protocol="udp", internal_port=60011, external_port=61011)
    assert mapping["external_port"] == 61011
    assert upnp_lab.mappings() == [("udp", 61011, CLIENT, 60011)]
    assert upnp_lab.wan_udp(61011, b"ping") == b"ping"
    agent.call("upnp_unmap", protocol="udp", internal_port=60011)
    assert upnp_lab.mappings() == []


def test_one_http_request_per_mapping_after_discovery(upnp_lab: UPnPLab) -> None:
    agent, _ = connected(upnp_lab)
    upnp_lab.count_http()
    for port in range(60020, 60025):
        agent.call("upnp_map", protocol="tcp", internal_port=port, lifetime=600)
    assert upnp_lab.http_counted() == 5
    assert upnp_lab.ssdp_counted() == 0
    assert len(upnp_lab.mappings()) == 5


def test_renewal_after_a_gateway_restart_notices_it_and_recreates_the_mapping(
        upnp_lab: UPnPLab) -> None:
    agent, before = connected(upnp_lab)
    agent.call("upnp_map", protocol="tcp", internal_port=60030, lifetime=600)
    upnp_lab.restart_gateway()  # flushed rules, new HTTP port, new BOOTID
    assert upnp_lab.mappings() == []
    renewed = agent.call("upnp_renew", protocol="tcp", internal_port=60030)
    assert renewed["external_port"] == 60030
    assert upnp_lab.mappings() == [("tcp", 60030, CLIENT, 60030)]
    restarts = agent.call("upnp_restarts")["restarts"]
    # BOOTID is miniupnpd's start time in seconds: a restart within the second keeps it, but
    # the description always moves to a new port
    assert len(restarts) == 1 and ("BOOTID" in restarts[0] or "moved" in restarts[0])
    assert f"{GATEWAY_LAN}:{upnp_lab.http_port()}/" not in str(before["location"])


def test_a_restart_is_heard_in_the_gateways_notify_without_any_request(
        upnp_lab: UPnPLab) -> None:
    agent, _ = connected(upnp_lab)
    agent.call("upnp_listen_restarts")
    upnp_lab.count_http()
    upnp_lab.restart_gateway()
    deadline = time.monotonic() + 10
    while not (restarts := agent.call("upnp_restarts")["restarts"]):
        assert time.monotonic() < deadline, "no restart heard within 10 s"
        time.sleep(0.05)
    assert len(restarts) == 1 and restarts[0].endswith("(announced)")
    assert upnp_lab.http_counted() == 0


def test_a_vanished_mapping_is_noticed_and_reestablish_recreates_all(upnp_lab: UPnPLab) -> None:
    agent, _ = connected(upnp_lab)
    agent.call("upnp_map", protocol="tcp", internal_port=60040, lifetime=600)
    agent.call("upnp_map", protocol="udp", internal_port=60041, lifetime=600)
    upnp_lab.restart_gateway()
    assert agent.call("upnp_check", protocol="tcp", internal_port=60040) == {"held": False}
    assert agent.call("upnp_restarts")["restarts"]
    back = agent.call("upnp_reestablish")["mappings"]
    assert sorted((m["protocol"], m["external_port"]) for m in back) == [
        ("tcp", 60040), ("udp", 60041)]
    assert upnp_lab.mappings() == [("tcp", 60040, CLIENT, 60040), ("udp", 60041, CLIENT, 60041)]
    assert agent.call("upnp_check", protocol="tcp", internal_port=60040) == {"held": True}


def test_another_hosts_internal_client_is_refused(upnp_lab: UPnPLab) -> None:
    # secure_mode: AddAnyPortMapping answers 606 (AddPortMapping answers 718, see the IGD:1 test)
    agent, _ = connected(upnp_lab, internal_client="198.51.100.20")
    answer = agent.call("upnp_map", protocol="tcp", internal_port=60050)
    assert answer["error"] == "NotAuthorized" and answer["code"] == 606
    assert upnp_lab.mappings() == []


def test_ports_outside_the_routers_rules(upnp_lab: UPnPLab) -> None:
    agent, _ = connected(upnp_lab)
    # AddAnyPortMapping walks the external ports, finds none allowed for internal port 80: 728
    answer = agent.call("upnp_map", protocol="tcp", internal_port=80)
    assert answer["error"] == "OutOfResources" and answer["code"] == 728
    # a suggested external port 80 becomes the first allowed one
    mapping = agent.call("upnp_map", protocol="tcp", internal_port=60080, external_port=80)
    assert mapping["external_port"] == 1024
    assert upnp_lab.mappings() == [("tcp", 1024, CLIENT, 60080)]


def test_igd1_ports_outside_the_routers_rules_are_not_authorized(igd1_lab: UPnPLab) -> None:
    agent, _ = connected(igd1_lab)
    for internal, external in ((80, 0), (60080, 80)):
        answer = agent.call("upnp_map", protocol="tcp", internal_port=internal,
                            external_port=external)
        assert answer["error"] == "NotAuthorized" and answer["code"] == 606
    assert igd1_lab.mappings() == []


def test_igd1_description_maps_with_add_port_mapping(igd1_lab: UPnPLab) -> None:
    agent, device = connected(igd1_lab)
    assert device["service"] == IGD1
    igd1_lab.count_http()
    mapping = agent.call("upnp_map", protocol="tcp", internal_port=60060, lifetime=600)
    assert mapping["external_port"] == 60060 and mapping["lifetime"] == 600
    assert igd1_lab.http_counted() == 1
    assert igd1_lab.mappings() == [("tcp", 60060, CLIENT, 60060)]
    assert f"TCP 60060->{CLIENT}:60060 'txnatpmp'" in listed_by_upnpc(igd1_lab)
    agent.call("upnp_unmap", protocol="tcp", internal_port=60060)
    assert igd1_lab.mappings() == []


def test_igd1_another_hosts_internal_client_is_a_port_conflict(igd1_lab: UPnPLab) -> None:
    agent, _ = connected(igd1_lab, internal_client="198.51.100.20")
    igd1_lab.count_http()
    answer = agent.call("upnp_map", protocol="tcp", internal_port=60070)
    assert answer["error"] == "PortConflict" and answer["code"] == 718
    assert igd1_lab.http_counted() == 8  # CONFLICT_TRIES ports tried, then given up
    assert igd1_lab.mappings() == []
