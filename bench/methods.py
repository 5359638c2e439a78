"""
Discovery's price: time to the first mapping with C{methods="auto"} (a L{MappingService}: one
PCP ANNOUNCE, then the mapping in what the gateway speaks) against the best direct client, one
that already knows the protocol, in the same run: txnatpmp's PCPClient on miniupnpd (PCP), and
its NATPMPClient on a NAT-PMP-only gateway (txnatpmp's FakeGateway in the gateway namespace,
answering PCP with the version-0 reply).  Needs root, ip netns, nft, miniupnpd.

    python bench/methods.py            # 7 rounds of time to the first mapping, then N=100
    python bench/methods.py --smoke    # 1 round, N=5, to check it works

Each run is a fresh process in the client namespace.  Time to the first mapping is measured
from outside (from starting the process to its first mapping: Python's start-up, imports,
discovery, the mapping) and inside (from creating the service or client to the first mapping).
Who goes first alternates from round to round; the table shows medians.  Datagrams are counted
at the gateway with nftables, PCP and NAT-PMP apart: the round trips before the first mapping
(auto's extra over the direct client; goal at most 1), and for N mappings the requests per
mapping after discovery (all datagrams but the PCP ANNOUNCE probes and NAT-PMP address
requests, divided by N; goal 1.00).  miniupnpd is restarted before each run (empty table).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import GATEWAY_LAN, Lab, missing_requirements  # noqa: E402

FIRST_PORT = 21000
DOUBLE_PORT = 5352

# Each script maps N tcp ports, prints one JSON line once all are mapped, waits for a line on
# stdin (the bench reads the gateway's counters meanwhile), deletes them and exits.

AUTO = """
import json, sys, time
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import react
from twisted.internet.threads import deferToThread
from txnatpmp import MappingService

async def main(reactor, gateway, port, first, n):
    started = time.perf_counter()
    service = MappingService(gateway, port, reactor, lifetime=3600)
    firsts = [service.add_mapping("tcp", p, p) for p in range(first, first + n)]
    service.startService()
    first_at = []
    firsts[0].addCallback(lambda m: first_at.append(time.perf_counter() - started) or m)
    mappings = await gatherResults(firsts, consumeErrors=True)
    print(json.dumps({"inside": first_at[0], "ok": sum(m.lifetime > 0 for m in mappings),
                      "method": service.mapper.method}), flush=True)
    await deferToThread(sys.stdin.readline)
    await service.stopService()

gateway, port, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
react(lambda reactor: ensureDeferred(main(reactor, gateway, port, first, n)))
"""

DIRECT = """
import json, sys, time
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from twisted.internet.threads import deferToThread
from txnatpmp import NATPMPClient, PCPClient

async def main(reactor, gateway, port, first, n, method):
    started = time.perf_counter()
    client = (PCPClient if method == "pcp" else NATPMPClient)(gateway, port, reactor)
    reactor.listenUDP(0, client)
    mappings, first_at = [], None
    for p in range(first, first + n):
        mappings.append(await client.map_port("tcp", p, p, 3600))
        first_at = first_at or time.perf_counter() - started
    print(json.dumps({"inside": first_at, "ok": sum(m.lifetime > 0 for m in mappings),
                      "method": method}), flush=True)
    await deferToThread(sys.stdin.readline)
    for mapping in mappings:
        if method == "pcp":
            await client.unmap_port(mapping)
        else:
            await client.unmap_port("tcp", mapping.internal_port)

gateway, port, first, n, method = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                   int(sys.argv[4]), sys.argv[5])
react(lambda reactor: ensureDeferred(main(reactor, gateway, port, first, n, method)))
"""


def run(lab: Lab, port: int, script: str, n: int, *extra: str) -> dict[str, Any]:
    """One fresh process mapping N ports; its figures and the datagrams the gateway got."""
    if port == 5351:
        lab.restart_gateway()
    lab.count_versions(port)
    started = time.perf_counter()
    process = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns["client"], sys.executable, "-c", script, GATEWAY_LAN,
         str(port), str(FIRST_PORT), str(n), *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None and process.stdin is not None
    line = process.stdout.readline()
    outside = time.perf_counter() - started
    counted = lab.versions_counted()
    stdout, stderr = process.communicate(b"\n", timeout=60)
    if not line:
        raise RuntimeError(f"the client crashed: {stderr.decode(errors='replace')}")
    figures: dict[str, Any] = json.loads(line)
    if process.returncode != 0:
        raise RuntimeError(f"the client failed to stop: {stderr.decode(errors='replace')}")
    return {**figures, "outside": outside, **counted,
            "exchanges": counted["pcp"] + counted["natpmp"],
            "mapping_requests": counted["pcp"] - counted["announce"]
            + counted["natpmp"] - counted["address"]}


def compare(lab: Lab, title: str, port: int, direct: str, rounds: int, n: int) -> bool:
    """Print one gateway's table; return whether every mapping succeeded."""
    clients = [("auto (MappingService)", AUTO, ()), (f"direct {direct}", DIRECT, (direct,))]
    firsts: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in clients}
    for round_number in range(rounds):
        order = clients if round_number % 2 == 0 else clients[::-1]
        for name, script, extra in order:
            firsts[name].append(run(lab, port, script, 1, *extra))
    many = {name: run(lab, port, script, n, *extra) for name, script, extra in clients}
    print(f"\n{title}: time to the first mapping (median of {rounds} fresh processes), "
          f"then N={n} mappings")
    print(f"{'client':24} {'method':>7} {'outside ms':>10} {'inside ms':>10} "
          f"{'datagrams to 1st':>16} {'req/mapping after discovery':>28}")
    for name, _, _ in clients:
        runs = firsts[name]
        print(f"{name:24} {runs[0]['method']:>7} "
              f"{1000 * statistics.median(r['outside'] for r in runs):10.1f} "
              f"{1000 * statistics.median(r['inside'] for r in runs):10.1f} "
              f"{max(r['exchanges'] for r in runs):16d} "
              f"{many[name]['mapping_requests'] / n:28.2f}")
    auto, best = (firsts[name] for name, _, _ in clients)
    extra_trips = max(r["exchanges"] for r in auto) - min(r["exchanges"] for r in best)
    paired = sorted(1000 * (a["inside"] - b["inside"]) for a, b in zip(auto, best))
    outside = sorted(1000 * (a["outside"] - b["outside"]) for a, b in zip(auto, best))
    print(f"auto's extra round trips: {extra_trips} (goal at most 1); auto minus direct per "
          f"round, inside: median {statistics.median(paired):.1f} ms "
          f"({', '.join(f'{d:.1f}' for d in paired)}), outside: median "
          f"{statistics.median(outside):.1f} ms; probes for N: "
          f"{many[clients[0][0]]['announce']} PCP ANNOUNCE, "
          f"{many[clients[0][0]]['address']} NAT-PMP address requests")
    return all(r["ok"] == 1 for r in [*auto, *best]) and all(
        r["ok"] == n for r in many.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1 round, N=5")
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    n, rounds = (5, 1) if args.smoke else (args.n, args.rounds)
    reason = missing_requirements()
    if reason is not None:
        print(f"cannot run: {reason}")
        return 1
    with Lab() as lab:
        ok = compare(lab, "miniupnpd (PCP)", 5351, "pcp", rounds, n)
        lab.start_natpmp_only_gateway(port=DOUBLE_PORT)
        ok &= compare(lab, "NAT-PMP-only gateway (FakeGateway)", DOUBLE_PORT, "natpmp",
                      rounds, n)
    if not ok:
        print("Some mappings failed.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
