"""
The daemon's service against the real gateway under the failures of issue 11: a link that goes
down, 30% loss at stop, a network that is unreachable from the start, a gateway that is gone.
"""

from __future__ import annotations

import time


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
        counts = []
        for _ in range(24):  # several rounds of retries with backoff
            time.sleep(1)
            counts.append(lab.open_files(daemon))
        # Flat: at most the discovery's two sockets (PCP probe, SSDP search) come and go.
        assert max(counts) - min(counts) <= 2, counts
        assert daemon.poll() is None
    finally:
        lab.set_client_link(True)
    eventually(lambda: lab.mappings() == [("tcp", 60051, CLIENT, 60051)], timeout=70)
    terminate(daemon)
    assert lab.mappings() == []


def test_sigterm_with_the_gateway_stopped_exits_promptly(lab: Lab) -> None:
    """Item 8: a stop used to queue behind the start-up request for two minutes."""
    lab.stop_gateway()
    daemon = lab.twist(*maps(TWENTY[:3]), "--gateway", GATEWAY_LAN)
    time.sleep(2)
    assert terminate(daemon) < 10
