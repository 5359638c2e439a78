"""
The natpmp command as a person runs it, against a FakeGateway on loopback.  Every run gets an
explicit -g 127.0.0.1:PORT: the command never looks for the machine's own router here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue

from txnatpmp.testing import FakeGateway

ROOT = Path(__file__).parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path) -> Iterator[Path]:
    """Each test's own state folder: natpmp map keeps PCP nonces there, never in ~."""
    state = tmp_path / "state"
    ENV["XDG_STATE_HOME"] = str(state)
    yield state
    del ENV["XDG_STATE_HOME"]


@pytest.fixture
def gateway() -> Iterator[tuple[FakeGateway, str]]:
    fake = FakeGateway(external_address="80.100.100.1")
    port = fake.listen()
    yield fake, f"127.0.0.1:{port.getHost().port}"
    port.stopListening()


async def natpmp(*argv: str) -> tuple[str, str, int]:
    out, err, code = await getProcessOutputAndValue(
        sys.executable, ["-m", "txnatpmp", *argv], env=ENV, reactor=reactor
    )
    return out.decode(), err.decode(), code


@pytest_twisted.ensureDeferred
async def test_address(gateway: tuple[FakeGateway, str]) -> None:
    out, err, code = await natpmp("address", "-g", gateway[1])
    assert (out, code) == ("80.100.100.1\n", 0), err
    out, _, _ = await natpmp("address", "-g", gateway[1], "--json")
    assert json.loads(out)["address"] == "80.100.100.1"


@pytest_twisted.ensureDeferred
async def test_map_and_unmap(gateway: tuple[FakeGateway, str]) -> None:
    fake, where = gateway
    out, err, code = await natpmp("map", "tcp:8080", "-u", "5353", "-l", "600", "-g", where)
    assert code == 0, err
    assert out.splitlines() == [  # the one mapping line format, as hold and run print it
        "tcp:8080 -> 80.100.100.1:8080 for 600 s (NAT-PMP)",
        "udp:5353 -> 80.100.100.1:5353 for 600 s (NAT-PMP)",
    ]
    assert fake.mapping_for("tcp", 8080) and fake.mapping_for("udp", 5353)
    out, err, code = await natpmp("unmap", "tcp:8080", "-g", where)
    assert (out, code) == ("deleted tcp:8080 (NAT-PMP)\n", 0), err
    assert fake.mapping_for("tcp", 8080) is None
    out, _, code = await natpmp("unmap", "--all", "udp", "-g", where, "--json")
    assert code == 0 and json.loads(out) == {"deleted": "all", "protocol": "udp",
                                             "method": "natpmp"}
    assert fake.mappings == []


@pytest_twisted.ensureDeferred
async def test_map_json_and_old_form(gateway: tuple[FakeGateway, str]) -> None:
    fake, where = gateway
    out, err, code = await natpmp("map", "-u", "15353", "5353", "-g", where, "--json")
    assert code == 0, err
    line = json.loads(out)
    assert (line["protocol"], line["internal_port"], line["external_port"]) == ("udp", 5353, 15353)


@pytest_twisted.ensureDeferred
async def test_refused_mapping_is_one_clear_line_and_exit_1(
    gateway: tuple[FakeGateway, str],
) -> None:
    fake, where = gateway
    fake.refuse_with = 2
    out, err, code = await natpmp("map", "tcp:80", "-g", where)
    assert code == 1
    assert err == "natpmp: gateway answered with result 2: not authorized or refused\n"


@pytest_twisted.ensureDeferred
async def test_run_refused_says_so_once_and_starts_nothing(
    gateway: tuple[FakeGateway, str], tmp_path: Path,
) -> None:
    fake, where = gateway
    fake.refuse_with = 2
    marker = tmp_path / "marker"
    out, err, code = await natpmp("run", "tcp:80", "-g", where, "--", "touch", str(marker))
    assert (code, out) == (1, "")
    assert err == "natpmp: gateway answered with result 2: not authorized or refused\n"
    assert not marker.exists()


@pytest_twisted.ensureDeferred
async def test_silent_gateway_shows_progress_then_gives_up(
    gateway: tuple[FakeGateway, str],
) -> None:
    fake, where = gateway
    fake.online = False
    out, err, code = await natpmp("address", "-g", where, "--attempts", "3", "--method", "natpmp")
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[:2] == [
        "natpmp: no answer from 127.0.0.1 yet, retrying, attempt 2 of 3",
        "natpmp: no answer from 127.0.0.1 yet, retrying, attempt 3 of 3",
    ]
    assert lines[-1].startswith(f"natpmp: no answer from {where} after 3 attempts over ")


