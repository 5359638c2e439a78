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
    started = time.perf_counter()
    if kind == "address":
        for _ in range(n):
            await client.get_external_address()
    else:
        for i in range(n):
            await client.map_port("tcp", 20000 + i % 1000, 0, 3600)
    print(json.dumps({"seconds": time.perf_counter() - started}))

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
    started = time.perf_counter()
    for i in range(n):
        if kind == "address":
            await ask(b"\\x00\\x00")
        else:
            await ask(struct.pack("!BBHHHI", 0, 2, 0, 20000 + i % 1000, 0, 3600))
    print(json.dumps({"seconds": time.perf_counter() - started}))

react(lambda r: ensureDeferred(main(r, int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))))
"""

RAW = """
import json, socket, struct, sys, time
port, kind, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(1)
gateway = ("127.0.0.1", port)
sock.sendto(b"\\x00\\x00", gateway); sock.recvfrom(64)  # warm up
started = time.perf_counter()
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
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def pinned(cpu: int) -> list[str]:
    """Run on one core: the gateway and the client each get their own, when there are two."""
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        return ["taskset", "-c", str(sorted(os.sched_getaffinity(0))[cpu])]
    return []


def run_client(script: str, port: int, kind: str, n: int) -> float:
    result = subprocess.run([*pinned(1), sys.executable, "-c", script, str(port), kind, str(n)],
                            env=ENV, capture_output=True, text=True, timeout=600, check=True)
    return float(json.loads(result.stdout)["seconds"]) / n * 1e6


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
        print(f"{'request':22} {'client':12} {'us/request':>11} {'requests/s':>11} "
              f"{'x floor':>8} {'x bare Twisted':>13}")
        ratios = []
        for kind, label in [("address", "get_external_address"), ("map", "map_port")]:
            best: dict[str, float] = {}
            for _ in range(runs):  # interleaved, so that drift hits all three alike
                for name, script in [("floor", RAW), ("bare", TWISTED), ("ours", TXNATPMP)]:
                    micros = run_client(script, port, kind, n)
                    best[name] = min(best.get(name, micros), micros)
            floor, bare, ours = best["floor"], best["bare"], best["ours"]
            ratios.append((ours / floor, ours / bare))
            for name, micros in [("raw floor", floor), ("bare Twisted", bare),
                                 ("txnatpmp", ours)]:
                print(f"{label:22} {name:12} {micros:11.1f} {1e6 / micros:11.0f} "
                      f"{micros / floor:8.2f} {micros / bare:13.2f}")
    finally:
        gateway.terminate()
        gateway.wait()
    (address_raw, address_bare), (map_raw, map_bare) = ratios
    print(f"\nSummary: txnatpmp takes {address_raw:.2f}x (address) and {map_raw:.2f}x (map_port) "
          "the time of a minimal blocking raw-socket loop against the same gateway; "
          f"{address_bare:.2f}x and {map_bare:.2f}x that of a bare Twisted request/response loop.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
