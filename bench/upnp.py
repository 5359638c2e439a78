"""
UPnP-IGD against a real UPnP-only router: txnatpmp's UPnPClient and miniupnpc's upnpc, side by
side, against miniupnpd with NAT-PMP and PCP off in the lab namespaces (needs root, ip netns, nft,
miniupnpd, upnpc).

    python bench/upnp.py            # time to the first mapping (5 runs each), then N=100
    python bench/upnp.py --smoke    # 1 run, N=5, to check it works

Time to the first mapping is measured from outside (process start to exit: what a user waits
for) and, for txnatpmp, also inside (from creating the client, without Python's start-up).
Requests are counted at the gateway with nftables counters: HTTP connections (one per UPnP
request: miniupnpd closes each) and SSDP datagrams.  Per mapping after discovery is
(N mappings - 1 mapping) / (N - 1), for both clients alike (time: txnatpmp's inside the
process, from its first mapping to its last).  Each run gets a freshly restarted
gateway (empty table).
"""

from __future__ import annotations

import argparse
import json
import statistics

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.netns import GATEWAY_LAN, UPnPLab, missing_requirements  # noqa: E402

FIRST_PORT = 20000

TXNATPMP = """
import json, sys, time
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from txnatpmp._upnp import UPnPClient

async def main(reactor, gateway, first, n):
    started = time.perf_counter()
    client = UPnPClient(gateway, reactor)
    ok, first_at = 0, None
    for port in range(first, first + n):
        mapping = await client.map_port("tcp", port, port, 3600)
        ok += mapping.external_port == port
        first_at = first_at or time.perf_counter() - started
    print(json.dumps({"inside": first_at, "inside_total": time.perf_counter() - started, "ok": ok}))

gateway, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
react(lambda reactor: ensureDeferred(main(reactor, gateway, first, n)))
"""


def run_client(lab: UPnPLab, name: str, n: int) -> dict[str, float]:
    """Map N ports on a fresh gateway with one process of C{name}; figures as measured."""
    lab.restart_gateway()
    lab.count_http()
    ports = range(FIRST_PORT, FIRST_PORT + n)
    if name == "txnatpmp":
        argv = [sys.executable, "-c", TXNATPMP, GATEWAY_LAN, str(FIRST_PORT), str(n)]
    elif name == "natpmp map":  # the command, with auto: the PCP probe, then UPnP-IGD
        argv = [sys.executable, "-m", "txnatpmp", "map", "-g", GATEWAY_LAN, "-l", "3600",
                *[f"tcp:{p}:{p}" for p in ports]]
    else:
        argv = ["upnpc", "-r", *[w for p in ports for w in (str(p), "tcp")]]
    started = time.perf_counter()
    result = lab.run("client", *argv, timeout=600, check=False)
    wall = time.perf_counter() - started
    if name == "txnatpmp":
        figures = json.loads(result.stdout) if result.returncode == 0 else {"ok": 0}
    elif name == "natpmp map":
        figures = {"ok": result.stdout.count("(UPnP)")}
    else:
        figures = {"ok": result.stdout.count("is redirected to internal")}
    mapped = {p for _, p, _, _ in lab.mappings()}
    return {
        "wall": wall,
        "inside": figures.get("inside") or float("nan"),
        "inside_total": figures.get("inside_total") or float("nan"),
        "http": lab.http_counted(),
        "ssdp": lab.ssdp_counted(),
        "ok": min(figures["ok"], len(mapped & set(ports))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1 run and N=5, to check it works")
    parser.add_argument("-n", type=int, default=100, help="mappings in the second round")
    parser.add_argument("--runs", type=int, default=5, help="runs of the first round")
    args = parser.parse_args()
    n, runs = (5, 1) if args.smoke else (args.n, args.runs)
    reason = missing_requirements()
    if reason is not None:
        print(f"cannot run: {reason}")
        return 1
    clients = ["txnatpmp", "natpmp map", "upnpc"]
    with UPnPLab() as lab:
        first = {c: [run_client(lab, c, 1) for _ in range(runs)] for c in clients}
        many = {c: run_client(lab, c, n) for c in clients}

    print(f"\nTime to the first mapping, UPnP-only miniupnpd (median of {runs})")
    print(f"{'client':10} {'process s':>10} {'inside s':>9} {'HTTP reqs':>10} {'SSDP dgrams':>12}"
          f" {'ok':>4}")
    medians = {}
    for c in clients:
        rows = first[c]
        medians[c] = statistics.median(r["wall"] for r in rows)
        inside = statistics.median(r["inside"] for r in rows)
        print(f"{c:10} {medians[c]:10.3f} {inside:9.3f} {rows[0]['http']:10.0f} "
              f"{rows[0]['ssdp']:12.0f} {sum(r['ok'] for r in rows):4.0f}")

    print(f"\n{n} mappings in one process")
    print(f"{'client':10} {'total s':>8} {'HTTP reqs':>10} "
          f"{'HTTP reqs/mapping after discovery':>34} {'ms/mapping after discovery':>27} {'ok':>5}")
    per = {}
    for c in clients:
        one, all_ = first[c][0], many[c]
        per[c] = (all_["http"] - one["http"]) / (n - 1)
        if c == "txnatpmp":  # inside the process: Python's start-up varies more than a mapping
            ms = 1000 * (all_["inside_total"] - all_["inside"]) / (n - 1)
        else:
            ms = 1000 * (all_["wall"] - medians[c]) / (n - 1)
        print(f"{c:10} {all_['wall']:8.3f} {all_['http']:10.0f} {per[c]:34.2f} {ms:27.2f} "
              f"{all_['ok']:5.0f}")

    ours, command, theirs = medians["txnatpmp"], medians["natpmp map"], medians["upnpc"]
    print(f"\nSummary: txnatpmp's first mapping took {ours:.3f} s (whole process) against "
          f"upnpc's {theirs:.3f} s ({theirs / ours:.1f}x faster); {per['txnatpmp']:.2f} SOAP "
          f"requests per mapping after discovery against upnpc's {per['upnpc']:.2f}. "
          f"`natpmp map` with auto (a PCP probe beside the IGD search): {command:.3f} s "
          f"({theirs / command:.1f}x upnpc's speed), {per['natpmp map']:.2f} SOAP requests per "
          f"mapping after discovery.")
    failed = [c for c in clients if many[c]["ok"] != n or any(r["ok"] != 1 for r in first[c])]
    if failed:
        print(f"Some mappings failed with: {', '.join(failed)}")
    return 1 if "txnatpmp" in failed else 0


if __name__ == "__main__":
    sys.exit(main())