@pytest_twisted.ensureDeferred
async def test_auto_on_a_silent_gateway_gives_up_after_the_discovery_probe(
    gateway: tuple[FakeGateway, str],
) -> None:
    """P42: with auto the first thing sent is one PCP ANNOUNCE, given up after 3 s."""
    fake, where = gateway
    fake.online = False
    out, err, code = await natpmp("map", "tcp:8080", "-g", where)
    assert code == 1 and out == ""
    assert err.splitlines()[-1].startswith(
        f"natpmp: no answer from {where} after "), err
    sent = [r.data[0] for r in fake.received]
    assert sent in ([2, 2], [2, 2, 2]), sent  # PCP only (1 s, ~2 s), given up at 3 s


@pytest_twisted.ensureDeferred
async def test_hold_for_a_while_then_delete(gateway: tuple[FakeGateway, str]) -> None:
    fake, where = gateway
    out, err, code = await natpmp("hold", "tcp:8080", "-g", where, "--for", "1.5", "-l", "1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "tcp:8080 -> 80.100.100.1:8080 for 1 s (NAT-PMP)"
    assert "renewed tcp:8080 -> 80.100.100.1:8080 for 1 s (NAT-PMP)" in lines
    assert lines[-1] == "deleted tcp:8080 (NAT-PMP)"
    assert fake.mappings == []
    assert "tcp 8080" not in err and "Removed" not in err  # each event said once, on stdout


CHILD = (
    "import os, sys; print('args', sys.argv[1:]); "
    "print('env', os.environ['NATPMP_PUBLIC_ADDRESS'], os.environ['NATPMP_PUBLIC_PORT']); "
    "sys.exit(3)"
)


@pytest_twisted.ensureDeferred
async def test_run_substitutes_returns_the_status_and_deletes(
    gateway: tuple[FakeGateway, str],
) -> None:
    fake, where = gateway
    fake.reserved_ports = {18000}  # so the public port differs from the local one
    out, err, code = await natpmp("run", "tcp:18000", "-g", where, "--", sys.executable, "-c",
                                  CHILD, "%p", "%P", "%H", "a b", "100%", "%%p")
    assert code == 3, err
    lines = out.splitlines()
    assert len(lines) == 2  # stdout is the command's alone; natpmp's news went to stderr
    assert "deleted tcp:18000" in err
    args = eval(lines[-2].removeprefix("args "))
    assert args[0] == "18000" and args[1] != "18000" and args[2] == "80.100.100.1"
    assert args[3:] == ["a b", "100%", "%p"]
    assert lines[-1] == f"env 80.100.100.1 {args[1]}"
    assert fake.mappings == []


@pytest_twisted.ensureDeferred
async def test_run_through_a_shell_only_when_asked(gateway: tuple[FakeGateway, str]) -> None:
    _, where = gateway
    out, err, code = await natpmp("run", "tcp:18001", "-g", where, "--", "echo", "$HOME")
    assert out.splitlines()[-1] == "$HOME" and code == 0, err
    # One argument: a shell script as it is.
    out, err, code = await natpmp("run", "tcp:18001", "-g", where, "--shell", "--",
                                  "echo port=%p; exit 4")
    assert out.splitlines()[-1] == "port=18001" and code == 4, err
    # Several: each stays one word.
    out, err, code = await natpmp("run", "tcp:18001", "-g", where, "--shell", "--",
                                  "printf", "[%s]", "a b", "$HOME")
    assert out == "[a b][$HOME]" and code == 0, err


@pytest_twisted.ensureDeferred
async def test_run_takes_a_protocol_alone_and_picks_a_free_local_port(
    gateway: tuple[FakeGateway, str],
) -> None:
    fake, where = gateway
    out, err, code = await natpmp("run", "tcp", "-g", where, "--", sys.executable, "-c",
                                  "import os, sys; print(sys.argv[1], "
                                  "os.environ['NATPMP_LOCAL_PORT'])", "%p")
    assert code == 0, err
    port, same = out.split()
    assert port == same and 1024 <= int(port) <= 65535
    assert f"tcp:{port} -> 80.100.100.1:" in err and fake.mappings == []


def _script(tmp_path: Path, name: str, text: str, mode: int = 0o755) -> str:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    path.chmod(mode)
    return str(path)


@pytest_twisted.ensureDeferred
async def test_run_finds_its_command_before_sending_anything(
    gateway: tuple[FakeGateway, str], tmp_path: Path,
) -> None:
    """127 when not found, 126 when it cannot be run, as shells say; the gateway hears nothing."""
    fake, where = gateway
    cases = [
        (["no-such-command-here"], 127, "command not found: no-such-command-here"),
        ([str(tmp_path / "missing")], 127, "no such file"),
        ([_script(tmp_path, "plain", "#!/bin/sh\necho hi\n", 0o644)], 126,
         "permission denied"),
        ([str(tmp_path)], 126, "is a directory"),
        ([_script(tmp_path, "orphan", "#!/nonexistent/interpreter\necho hi\n")], 126,
         "bad interpreter /nonexistent/interpreter"),
    ]
    for argv, status, message in cases:
        out, err, code = await natpmp("run", "tcp:18002", "-g", where, "--", *argv)
        assert (code, out) == (status, ""), err
        assert message in err and "Traceback" not in err
    assert fake.received == []


@pytest_twisted.ensureDeferred
async def test_run_of_a_command_the_system_refuses_deletes_the_mapping(
    gateway: tuple[FakeGateway, str], tmp_path: Path,
) -> None:
    """Found and executable, but not a program (exec format error): found out only at start."""
    fake, where = gateway
    broken = _script(tmp_path, "broken", "\x7fELF\x00not really a program\n")
    out, err, code = await natpmp("run", "tcp:18004", "-g", where, "--", broken)
    assert code == 126, err
    assert "cannot start" in err and "Traceback" not in err
    assert "deleted tcp:18004" in err and fake.mappings == []


class _Watch(ProcessProtocol):
    def __init__(self, ready_when: bytes = b"child ready") -> None:
        self.out = b""
        self.err = b""
        self.ready_when = ready_when
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def _check(self) -> None:
        if self.ready_when in self.out + self.err and not self.ready.called:
            self.ready.callback(None)

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self._check()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)


