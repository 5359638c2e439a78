"""
The daemon over UPnP-IGD (issue 16): C{twist natpmp} with the default C{auto} against a real
UPnP-only router (Debian's miniupnpd with NAT-PMP and PCP switched off, in network namespaces),
checked by nftables, by Debian's miniupnpc C{upnpc} as a peer client, and by a WAN host.
"""

from __future__ import annotations

import sys
import time
from typing import Iterator

import pytest

from lab import CLIENT, GATEWAY_LAN, UPnPLab, eventually, terminate
from lab.agent import GREETING

from .conftest import DEBUG, running_lab

MAPPED = [("tcp", 60060, CLIENT, 60060)]


@pytest.fixture(scope="module")
def upnp_only_lab() -> Iterator[UPnPLab]:
    yield from running_lab(lambda: UPnPLab(debug=DEBUG))


@pytest.fixture
def upnp_lab(upnp_only_lab: UPnPLab) -> Iterator[UPnPLab]:
    """The UPnP-only lab, handed back clean: no agents or daemons, no mappings."""
    yield upnp_only_lab
    upnp_only_lab.stop_processes()
    if not upnp_only_lab.gateway_alive() or upnp_only_lab.mappings():
        upnp_only_lab.restart_gateway()


def test_auto_daemon_maps_through_upnp_recreates_after_a_restart_and_deletes_on_sigterm(
        upnp_lab: UPnPLab) -> None:
    lab = upnp_lab
    assert lab.gw("ss", "-Hlun", "sport", "=", ":5351").stdout.strip() == ""  # no NAT-PMP/PCP
    agent = lab.agent()
    agent.call("serve", protocol="tcp", port=60060)
    daemon = lab.twist("--map", "tcp:60060", "--gateway", GATEWAY_LAN)
    eventually(lambda: lab.mappings() == MAPPED, timeout=15)  # after the 3 s PCP probe
    listed = lab.upnpc("-l")
    assert f"TCP 60060->{CLIENT}:60060 'txnatpmp'" in listed, listed
    assert lab.wan_tcp(60060) == GREETING
    first_port = lab.http_port()

    lab.restart_gateway()  # flushed rules, new BOOTID, the description on a new port
    restarted = time.monotonic()
    assert lab.http_port() != first_port  # the rules were flushed (see restart_gateway)
    # Heard in the router's NOTIFY, not at the next renewal (in an hour): within the 5 s of
    # jitter (R19) and one discovery.
    eventually(lambda: lab.mappings() == MAPPED, timeout=15)
    assert time.monotonic() - restarted < 12
    assert lab.wan_tcp(60060) == GREETING

    terminate(daemon)
    assert lab.mappings() == []
    assert "60060->" not in lab.upnpc("-l")
    log = lab.output(daemon)
    assert "answers neither PCP nor NAT-PMP: using its UPnP-IGD" in log
    assert "lost its state: " in log and "(announced)" in log  # BOOTID or a moved URL
    assert "Re-created tcp 60060" in log
    assert "Removed tcp 60060" in log


def test_natpmp_map_with_auto_maps_through_upnp_and_unmap_deletes_it(upnp_lab: UPnPLab) -> None:
    """`natpmp map` and, in a later process, `natpmp unmap`, with the default auto, on a
    router that speaks only UPnP-IGD; upnpc (miniupnpc) sees the mapping as any peer would."""
    lab = upnp_lab

    def natpmp(*argv: str) -> tuple[int, str, str]:
        done = lab.run("client", sys.executable, "-m", "txnatpmp", *argv, check=False,
                       timeout=60)
        return done.returncode, done.stdout, done.stderr

    code, out, err = natpmp("map", "tcp:60061", "-g", GATEWAY_LAN)
    assert code == 0, err
    assert out.strip().endswith("(UPnP)"), out
    assert lab.mappings() == [("tcp", 60061, CLIENT, 60061)]
    assert f"TCP 60061->{CLIENT}:60061" in lab.upnpc("-l")
    code, out, err = natpmp("unmap", "tcp:60061", "-g", GATEWAY_LAN)
    assert code == 0, err
    assert lab.mappings() == []
