"""
Client overhead on loopback: requests per second and microseconds per request for
get_external_address and map_port against a FakeGateway, beside a floor measured in the same run:
a minimal Python request/response loop on a raw UDP socket, against the same gateway.

    python bench/overhead.py           # 5,000 requests per run, best of 5 interleaved runs
    python bench/overhead.py --smoke   # 200 requests, 1 run

The gateway runs in a process of its own, and so does each client, one after the other.
Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

GATEWAY = """
import sys
from twisted.internet import reactor
from txnatpmp.testing import FakeGateway
gateway = FakeGateway(reactor)
gateway.received = type("Forgetful", (list,), {"append": lambda self, item: None})()  # no record: bounded memory
port = gateway.listen(reactor)
print(port.getHost().port, flush=True)
reactor.run()
"""

TXNATPMP = """
import json, sys, time
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from txnatpmp import NATPMPClient

async def main(reactor, port, kind, n):
    client = NATPMPClient("127.0.0.1", port, reactor=reactor)
    reactor.listenUDP(0, client, interface="127.0.0.1")
    await client.get_external_address()  # warm up
    started, cpu = time.perf_counter(), time.process_time()
    if kind == "address":
        for _ in range(n):
            await client.get_external_address()
    else:
        for i in range(n):
            await client.map_port("tcp", 20000 + i % 1000, 0, 3600)
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}))

react(lambda r: ensureDeferred(main(r, int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))))
"""

TWISTED = """
import json, sys, time
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import react
import struct

class Bare(DatagramProtocol):
    waiting = None
    def datagramReceived(self, data, addr):
        d, self.waiting = self.waiting, None
        if d is not None:
            d.callback(data)

async def main(reactor, port, kind, n):
    bare = Bare()
    reactor.listenUDP(0, bare, interface="127.0.0.1")
    gateway = ("127.0.0.1", port)
    async def ask(request):
        bare.waiting = Deferred()
        bare.transport.write(request, gateway)
        return await bare.waiting
    await ask(b"\\x00\\x00")  # warm up
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        if kind == "address":
            await ask(b"\\x00\\x00")
        else:
            await ask(struct.pack("!BBHHHI", 0, 2, 0, 20000 + i % 1000, 0, 3600))
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}))

react(lambda r: ensureDeferred(main(r, int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))))
"""

RAW = """
import json, socket, struct, sys, time
port, kind, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(1)
gateway = ("127.0.0.1", port)
sock.sendto(b"\\x00\\x00", gateway); sock.recvfrom(64)  # warm up
started, cpu = time.perf_counter(), time.process_time()
for i in range(n):
    if kind == "address":
        request = b"\\x00\\x00"
    else:
        request = struct.pack("!BBHHHI", 0, 2, 0, 20000 + i % 1000, 0, 3600)
    sock.sendto(request, gateway)
    while True:
        data, source = sock.recvfrom(64)
        if source == gateway and data[1] == request[1] + 128:
            break
print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}))
"""


def pinned(cpu: int) -> list[str]:
    """Run on one core: the gateway and the client each get their own, when there are two."""
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        return ["taskset", "-c", str(sorted(os.sched_getaffinity(0))[cpu])]
    return []


def run_client(script: str, port: int, kind: str, n: int) -> tuple[float, float]:
    """Microseconds per request: wall time, and the client's own CPU time."""
    result = subprocess.run([*pinned(1), sys.executable, "-c", script, str(port), kind, str(n)],
                            env=ENV, capture_output=True, text=True, timeout=600, check=True)
    figures = json.loads(result.stdout)
    return figures["seconds"] / n * 1e6, figures["cpu"] / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    n, runs = (200, 1) if args.smoke else (5000, 5)
    gateway = subprocess.Popen([*pinned(0), sys.executable, "-c", GATEWAY], env=ENV,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert gateway.stdout is not None
        port = int(gateway.stdout.readline())
        print(f"Loopback, FakeGateway in its own process, {n} requests per run, best of {runs}")
        print(f"{'request':22} {'client':12} {'wall us':>8} {'x floor':>8} {'x Twisted':>9} "
              f"{'client CPU us':>13} {'x floor':>8} {'x Twisted':>9}")
        summary = []
        for kind, label in [("address", "get_external_address"), ("map", "map_port")]:
            best: dict[str, tuple[float, float]] = {}
            for _ in range(runs):  # interleaved, so that drift hits all three alike
                for name, script in [("raw floor", RAW), ("bare Twisted", TWISTED),
                                     ("txnatpmp", TXNATPMP)]:
                    wall, cpu = run_client(script, port, kind, n)
                    old = best.get(name, (wall, cpu))
                    best[name] = (min(old[0], wall), min(old[1], cpu))
            floor, bare = best["raw floor"], best["bare Twisted"]
            for name, (wall, cpu) in best.items():
                print(f"{label:22} {name:12} {wall:8.1f} {wall / floor[0]:8.2f} "
                      f"{wall / bare[0]:9.2f} {cpu:13.1f} {cpu / floor[1]:8.2f} "
                      f"{cpu / bare[1]:9.2f}")
            ours = best["txnatpmp"]
            summary.append(f"{label}: {ours[0] / floor[0]:.2f}x the floor's wall time, "
                           f"{ours[1] - bare[1]:.0f} us of CPU above a bare Twisted loop")
    finally:
        gateway.terminate()
        gateway.wait()
    print("\nSummary: " + "; ".join(summary) + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