@pytest_twisted.ensureDeferred
async def test_run_interrupted_with_sigint_still_deletes(gateway: tuple[FakeGateway, str]) -> None:
    fake, where = gateway
    watch = _Watch()
    child = "import sys, time; print('child ready', flush=True); time.sleep(60)"
    process = reactor.spawnProcess(
        watch, sys.executable,
        [sys.executable, "-m", "txnatpmp", "run", "tcp:18003", "-g", where, "--",
         sys.executable, "-c", child],
        env=ENV,
    )
    await watch.ready.addTimeout(20, reactor)
    assert fake.mapping_for("tcp", 18003) is not None
    process.signalProcess("INT")
    ended = await watch.ended.addTimeout(20, reactor)
    assert ended.exitCode == 128 + 2  # the child died of the forwarded SIGINT
    assert fake.mappings == []
    assert b"deleted tcp:18003" in watch.err


@pytest_twisted.ensureDeferred
async def test_map_stopped_half_way_deletes_what_it_asked_for(
    gateway: tuple[FakeGateway, str],
) -> None:
    """The second mapping is made but its answer lost; SIGINT: both are deleted, exit 130."""
    fake, where = gateway
    def lose_the_second_grant(reply: bytes) -> bytes | None:
        granted = reply[1] == 130 and reply[12:16] != bytes(4)  # not the answer to a delete
        return None if granted and reply[8:10] == (18051).to_bytes(2, "big") else reply

    fake.rewrite_reply = lose_the_second_grant
    watch = _Watch(ready_when=b"retrying")
    process = reactor.spawnProcess(
        watch, sys.executable,
        [sys.executable, "-m", "txnatpmp", "map", "tcp:18050", "tcp:18051", "tcp:18052",
         "-g", where], env=ENV)
    await watch.ready.addTimeout(20, reactor)
    assert fake.mapping_for("tcp", 18050) and fake.mapping_for("tcp", 18051)
    process.signalProcess("INT")
    ended = await watch.ended.addTimeout(3, reactor)
    assert ended.exitCode == 130, watch.err
    assert fake.mappings == []
    assert watch.out.decode().splitlines() == [
        "tcp:18050 -> 80.100.100.1:18050 for 7200 s (NAT-PMP)", "deleted tcp:18050 (NAT-PMP)",
        "deleted tcp:18051 (NAT-PMP)"]


