"""
The daemon under failures, on the real gateway (miniupnpd in namespaces; run as root):

  1. rules left on the gateway after SIGTERM with 30% of requests dropped (goal 0 every run);
  2. lapses of 100 mappings with a 120 s lifetime under 30% loss (goal 0): a lapse is a
     sample of the gateway's rules missing a mapping, or a "ran out" line in the daemon's log;
  3. open file descriptors of a daemon whose network is unreachable (goal: flat).

The three run side by side, each in a lab of its own.  Full run: 10 stops, 10 minutes, 10
minutes.  --smoke: 2 stops, 30 s, 30 s.  Figures, not assertions: the suite's lab tests
(tests/integration/test_service_lab.py) assert the same behaviour on shorter runs.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab import GATEWAY_LAN, Lab, eventually, missing_requirements, terminate  # noqa: E402


def maps(specs: list[str]) -> list[str]:
    return [option for spec in specs for option in ("--map", spec)]


def rules_left_after_stops(runs: int, out: dict[str, Any]) -> None:
    specs = [f"tcp:{port}" for port in range(61100, 61120)]
    left, seconds = [], []
    with Lab() as lab:
        for _ in range(runs):
            daemon = lab.twist(*maps(specs), "--gateway", GATEWAY_LAN)
            eventually(lambda: len(lab.mappings()) == 20, timeout=30)
            lab.drop(30)
            seconds.append(terminate(daemon, within=30))
            lab.undrop()
            left.append(len(lab.mappings()))
            if lab.mappings():
                lab.restart_gateway()
    out["stops"] = {"runs": runs, "rules_left": left, "stop_seconds": seconds}


def lapses_under_loss(duration: float, out: dict[str, Any]) -> None:
    specs = [f"udp:{port}" for port in range(62000, 62100)]
    with Lab() as lab:
        daemon = lab.twist(*maps(specs), "--lifetime", "120", "--gateway", GATEWAY_LAN)
        eventually(lambda: len(lab.mappings()) == 100, timeout=60)
        lab.drop(30)
        short_samples, samples = 0, 0
        started = time.monotonic()
        while time.monotonic() - started < duration:
            samples += 1
            short_samples += len(lab.mappings()) < 100
            time.sleep(1)
        lab.undrop()
        expired = lab.output(daemon).count("ran out before it could be renewed")
        terminate(daemon, within=30)
        out["lapses"] = {"seconds": duration, "samples": samples,
                         "samples_missing_a_mapping": short_samples, "expired_lines": expired}


def fds_offline(duration: float, out: dict[str, Any]) -> None:
    with Lab() as lab:
        lab.set_client_link(False)
        daemon = lab.twist("--map", "tcp:60051", "--map", "udp:60052", "--gateway", GATEWAY_LAN)
        time.sleep(3)
        counts = []
        started = time.monotonic()
        while time.monotonic() - started < duration:
            counts.append(lab.open_files(daemon))
            time.sleep(max(duration / 20, 1))
        lab.set_client_link(True)
        terminate(daemon, within=30)
        out["fds"] = {"seconds": duration, "first": counts[0], "last": counts[-1],
                      "max": max(counts), "min": min(counts)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="short runs (seconds)")
    args = parser.parse_args()
    reason = missing_requirements()
    if reason is not None:
        print(f"failures benchmark skipped: {reason}")
        return 1
    runs, duration = (2, 30.0) if args.smoke else (10, 600.0)
    out: dict[str, Any] = {}
    jobs = [threading.Thread(target=rules_left_after_stops, args=(runs, out)),
            threading.Thread(target=lapses_under_loss, args=(duration, out)),
            threading.Thread(target=fds_offline, args=(duration, out))]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    stops, lapses, fds = out["stops"], out["lapses"], out["fds"]
    print("txnatpmp daemon under failures, real gateway (miniupnpd 2.3.1 in namespaces)")
    print(f"  SIGTERM with 30% loss, 20 mappings: rules left per run {stops['rules_left']} "
          f"(goal all 0); stop took {min(stops['stop_seconds']):.1f}-"
          f"{max(stops['stop_seconds']):.1f} s")
    print(f"  100 mappings, lifetime 120 s, 30% loss for {lapses['seconds']:.0f} s: "
          f"{lapses['samples_missing_a_mapping']} of {lapses['samples']} one-second samples "
          f"missed a mapping, {lapses['expired_lines']} lifetimes ran out (goal 0 and 0)")
    print(f"  offline for {fds['seconds']:.0f} s: open files {fds['first']} at first, "
          f"{fds['last']} at the end, {fds['min']}-{fds['max']} (goal flat: discovery's two "
          f"sockets may come and go)")
    ok = (not any(stops["rules_left"]) and lapses["samples_missing_a_mapping"] == 0
          and lapses["expired_lines"] == 0 and fds["max"] - fds["min"] <= 2)
    print("  goals met" if ok else "  GOALS NOT MET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
