"""
The natpmp plugin as a daemon (`twist natpmp`) against the real gateway.
"""

from __future__ import annotations

import signal
import time

from lab.agent import GREETING
from lab import CLIENT, Lab, terminate
from lab import eventually, let_epoch_advance

BOTH = [("tcp", 60010, CLIENT, 60010), ("udp", 60011, CLIENT, 60011)]


def test_twist_natpmp_keeps_mappings_through_a_restart_and_removes_them_on_sigterm(
    lab: Lab,
) -> None:
    agent = lab.agent()
    agent.call("connect")
    agent.call("serve", protocol="tcp", port=60010)
    daemon = lab.twist("--map", "tcp:60010", "--map", "udp:60011")  # gateway found by itself
    eventually(lambda: lab.mappings() == BOTH)
    assert lab.wan_tcp(60010) == GREETING
    # Seconds since the daemon's last exchange, so that the restart is distinguishable (R18's and
    # P36's 2 s slack).
    let_epoch_advance(agent)

    lab.restart_gateway()
    # restart_gateway() flushes the rules; the daemon may re-create them (R19's wait is 0-5 s)
    # before the rules could be listed, so only their return is checked: within R19's 5 s, the
    # announcement's 0.5 s and some slack.
    eventually(lambda: lab.mappings() == BOTH, timeout=8)
    assert lab.wan_tcp(60010) == GREETING

    terminate(daemon)
    assert lab.mappings() == []
    log = lab.output(daemon)
    assert "tcp 60010 is reachable at 80.100.100.1:60010" in log
    assert "lost its mappings" in log
    assert "Removed tcp 60010" in log and "Removed udp 60011" in log


def test_short_lifetimes_are_renewed_and_never_lapse(short_lived_lab: Lab) -> None:
    lab = short_lived_lab
    lab.count_requests()
    daemon = lab.twist("--map", "tcp:60010", "--map", "udp:60011", "--lifetime", "4",
                   "--gateway", "198.51.100.1")
    eventually(lambda: lab.mappings() == BOTH)
    watched_from = time.monotonic()
    while time.monotonic() - watched_from < 12:  # three lifetimes
        assert lab.mappings() == BOTH, "a mapping lapsed"
        time.sleep(0.1)
    # Renewed every 2 s (half of 4): about 6 renewals each, besides the address request.
    assert lab.requests_counted() >= 2 * 6
    terminate(daemon)
    assert lab.mappings() == []


def test_sighup_stops_the_daemon_and_deletes_every_mapping(lab: Lab) -> None:
    """A closed SSH session (SIGHUP) stops `twist natpmp` as SIGTERM does: nothing left."""
    daemon = lab.twist("--map", "tcp:60010", "--map", "udp:60011")
    eventually(lambda: lab.mappings() == BOTH)
    terminate(daemon, signal.SIGHUP)
    assert lab.mappings() == []
    log = lab.output(daemon)
    assert "Removed tcp 60010" in log and "Removed udp 60011" in log