@pytest_twisted.ensureDeferred
async def test_ctrl_c_at_a_terminal_reaches_the_command_once(
    gateway: tuple[FakeGateway, str], tmp_path: Path,
) -> None:
    """The terminal sends Ctrl-C's SIGINT to natpmp and its command alike: natpmp does not send
    it again, so the command's own clean-up runs undisturbed."""
    fake, where = gateway
    heard = tmp_path / "heard"
    child = ("import signal, sys, time\n"
             "def heard(*_):\n"
             "    open(sys.argv[1], 'a').write('INT\\n')\n"
             "signal.signal(signal.SIGINT, heard)\n"
             "print('child ready', flush=True)\n"
             "signal.pause()\n"
             "time.sleep(1)\n"  # a clean-up during which a second SIGINT would be heard too
             "sys.exit(5)\n")
    watch = _Watch()
    process = reactor.spawnProcess(  # a terminal of its own, natpmp in its foreground
        watch, sys.executable,
        [sys.executable, "-m", "txnatpmp", "run", "tcp:18006", "-g", where, "--",
         sys.executable, "-c", child, str(heard)],
        env=ENV, usePTY=True,
    )
    await watch.ready.addTimeout(20, reactor)
    process.write(b"\x03")  # Ctrl-C
    ended = await watch.ended.addTimeout(20, reactor)
    assert ended.exitCode == 130, watch.out
    assert heard.read_text() == "INT\n"
    assert fake.mappings == []


@pytest_twisted.ensureDeferred
async def test_run_kills_a_child_that_ignores_sigterm_after_the_grace_period(
    gateway: tuple[FakeGateway, str],
) -> None:
    fake, where = gateway
    watch = _Watch()
    child = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             "print('child ready', flush=True); time.sleep(60)")
    process = reactor.spawnProcess(
        watch, sys.executable,
        [sys.executable, "-m", "txnatpmp", "run", "tcp:18005", "-g", where, "--grace", "0.5",
         "--", sys.executable, "-c", child],
        env=ENV,
    )
    await watch.ready.addTimeout(20, reactor)
    process.signalProcess("TERM")
    ended = await watch.ended.addTimeout(20, reactor)
    assert ended.exitCode == 128 + 15, watch.err
    assert fake.mappings == [] and b"deleted tcp:18005" in watch.err


@pytest_twisted.ensureDeferred
async def test_output_to_a_closed_pipe_finishes_the_work_quietly(
    gateway: tuple[FakeGateway, str],
) -> None:
    fake, where = gateway
    for argv in [("map", "tcp:18010", "tcp:18011", "tcp:18012", "-g", where), ("demo",)]:
        reader, writer = os.pipe()
        os.close(reader)  # nobody reads: every write is EPIPE
        try:
            result = await _run_with_stdout(writer, *argv)
        finally:
            os.close(writer)
        assert result["code"] == 0, result["err"]
        assert result["err"] == "" or "Traceback" not in result["err"]
        assert "Broken pipe" not in result["err"] and "Exception ignored" not in result["err"]
    assert [m.internal_port for m in fake.mappings] == [18010, 18011, 18012]


@pytest_twisted.ensureDeferred
async def test_output_to_a_full_disk_or_a_closed_stdout_finishes_the_work(
    gateway: tuple[FakeGateway, str],
) -> None:
    fake, where = gateway
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        result = await _run_with_stdout(full, "map", "tcp:18020", "tcp:18021", "-g", where)
    finally:
        os.close(full)
    assert result["code"] == 0 and "Traceback" not in result["err"]
    assert result["err"].count("cannot write the output") == 1
    closed = await _run_with_stdout(None, "map", "udp:18022", "udp:18023", "-g", where)
    assert closed["code"] == 0 and "Traceback" not in closed["err"], closed["err"]
    assert {(m.protocol, m.internal_port) for m in fake.mappings} == {
        ("tcp", 18020), ("tcp", 18021), ("udp", 18022), ("udp", 18023)}


async def _run_with_stdout(stdout_fd: int | None, *argv: str) -> dict[str, Any]:
    """natpmp with fd 1 as given (None: closed), stderr captured."""
    import subprocess

    def call() -> dict[str, Any]:
        extra: dict[str, Any] = {"stdout": stdout_fd}
        if stdout_fd is None:
            extra = {"stdout": subprocess.DEVNULL, "preexec_fn": lambda: os.close(1)}
        done = subprocess.run([sys.executable, "-m", "txnatpmp", *argv], env=ENV,
                              stderr=subprocess.PIPE, text=True, timeout=60, **extra)
        return {"code": done.returncode, "err": done.stderr}

    from twisted.internet.threads import deferToThread

    return await deferToThread(call)  # type: ignore[no-any-return]


