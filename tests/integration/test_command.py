"""
The natpmp command in the client namespace, against the real gateway.  No -g: the command finds
the lab's gateway from the namespace's default route.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from lab import CLIENT, EXTERNAL_ADDRESS, GATEWAY_LAN, Lab, eventually
from lab.netns import _child_env

SERVER = """\
import socket, sys
port, forever = int(sys.argv[1]), len(sys.argv) > 2
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", port))
listener.listen()
while True:
    connection, _ = listener.accept()
    connection.sendall(b"served on port %d\\n" % port)
    connection.close()
    if not forever:
        sys.exit(7)
"""


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own state folder (natpmp map keeps PCP nonces there), never root's ~."""
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


def natpmp(lab: Lab, *argv: str):  # type: ignore[no-untyped-def]
    return lab.run("client", sys.executable, "-m", "txnatpmp", *argv, check=False, timeout=60)


def server_script(lab: Lab) -> str:
    path = Path(lab.workdir) / "server.py"
    path.write_text(SERVER)
    return str(path)


def reach(lab: Lab, port: int) -> bytes:
    """Connect from the wan host once the server behind the mapping listens."""
    def attempt() -> bytes:
        try:
            return lab.wan_tcp(port, timeout=2)
        except AssertionError:  # refused: not listening yet
            return b""
    return eventually(attempt, timeout=10, interval=0.1)  # type: ignore[no-any-return]


def test_natpmp_address(lab: Lab) -> None:
    result = natpmp(lab, "address")
    assert (result.stdout, result.returncode) == (f"{EXTERNAL_ADDRESS}\n", 0), result.stderr


def test_natpmp_map_then_unmap(lab: Lab) -> None:
    result = natpmp(lab, "map", "tcp:60010", "-l", "600")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"tcp:60010 -> {EXTERNAL_ADDRESS}:60010 for 600 s (PCP)\n"
    assert lab.mappings() == [("tcp", 60010, CLIENT, 60010)]
    assert natpmp(lab, "unmap", "tcp:60010").returncode == 0
    assert lab.mappings() == []


def test_natpmp_run_serves_returns_the_status_and_cleans_up(lab: Lab) -> None:
    process = lab.spawn("client", sys.executable, "-m", "txnatpmp", "run", "tcp:60020", "--",
                        sys.executable, server_script(lab), "%p")
    assert reach(lab, 60020) == b"served on port 60020\n"
    assert process.wait(20) == 7
    assert lab.mappings() == []
    assert "deleted tcp:60020" in lab.output(process)


def test_natpmp_run_interrupted_with_sigint_cleans_up(lab: Lab) -> None:
    process = lab.spawn("client", sys.executable, "-m", "txnatpmp", "run", "tcp:60021", "--",
                        sys.executable, server_script(lab), "%p", "forever")
    assert reach(lab, 60021) == b"served on port 60021\n"
    assert lab.mappings() == [("tcp", 60021, CLIENT, 60021)]
    process.send_signal(signal.SIGINT)
    assert process.wait(20) == 128 + signal.SIGINT  # the server died of the forwarded SIGINT
    assert lab.mappings() == []


def natpmp_process(lab: Lab, *argv: str) -> subprocess.Popen[bytes]:
    return lab.spawn("client", sys.executable, "-m", "txnatpmp", *argv)


# Stop signals (issue 12, items 1 and 2)


@pytest.mark.parametrize(
    "argv, signum",
    [
        (("address",), signal.SIGINT),
        (("address",), signal.SIGHUP),
        (("map", "tcp:60030", "udp:60031"), signal.SIGTERM),
        (("unmap", "tcp:60030"), signal.SIGINT),
        (("hold", "tcp:60030"), signal.SIGTERM),
        (("hold", "tcp:60030"), signal.SIGHUP),
        (("run", "tcp:60030"), signal.SIGINT),
        (("run", "tcp:60030"), signal.SIGTERM),
        (("run", "tcp:60030"), signal.SIGHUP),
    ],
)
def test_every_command_stops_on_a_signal_while_the_gateway_is_silent(
    lab: Lab, argv: tuple[str, ...], signum: int,
) -> None:
    """SIGINT, SIGTERM, SIGHUP while the gateway says nothing: the command ends at once (not
    after the RFC's 128 s), exits 128 + N, and never starts run's command."""
    lab.stop_gateway()
    marker = Path(lab.workdir) / "marker"
    extra = ["--", "touch", str(marker)] if argv[0] == "run" else []
    process = natpmp_process(lab, *argv, *extra)
    eventually(lambda: "retrying" in lab.output(process))  # waiting on the gateway
    process.send_signal(signum)
    assert process.wait(3) == 128 + signum, lab.output(process)
    assert "Traceback" not in lab.output(process)
    lab.start_gateway()  # a gateway that answers now finds nobody asking
    assert not marker.exists()


