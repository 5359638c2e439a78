"""
Real gateway, peers side by side: N TCP mappings created one after another by each client, against
miniupnpd in the lab namespaces (needs root, ip netns, nft, miniupnpd, natpmpc; pip: nat-pmp).

    python bench/peers.py            # N=200, then the same with 20% of requests dropped
    python bench/peers.py --smoke    # N=10, to check it works
    python bench/peers.py --only pcp # just the PCP part: txnatpmp's PCPClient and a raw floor

Each client gets a freshly rebooted gateway (empty table), so each pays the same growing cost per
mapping.  Requests are counted by an nftables counter on udp port 5351 in the gateway namespace.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import GATEWAY_LAN, Lab, missing_requirements  # noqa: E402

FIRST_PORT = 20000

TXNATPMP = """
import json, sys, time
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from txnatpmp import NATPMPClient

async def main(reactor, gateway, first, n):
    client = NATPMPClient(gateway, reactor=reactor)
    reactor.listenUDP(0, client)
    ok = 0
    started = time.perf_counter()
    for port in range(first, first + n):
        mapping = await client.map_port("tcp", port, port, 3600)
        ok += mapping.lifetime > 0
    print(json.dumps({"seconds": time.perf_counter() - started, "ok": ok}))

react(lambda reactor: ensureDeferred(main(reactor, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
"""

NATPMPC = """
import json, subprocess, sys, time
gateway, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
started = time.perf_counter()
for port in range(first, first + n):
    result = subprocess.run(["natpmpc", "-g", gateway, "-a", str(port), str(port), "tcp", "3600"],
                            capture_output=True, text=True)
    ok += result.returncode == 0 and "Mapped public port" in result.stdout
print(json.dumps({"seconds": time.perf_counter() - started, "ok": ok}))
"""

NAT_PMP = """
import json, sys, time
import natpmp
gateway, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
started = time.perf_counter()
for port in range(first, first + n):
    response = natpmp.map_port(natpmp.NATPMP_PROTOCOL_TCP, port, port, 3600, gateway_ip=gateway)
    ok += response.result == 0
print(json.dumps({"seconds": time.perf_counter() - started, "ok": ok}))
"""

RAW = """
import json, socket, struct, sys, time
gateway, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ok = 0
started = time.perf_counter()
for port in range(first, first + n):
    request = struct.pack("!BBHHHI", 0, 2, 0, port, port, 3600)
    wait = 0.25
    while True:
        sock.sendto(request, (gateway, 5351))
        sock.settimeout(wait)
        try:
            data, source = sock.recvfrom(64)
        except socket.timeout:
            wait *= 2
            continue
        if source == (gateway, 5351) and len(data) == 16 and data[1] == 130:
            ok += struct.unpack("!H", data[2:4])[0] == 0
            break
print(json.dumps({"seconds": time.perf_counter() - started, "ok": ok}))
"""

#: The same program with txnatpmp's PCP client.
TXNATPMP_PCP = TXNATPMP.replace("NATPMPClient", "PCPClient")

RAW_PCP = """
import json, os, socket, struct, sys, time
gateway, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect((gateway, 5351))
client = b"\\x00" * 10 + b"\\xff\\xff" + socket.inet_aton(probe.getsockname()[0])
probe.close()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ok = 0
started = time.perf_counter()
for port in range(first, first + n):
    nonce = os.urandom(12)
    request = (struct.pack("!BBHI", 2, 1, 0, 3600) + client + nonce
               + struct.pack("!B3xHH", 6, port, port) + b"\\x00" * 10 + b"\\xff\\xff" + b"\\x00" * 4)
    wait = 3.0
    while True:
        sock.sendto(request, (gateway, 5351))
        sock.settimeout(wait)
        try:
            data, source = sock.recvfrom(1100)
        except socket.timeout:
            wait *= 2
            continue
        if source == (gateway, 5351) and len(data) >= 60 and data[1] == 0x81 and data[24:36] == nonce:
            ok += data[3] == 0
            break
print(json.dumps({"seconds": time.perf_counter() - started, "ok": ok}))
"""

PCP_CLIENTS = [
    ("txnatpmp PCPClient", TXNATPMP_PCP),
    ("raw socket PCP floor", RAW_PCP),
]

CLIENTS = [
    ("txnatpmp", TXNATPMP),
    ("natpmpc (a process per mapping)", NATPMPC),
    ("nat-pmp (PyPI)", NAT_PMP),
    ("raw socket floor", RAW),
]


def available_clients() -> list[tuple[str, str]]:
    """The clients to compare; the PyPI peer only when it is installed (it needs netifaces,
    which needs a C compiler to build)."""
    try:
        import natpmp  # noqa: F401
    except ImportError as error:
        print(f"nat-pmp (PyPI) is not installed ({error}): left out of the comparison. "
              "Install it with: pip install '.[bench]' (netifaces needs a C compiler: "
              "apt-get install build-essential python3-dev)")
        return [(name, script) for name, script in CLIENTS if name != "nat-pmp (PyPI)"]
    return CLIENTS


def measure(lab: Lab, script: str, n: int, loss: int) -> dict[str, float]:
    lab.restart_gateway()
    lab.undrop()
    if loss:
        lab.drop(loss)
    lab.count_requests()
    result = lab.run("client", sys.executable, "-c", script, GATEWAY_LAN, str(FIRST_PORT), str(n),
                     timeout=1800)
    figures = json.loads(result.stdout)
    lab.undrop()
    requests = lab.requests_counted()
    return {
        "ms": 1000 * figures["seconds"] / n,
        "requests": requests / n,
        "ok": figures["ok"],
    }


def table(title: str, rows: list[tuple[str, dict[str, float]]], n: int) -> None:
    ours = rows[0][1]
    print(f"\n{title} (N={n})")
    print(f"{'client':34} {'ms/mapping':>10} {'x txnatpmp':>10} {'requests/mapping':>17} "
          f"{'x txnatpmp':>10} {'ok':>5}")
    for name, r in rows:
        print(f"{name:34} {r['ms']:10.2f} {r['ms'] / ours['ms']:10.2f} {r['requests']:17.2f} "
              f"{r['requests'] / ours['requests']:10.2f} {r['ok']:5.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="N=10, to check the script works")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--loss", type=int, default=20, help="percent dropped in the second round")
    parser.add_argument("--only", choices=("natpmp", "pcp"), help="run one part only")
    parser.add_argument("--rounds", type=int, default=7, help="alternating PCP runs (median)")
    args = parser.parse_args()
    n = 10 if args.smoke else args.n
    reason = missing_requirements()
    if reason is not None:
        print(f"cannot run: {reason}")
        return 1
    failed_pcp = False
    if args.only != "natpmp":
        failed_pcp = pcp_part(n, 1 if args.smoke else args.rounds)
    if args.only == "pcp":
        return 1 if failed_pcp else 0
    clients = available_clients()
    with Lab() as lab:
        results = {}
        for loss in (0, args.loss):
            rows = [(name, measure(lab, script, n, loss)) for name, script in clients]
            results[loss] = rows
            table(f"{loss}% of requests dropped" if loss else "No loss", rows, n)
    clean = dict(results[0])
    ours, floor = clean["txnatpmp"], clean["raw socket floor"]
    print(
        f"\nSummary: without loss txnatpmp takes {ours['ms']:.2f} ms and {ours['requests']:.2f} "
        f"requests per mapping ({ours['ms'] / floor['ms']:.2f}x the raw-socket floor's time; "
        f"natpmpc {clean['natpmpc (a process per mapping)']['requests']:.2f} requests, "
        f"{clean['natpmpc (a process per mapping)']['ms'] / ours['ms']:.2f}x our time)."
    )
    failed = [name for loss in results for name, r in results[loss] if r["ok"] != n]
    if failed:
        print(f"Some mappings failed with: {', '.join(failed)}")
    return 1 if "txnatpmp" in failed or failed_pcp else 0


def pcp_part(n: int, rounds: int) -> bool:
    """
    N PCP mappings with txnatpmp's PCPClient and with a raw-socket floor, each on a freshly
    rebooted miniupnpd, taking turns for C{rounds} rounds (who goes first alternates; the
    gateway's pace drifts with the machine's load); print the median of each, and the median
    ratio of back-to-back pairs.  Return whether txnatpmp failed any.
    """
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in PCP_CLIENTS}
    with Lab() as lab:
        for round_number in range(rounds):
            order = PCP_CLIENTS if round_number % 2 == 0 else PCP_CLIENTS[::-1]  # no order bias
            for name, script in order:
                runs[name].append(measure(lab, script, n, 0))
    rows = [(name, _median(results)) for name, results in runs.items()]
    table(f"PCP, no loss, median of {rounds} runs each", rows, n)
    ours, floor = rows[0][1], rows[1][1]
    # Each pair of runs is back to back, so its ratio is the least disturbed by the machine.
    ratios = sorted(a["ms"] / b["ms"] for a, b in zip(*runs.values()))
    print(
        f"\nPCP summary: txnatpmp takes {ours['ms']:.2f} ms and {ours['requests']:.2f} requests "
        f"per mapping (the floor {floor['ms']:.2f} ms, {floor['requests']:.2f} requests); "
        f"median of paired runs {ratios[len(ratios) // 2]:.2f}x the raw PCP floor's time "
        f"(runs: {', '.join(f'{r:.2f}' for r in ratios)}); goal 1.00 request, at most 1.05x."
    )
    return any(r["ok"] != n for r in runs[PCP_CLIENTS[0][0]])


def _median(results: list[dict[str, float]]) -> dict[str, float]:
    middle = sorted(results, key=lambda r: r["ms"])[len(results) // 2]
    return {**middle, "requests": max(r["requests"] for r in results),
            "ok": min(r["ok"] for r in results)}


if __name__ == "__main__":
    sys.exit(main())