@pytest_twisted.ensureDeferred
async def test_signals_stop_a_command_waiting_on_a_silent_gateway(
    gateway: tuple[FakeGateway, str], tmp_path: Path,
) -> None:
    """Each command, each stop signal: ended within the deadline, 128 + N, nothing started."""
    fake, where = gateway
    fake.online = False
    marker = tmp_path / "marker"
    cases = [(("address",), "INT", 130), (("map", "tcp:18030"), "TERM", 143),
             (("unmap", "tcp:18030"), "HUP", 129), (("hold", "tcp:18030"), "INT", 130),
             (("run", "tcp:18030"), "TERM", 143), (("run", "tcp:18030"), "HUP", 129)]
    for argv, signame, status in cases:
        watch = _Watch(ready_when=b"retrying")
        extra = ["--", "touch", str(marker)] if argv[0] == "run" else []
        process = reactor.spawnProcess(
            watch, sys.executable,
            [sys.executable, "-m", "txnatpmp", *argv, "-g", where, *extra], env=ENV)
        await watch.ready.addTimeout(20, reactor)
        process.signalProcess(signame)
        ended = await watch.ended.addTimeout(3, reactor)  # the RFC's 128 s otherwise
        assert ended.exitCode == status, (argv, watch.err)
        assert b"Traceback" not in watch.err
    fake.online = True
    assert not marker.exists() and fake.mappings == []


@pytest_twisted.ensureDeferred
async def test_demo_tells_the_story_and_exits_0() -> None:
    out, err, code = await natpmp("demo")
    assert code == 0, err
    pcp_round, natpmp_round = out.split("A gateway double that speaks only NAT-PMP")
    for words in ["discovery picked PCP", "reachable at 203.0.113.7:8080 for 4 s (PCP)",
                  "between 1/2 and 5/8 of its lifetime", "Noticed: the epoch went back",
                  "Re-created", "again (PCP)"]:
        assert words in pcp_round
    for words in ['"unsupported version": discovery picked NAT-PMP',
                  "reachable at 203.0.113.7:8080 for 4 s (NAT-PMP)",
                  "Renewed at half its lifetime", "203.0.113.8", "The gateways hold 0 mappings"]:
        assert words in natpmp_round
    assert "NAT-PMP)" not in pcp_round and "(PCP)" not in natpmp_round
    assert err == ""  # each event said once: the story, not the log again


@pytest_twisted.ensureDeferred
async def test_demo_stops_on_a_signal_and_cleans_up() -> None:
    watch = _Watch(ready_when=b"reachable at")
    process = reactor.spawnProcess(watch, sys.executable,
                                   [sys.executable, "-m", "txnatpmp", "demo"], env=ENV)
    await watch.ready.addTimeout(20, reactor)
    process.signalProcess("TERM")
    ended = await watch.ended.addTimeout(3, reactor)
    assert ended.exitCode == 143, watch.err
    assert b"Stopping: deleting the mapping" in watch.out and b"Traceback" not in watch.err


@pytest_twisted.ensureDeferred
async def test_version_and_the_older_forms_against_a_gateway_double(
    gateway: tuple[FakeGateway, str],
) -> None:
    fake, where = gateway
    from txnatpmp import __version__

    out, _, code = await natpmp("--version")
    assert (out, code) == (f"natpmp (txnatpmp) {__version__}\n", 0)
    out, err, code = await natpmp("-u", "-l", "1800", "-g", where, "15353", "5353")
    assert (out, code) == ("udp:5353 -> 80.100.100.1:15353 for 1800 s (NAT-PMP)\n", 0), err
    out, err, code = await natpmp("-g", where, "-p", "18040", "echo %p %h %P %H 100%%")
    assert (out, code) == ("18040 127.0.0.1 18040 80.100.100.1 100%\n", 0), err
    assert fake.mapping_for("tcp", 18040) is None  # held while it ran, then deleted
    out, err, code = await natpmp("-g", where, "-p", "18041", "-P", "18042", "-t", "udp",
                                  "--ttl", "60")
    assert (out, code) == ("udp:18041 -> 80.100.100.1:18042 for 60 s (NAT-PMP)\n", 0), err
    out, err, code = await natpmp("map", "-g", where, "0", "0")
    assert code == 0, err
    local = int(out.split()[0].split(":")[1])
    assert fake.mapping_for("tcp", local) is not None