def test_sighup_to_hold_deletes_its_mappings(lab: Lab) -> None:
    process = natpmp_process(lab, "hold", "tcp:60032", "udp:60033")
    eventually(lambda: lab.mappings() == [("tcp", 60032, CLIENT, 60032),
                                          ("udp", 60033, CLIENT, 60033)])
    process.send_signal(signal.SIGHUP)
    assert process.wait(5) == 128 + signal.SIGHUP, lab.output(process)
    assert lab.mappings() == []
    assert "deleted tcp:60032" in lab.output(process)


CHILD = """import sys, time
open(sys.argv[1], "w").write(str(__import__("os").getpid()))
time.sleep(120)
"""


def test_sighup_to_run_ends_its_command_and_deletes_the_mapping(lab: Lab) -> None:
    script = Path(lab.workdir) / "child.py"
    script.write_text(CHILD)
    pidfile = Path(lab.workdir) / "child.pid"
    process = natpmp_process(lab, "run", "tcp:60034", "--", sys.executable, str(script),
                             str(pidfile))
    eventually(lambda: pidfile.exists() and pidfile.read_text())
    assert lab.mappings() == [("tcp", 60034, CLIENT, 60034)]
    process.send_signal(signal.SIGHUP)
    assert process.wait(5) == 128 + signal.SIGHUP, lab.output(process)
    assert lab.mappings() == []
    child = int(pidfile.read_text())
    assert not Path(f"/proc/{child}").exists()  # not orphaned: ended, and reaped


# run's failure paths (issue 12, item 3)


def test_run_of_a_command_that_cannot_start_leaves_nothing_on_the_gateway(lab: Lab) -> None:
    orphan = Path(lab.workdir) / "orphan"
    orphan.write_text("#!/nonexistent/interpreter\necho never\n")
    orphan.chmod(0o755)
    lab.count_requests()
    result = natpmp(lab, "run", "tcp:60035", "--", str(orphan))
    assert result.returncode == 126, result.stderr
    assert "bad interpreter /nonexistent/interpreter" in result.stderr
    assert "Traceback" not in result.stderr
    assert lab.requests_counted() == 0  # found out before sending anything
    # One the system refuses only when asked to start it: mapped first, then deleted.
    broken = Path(lab.workdir) / "broken"
    broken.write_bytes(b"\x7fELF\x00not a program\n")
    broken.chmod(0o755)
    result = natpmp(lab, "run", "tcp:60036", "--", str(broken))
    assert result.returncode == 126, result.stderr
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr
    assert lab.mappings() == []
    assert natpmp(lab, "run", "tcp:60036", "--", "no-such-command").returncode == 127


# Closed stdout (issue 12, item 4)


def _with_stdout(lab: Lab, stdout: Any, *argv: str, **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", lab.ns["client"], sys.executable, "-m", "txnatpmp", *argv],
        stdout=stdout, stderr=subprocess.PIPE, text=True, env=_child_env(), timeout=60,
        **options,
    )


THREE = [("tcp", 60040, CLIENT, 60040), ("tcp", 60041, CLIENT, 60041),
         ("tcp", 60042, CLIENT, 60042)]


@pytest.mark.parametrize("how", ["closed pipe", "/dev/full", "closed descriptor"])
def test_map_with_a_closed_stdout_maps_every_spec_quietly(lab: Lab, how: str) -> None:
    argv = ("map", "tcp:60040", "tcp:60041", "tcp:60042")
    if how == "closed pipe":
        reader, writer = os.pipe()
        os.close(reader)
        try:
            result = _with_stdout(lab, writer, *argv)
        finally:
            os.close(writer)
    elif how == "/dev/full":
        with open("/dev/full", "w") as full:
            result = _with_stdout(lab, full, *argv)
    else:
        result = _with_stdout(lab, subprocess.DEVNULL, *argv, preexec_fn=lambda: os.close(1))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert lab.mappings() == THREE
    assert natpmp(lab, "unmap", "tcp:60040", "tcp:60041", "tcp:60042").returncode == 0


