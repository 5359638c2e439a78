"""
The daemon's service against the real gateway under the failures of issue 11: a link that goes
down, 30% loss at stop, a network that is unreachable from the start, a gateway that is gone.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from lab import CLIENT, GATEWAY_LAN, Lab, eventually, terminate

TWENTY = [f"tcp:{port}" for port in range(61100, 61120)]


def maps(specs: list[str]) -> list[str]:
    return [option for spec in specs for option in ("--map", spec)]


def test_link_down_through_a_renewal_loses_no_mapping(short_lived_lab: Lab) -> None:
    """Item 1: sends fail with 'network unreachable' for 6 s, across the renewal at 4 s."""
    lab = short_lived_lab
    daemon = lab.twist("--map", "tcp:60050", "--lifetime", "8", "--gateway", GATEWAY_LAN)
    eventually(lambda: lab.mappings() == [("tcp", 60050, CLIENT, 60050)])
    time.sleep(1)
    lab.set_client_link(False)
    time.sleep(6)
    lab.set_client_link(True)
    # Renewed since (the lab gateway would have dropped it 8 s after the last grant)...
    eventually(lambda: "Renewed tcp 60050" in lab.output(daemon) or
               "Re-created tcp 60050" in lab.output(daemon), timeout=10)
    watched = time.monotonic()
    while time.monotonic() - watched < 10:  # ...and kept renewed: it never lapses again
        assert lab.mappings() == [("tcp", 60050, CLIENT, 60050)]
        time.sleep(0.2)
    terminate(daemon)
    log = lab.output(daemon)
    assert "Network is unreachable" in log
    assert "Traceback" not in log and "Unhandled" not in log
    assert lab.mappings() == []


@pytest.mark.xfail(strict=True, reason=(
    "auto now deletes through PCP on miniupnpd: a lost delete waits PCP's 3 s IRT (RFC 6887 "
    "8.1.1) before its retransmission, so about 6 lost deletes of 20 use up the 10 s "
    "STOP_BUDGET and about 10 rules are left (NAT-PMP retransmits after 250 ms)"))
def test_sigterm_under_30_percent_loss_leaves_no_rule(lab: Lab) -> None:
    """Item 2: one delete that lost its three transmissions used to cancel all the others."""
    for _ in range(2):
        daemon = lab.twist(*maps(TWENTY), "--gateway", GATEWAY_LAN)
        eventually(lambda: len(lab.mappings()) == 20)
        lab.drop(30)
        assert terminate(daemon, within=15) < 12
        lab.undrop()
        assert lab.mappings() == []


def test_open_files_stay_flat_while_the_network_is_unreachable(lab: Lab) -> None:
    """Item 3: every retry used to open a client and a listener more."""
    lab.set_client_link(False)
    try:
        daemon = lab.twist("--map", "tcp:60051", "--gateway", GATEWAY_LAN)
        # Discovery holds a PCP socket for the 3 s of each probe: compare the most open over
        # a window of the first retries with the most open over later ones (issue 14).
        early = open_files_over(lab, daemon, 8)
        time.sleep(8)  # several rounds of retries with backoff
        assert open_files_over(lab, daemon, 16) <= early
        assert daemon.poll() is None
    finally:
        lab.set_client_link(True)
    eventually(lambda: lab.mappings() == [("tcp", 60051, CLIENT, 60051)], timeout=70)
    terminate(daemon)
    assert lab.mappings() == []


def open_files_over(lab: Lab, daemon: subprocess.Popen[bytes], seconds: float) -> int:
    """The most files C{daemon} had open at any of the samples over C{seconds}."""
    most, until = 0, time.monotonic() + seconds
    while time.monotonic() < until:
        most = max(most, lab.open_files(daemon))
        time.sleep(0.1)
    return most


def test_sigterm_with_the_gateway_stopped_exits_promptly(lab: Lab) -> None:
    """Item 8: a stop used to queue behind the start-up request for two minutes."""
    lab.stop_gateway()
    daemon = lab.twist(*maps(TWENTY[:3]), "--gateway", GATEWAY_LAN)
    time.sleep(2)
    assert terminate(daemon) < 10
