"""
Hostile and broken conditions against the real gateway.
"""

from __future__ import annotations

import signal
import time

from txnatpmp._wire import MappingResponse, encode

from lab import CLIENT, GATEWAY_LAN, Lab
from lab import terminate
from lab import eventually


def test_forged_replies_from_other_lan_hosts_are_ignored(lab: Lab) -> None:
    agent = lab.connected_agent()
    lab.drop(100)  # the request stays pending, retransmitting
    client_port = agent.call("map_begin", protocol="tcp", internal_port=60030)["client_port"]
    forged = encode(MappingResponse("tcp", 0, 999999, 60030, 6666, 600))
    for source in [("198.51.100.66", 5351), (GATEWAY_LAN, 5352)]:
        lab.forge_from_lan(source, (CLIENT, client_port), forged)
    lab.undrop()  # the next retransmission reaches the gateway
    mapping = agent.call("map_wait")
    assert mapping["external_port"] == 60030 and mapping["epoch"] != 999999
    assert lab.mappings() == [("tcp", 60030, CLIENT, 60030)]
    assert agent.call("lost_state") == {"lost": []}


def test_sigterm_with_requests_in_flight_still_deletes_everything(lab: Lab) -> None:
    maps = [option for port in range(61000, 61050) for option in ("--map", f"tcp:{port}")]
    daemon = lab.twist(*maps, "--gateway", GATEWAY_LAN)
    eventually(lambda: len(lab.mappings()) >= 10, interval=0.005)  # some done, others in flight
    started = time.monotonic()
    terminate(daemon)
    assert time.monotonic() - started < 10
    assert lab.mappings() == []


def test_a_crash_leaves_only_mappings_that_expire_by_their_lifetime(short_lived_lab: Lab) -> None:
    lab = short_lived_lab
    daemon = lab.twist("--map", "tcp:60040", "--lifetime", "3", "--gateway", GATEWAY_LAN)
    eventually(lambda: lab.mappings() == [("tcp", 60040, CLIENT, 60040)])
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    killed = time.monotonic()
    assert lab.mappings() == [("tcp", 60040, CLIENT, 60040)]  # nobody deleted it...
    eventually(lambda: lab.mappings() == [], timeout=8)  # ...it lapses by its lifetime
    assert time.monotonic() - killed <= 3.5 + 0.5