# The older tools' forms (issue 12, item 6)


def test_py_natpmp_forms(lab: Lab) -> None:
    result = natpmp(lab, "-u", "-l", "1800", "60009", "60009")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"udp:60009 -> {EXTERNAL_ADDRESS}:60009 for 1800 s (PCP)\n"
    result = natpmp(lab, "-g", GATEWAY_LAN, "60011", "60022")
    assert result.returncode == 0, result.stderr
    assert lab.mappings() == [("tcp", 60011, CLIENT, 60022), ("udp", 60009, CLIENT, 60009)]
    # "Any port": PUBLIC 0 and PRIVATE 0, as VPN scripts write it.
    result = natpmp(lab, "map", "-g", GATEWAY_LAN, "0", "0")
    assert result.returncode == 0, result.stderr
    local = int(result.stdout.split()[0].split(":")[1])
    assert ("tcp", local) in [(m[0], m[3]) for m in lab.mappings()]


def test_ruby_gem_forms(lab: Lab) -> None:
    result = natpmp(lab, "-p", "60043", "echo %p %h %P %H")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"60043 {CLIENT} 60043 {EXTERNAL_ADDRESS}\n"
    assert lab.mappings() == []  # held while the command ran, deleted after
    result = natpmp(lab, "-p", "60044", "-P", "60045", "-t", "udp", "--ttl", "600")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"udp:60044 -> {EXTERNAL_ADDRESS}:60045 for 600 s (PCP)\n"
    assert lab.mappings() == [("udp", 60045, CLIENT, 60044)]
    result = natpmp(lab, "echo %p")  # no -p: a free local port, mapped while it runs
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 0 and f"deleted tcp:{int(result.stdout)}" in result.stderr


# Methods (issue 14): miniupnpd speaks PCP and NAT-PMP.

@pytest.fixture
def versions(lab: Lab) -> Iterator[None]:
    """Count PCP (version 2) and NAT-PMP (version 0) datagrams reaching the gateway."""
    count_by_version(lab)
    yield
    lab.gw("nft", "delete", "table", "inet", "versions", check=False)


def count_by_version(lab: Lab) -> None:
    lab.gw("nft", "delete", "table", "inet", "versions", check=False)
    lab.gw("nft", "add", "table", "inet", "versions")
    lab.gw("nft", "add", "chain", "inet", "versions", "input",
           "{ type filter hook input priority -30; }")
    for version in (2, 0):  # the first byte of the UDP payload
        lab.gw("nft", "add", "rule", "inet", "versions", "input", "udp", "dport", "5351",
               "@th,64,8", str(version), "counter")


def counted_by_version(lab: Lab) -> dict[str, int]:
    listing = lab.gw("nft", "list", "table", "inet", "versions").stdout
    found = re.findall(r"@th,64,8 (0x[0-9a-f]+|\d+) counter packets (\d+)", listing)
    names = {2: "pcp", 0: "natpmp"}
    return {names[int(version, 0)]: int(packets) for version, packets in found}


def test_map_with_auto_goes_through_pcp_and_a_later_unmap_uses_the_kept_nonce(
    lab: Lab, private_state: Path, versions: None,
) -> None:
    result = natpmp(lab, "map", "tcp:60050", "udp:60051", "-l", "600")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"tcp:60050 -> {EXTERNAL_ADDRESS}:60050 for 600 s (PCP)",
        f"udp:60051 -> {EXTERNAL_ADDRESS}:60051 for 600 s (PCP)"]
    assert counted_by_version(lab) == {"pcp": 3, "natpmp": 0}  # ANNOUNCE, two MAPs
    assert lab.mappings() == [("tcp", 60050, CLIENT, 60050), ("udp", 60051, CLIENT, 60051)]
    kept = json.loads((private_state / "txnatpmp" / "mappings.json").read_text())
    assert sorted(m["internal_port"] for m in kept["mappings"]) == [60050, 60051]

    result = natpmp(lab, "unmap", "tcp:60050")  # a later process: the nonce from the file
    assert (result.stdout, result.returncode) == ("deleted tcp:60050 (PCP)\n", 0), result.stderr
    assert lab.mappings() == [("udp", 60051, CLIENT, 60051)]
    result = natpmp(lab, "unmap", "--all", "udp")
    assert result.returncode == 0, result.stderr
    assert lab.mappings() == []
    assert counted_by_version(lab)["natpmp"] == 0
    kept = json.loads((private_state / "txnatpmp" / "mappings.json").read_text())
    assert kept["mappings"] == []


