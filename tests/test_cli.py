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
    assert out.splitlines() == [
        "tcp 80.100.100.1:8080 -> local port 8080 for 600 s",
        "udp 80.100.100.1:5353 -> local port 5353 for 600 s",
    ]
    assert fake.mapping_for("tcp", 8080) and fake.mapping_for("udp", 5353)
    out, err, code = await natpmp("unmap", "tcp:8080", "-g", where)
    assert (out, code) == ("deleted tcp 8080\n", 0), err
    assert fake.mapping_for("tcp", 8080) is None
    out, _, code = await natpmp("unmap", "--all", "udp", "-g", where, "--json")
    assert code == 0 and json.loads(out) == {"deleted": "all", "protocol": "udp"}
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
async def test_silent_gateway_shows_progress_then_gives_up(
    gateway: tuple[FakeGateway, str],
) -> None:
    fake, where = gateway
    fake.online = False
    out, err, code = await natpmp("address", "-g", where, "--attempts", "3")
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[:2] == [
        "natpmp: no answer from 127.0.0.1 yet, retrying, attempt 2 of 3",
        "natpmp: no answer from 127.0.0.1 yet, retrying, attempt 3 of 3",
    ]
    assert lines[-1].startswith(f"natpmp: no answer from {where} after 3 attempts over ")


@pytest_twisted.ensureDeferred
async def test_hold_for_a_while_then_delete(gateway: tuple[FakeGateway, str]) -> None:
    fake, where = gateway
    out, err, code = await natpmp("hold", "tcp:8080", "-g", where, "--for", "1.5", "-l", "1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "tcp:8080 -> 80.100.100.1:8080 for 1 s"
    assert "renewed tcp:8080 -> 80.100.100.1:8080 for 1 s" in lines
    assert lines[-1] == "deleted tcp:8080"
    assert fake.mappings == []


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
    out, err, code = await natpmp("run", "tcp:18001", "-g", where, "--shell", "--",
                                  "echo", "port=%p;", "exit", "4")
    assert out.splitlines()[-1] == "port=18001" and code == 4, err


@pytest_twisted.ensureDeferred
async def test_run_of_a_missing_command(gateway: tuple[FakeGateway, str]) -> None:
    fake, where = gateway
    _, err, code = await natpmp("run", "tcp:18002", "-g", where, "--", "no-such-command-here")
    assert code == 1 and "command not found: no-such-command-here" in err
    assert fake.mappings == []


class _Watch(ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if b"child ready" in self.out and not self.ready.called:
            self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.err += data

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
async def test_demo_tells_the_story_and_exits_0() -> None:
    out, err, code = await natpmp("demo")
    assert code == 0, err
    for words in ["reachable at 203.0.113.7:8080", "Renewed at half its lifetime",
                  "Noticed: the epoch went back", "Re-created", "203.0.113.8",
                  "The gateway holds 0 mappings"]:
        assert words in out