def test_unmap_without_the_nonce_says_so_and_leaves_the_mapping(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_state: Path,
) -> None:
    """PCP refuses deletes without the nonce; a NAT-PMP delete would answer success and delete
    nothing (P30): the command says it cannot, exit 1, and the rule stays."""
    assert natpmp(lab, "map", "tcp:60052", "-l", "600").returncode == 0
    result = natpmp(lab, "unmap", "tcp:60052", "--method", "natpmp")
    assert result.returncode == 1 and "made through PCP" in result.stderr, result.stderr
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "someone-else"))
    result = natpmp(lab, "unmap", "tcp:60052")
    assert (result.stdout, result.returncode) == ("", 1), result.stderr
    assert "PCP refuses deletes without its nonce" in result.stderr
    assert lab.mappings() == [("tcp", 60052, CLIENT, 60052)]
    monkeypatch.setenv("XDG_STATE_HOME", str(private_state))
    assert natpmp(lab, "unmap", "tcp:60052").returncode == 0
    assert lab.mappings() == []


@pytest.mark.parametrize("method, asked", [("auto", "NAT-PMP"), ("pcp", "PCP"),
                                           ("natpmp", "NAT-PMP")])
def test_natpmp_address_with_each_method(lab: Lab, method: str, asked: str) -> None:
    """P31: miniupnpd answers NAT-PMP's address request; --method pcp maps a port of its own
    for a moment instead, and deletes it."""
    result = natpmp(lab, "address", "--method", method, "-v")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{EXTERNAL_ADDRESS} (gateway up ")
    assert result.stdout.endswith(f"asked through {asked})\n")
    assert lab.mappings() == []


def test_method_natpmp_still_maps_and_unmaps(lab: Lab, versions: None) -> None:
    result = natpmp(lab, "map", "tcp:60053", "-l", "600", "--method", "natpmp")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"tcp:60053 -> {EXTERNAL_ADDRESS}:60053 for 600 s (NAT-PMP)\n"
    assert lab.mappings() == [("tcp", 60053, CLIENT, 60053)]
    result = natpmp(lab, "unmap", "tcp:60053")  # auto: with the method that made it
    assert (result.stdout, result.returncode) == ("deleted tcp:60053 (NAT-PMP)\n", 0), \
        result.stderr
    assert lab.mappings() == []
    assert counted_by_version(lab)["pcp"] == 0


@pytest.mark.parametrize("command", ["hold", "map", "run", "address"])
def test_family_6_without_ipv6_says_so_and_sends_nothing(lab: Lab, command: str) -> None:
    """This lab has no IPv6 step: no default IPv6 route, no global address.  Exit 1, one line
    naming what is missing, before any request (a run's command never starts)."""
    lab.count_requests()
    spec = ["tcp:60310"] + (["--", "touch", str(Path(lab.workdir) / "ran")]
                            if command == "run" else [])
    if command == "address":
        spec = []
    found = natpmp(lab, command, "--family", "6", *spec)
    assert (found.returncode, found.stdout) == (1, ""), found.stderr
    assert "no default IPv6 route" in found.stderr and "-g fe80::1%IFACE" in found.stderr
    router = f"fe80::1%{lab.veth['client']}"
    given = natpmp(lab, command, "--family", "46", "-g", router, *spec)
    assert (given.returncode, given.stdout) == (1, ""), given.stderr
    assert "no global IPv6 address" in given.stderr, given.stderr
    assert "Traceback" not in found.stderr + given.stderr
    assert lab.requests_counted() == 0 and lab.mappings() == []
    assert not (Path(lab.workdir) / "ran").exists()
