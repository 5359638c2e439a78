"""
The natpmp command's parts on a fake clock: stop signals, event reports, the log it shows, exit
statuses, and finding run's command.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from txnatpmp import EventKind, GatewayNotFound, GatewayTimeout, Mapping, MappingEvent, MappingSpec
from txnatpmp._cli import log_observer, outcome_of
from txnatpmp._cli._child import CannotRun, resolve, shell_command
from txnatpmp._cli._output import EventReport, Output, Stream, mapping_line
from txnatpmp._cli._signals import Interrupted, StopSignals


class _Reactor(Clock):
    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


def _outcome(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "not settled"
    return box[0]


def test_a_stop_signal_interrupts_the_current_wait_and_cancels_it() -> None:
    reactor = _Reactor()
    stop = StopSignals(reactor)
    cancelled: list[object] = []
    work: Deferred[int] = Deferred(cancelled.append)
    raced = Deferred.fromCoroutine(stop.race(work))
    assert not raced.called
    stop.received(signal.SIGTERM)
    failure = _outcome(raced)
    assert isinstance(failure.value, Interrupted) and failure.value.signum == signal.SIGTERM
    assert cancelled == [work]
    assert stop.exit_status == 143


def test_work_that_ends_first_wins_and_stops_waiting_for_signals() -> None:
    stop = StopSignals(_Reactor())
    work: Deferred[int] = Deferred()
    raced = Deferred.fromCoroutine(stop.race(work))
    work.callback(7)
    assert _outcome(raced) == 7
    failing: Deferred[int] = Deferred()
    raced = Deferred.fromCoroutine(stop.race(failing))
    failing.errback(GatewayTimeout(("198.51.100.1", 5351), 9, 127.75))
    assert isinstance(_outcome(raced).value, GatewayTimeout)
    assert stop._first == []  # nothing left waiting


def test_after_a_stop_nothing_new_starts() -> None:
    stop = StopSignals(_Reactor())
    stop.received(signal.SIGHUP)
    cancelled: list[object] = []
    work: Deferred[int] = Deferred(cancelled.append)
    failure = _outcome(Deferred.fromCoroutine(stop.race(work)))
    assert isinstance(failure.value, Interrupted) and stop.exit_status == 129
    assert cancelled == [work]


def test_clean_up_is_bounded_by_its_budget_and_by_a_second_signal() -> None:
    reactor = _Reactor()
    stop = StopSignals(reactor)
    stop.received(signal.SIGINT)
    cancelled: list[object] = []
    slow: Deferred[None] = Deferred(cancelled.append)
    bounded = Deferred.fromCoroutine(stop.bounded(slow, 0.8))
    reactor.advance(0.79)
    assert not bounded.called
    reactor.advance(0.01)
    assert _outcome(bounded) is False and cancelled == [slow]

    other: Deferred[None] = Deferred(cancelled.append)
    bounded = Deferred.fromCoroutine(stop.bounded(other, 0.8))
    stop.received(signal.SIGINT)  # a second Ctrl-C
    assert _outcome(bounded) is False and cancelled == [slow, other]

    quick: Deferred[None] = Deferred()
    bounded = Deferred.fromCoroutine(stop.bounded(quick, 0.8))
    quick.callback(None)
    assert _outcome(bounded) is True and reactor.getDelayedCalls() == []


def test_a_clean_up_started_by_a_signal_is_not_cut_short_by_that_same_signal() -> None:
    reactor = _Reactor()
    stop = StopSignals(reactor)
    deletes: Deferred[None] = Deferred()
    finished: list[bool] = []

    async def command() -> None:
        try:
            await stop.race(Deferred())
        finally:
            finished.append(await stop.bounded(deletes))

    Deferred.fromCoroutine(command()).addErrback(lambda f: f.trap(Interrupted))
    stop.received(signal.SIGHUP)
    assert finished == []  # still waiting for the deletes
    deletes.callback(None)
    assert finished == [True]


M = Mapping("tcp", 8080, 18080, 7200, 5)
SPEC = MappingSpec("tcp", 8080)


def _report(*events: MappingEvent, as_json: bool = False) -> list[str]:
    lines: list[str] = []
    report = EventReport(Output(as_json, lines.append))
    for event in events:
        report(event)
    return [line.rstrip("\n") for line in lines]


def test_one_line_format_for_a_mapping() -> None:
    assert mapping_line(M, "203.0.113.7") == "tcp:8080 -> 203.0.113.7:18080 for 7200 s (NAT-PMP)"
    assert _report(MappingEvent(EventKind.MAPPED, SPEC, M, external_address="203.0.113.7")) == [
        "tcp:8080 -> 203.0.113.7:18080 for 7200 s (NAT-PMP)"]


def test_a_mapping_made_again_after_a_reboot_is_re_created_not_renewed() -> None:
    where = "203.0.113.7"
    lines = _report(
        MappingEvent(EventKind.MAPPED, SPEC, M, external_address=where),
        MappingEvent(EventKind.RENEWED, SPEC, M, M, external_address=where),
        MappingEvent(EventKind.STATE_LOST, external_address=where),
        MappingEvent(EventKind.RENEWED, SPEC, M, M, external_address=where),  # today's service
        MappingEvent(EventKind.RENEWED, SPEC, M, M, external_address=where),
        MappingEvent(EventKind.STATE_LOST, external_address=where),
        MappingEvent(EventKind.RECREATED, SPEC, M, M, external_address=where),  # the new one
        MappingEvent(EventKind.RENEWED, SPEC, M, M, external_address=where),
        MappingEvent(EventKind.EXPIRED, SPEC, None, M, external_address=where),
        MappingEvent(EventKind.REMOVED, SPEC, None, M, external_address=where),
    )
    line = "tcp:8080 -> 203.0.113.7:18080 for 7200 s (NAT-PMP)"
    assert lines == [
        line, f"renewed {line}",
        "the gateway lost its mappings (rebooted?): re-creating them",
        f"re-created {line}", f"renewed {line}",
        "the gateway lost its mappings (rebooted?): re-creating them",
        f"re-created {line}", f"renewed {line}",
        "expired tcp:8080 (was -> 203.0.113.7:18080): re-creating it",
        "deleted tcp:8080 (NAT-PMP)",
    ]
    pcp = Mapping("tcp", 8080, 18080, 7200, 1, "pcp", external_address=where)
    assert _report(MappingEvent(EventKind.MAPPED, SPEC, pcp, external_address=where),
                   MappingEvent(EventKind.REMOVED, SPEC, None, pcp, external_address=where),
                   MappingEvent(EventKind.REMOVED, SPEC, None, None)) == [
        "tcp:8080 -> 203.0.113.7:18080 for 7200 s (PCP)", "deleted tcp:8080 (PCP)",
        "deleted tcp:8080"]  # nothing known of how it was made: no method said


def test_json_event_lines_name_the_event_as_shown() -> None:
    lines = _report(
        MappingEvent(EventKind.MAPPED, SPEC, M),
        MappingEvent(EventKind.STATE_LOST),
        MappingEvent(EventKind.RENEWED, SPEC, M, M),
        as_json=True,
    )
    assert [json.loads(line)["event"] for line in lines] == [
        "mapped", "gateway lost state", "re-created"]
    assert "nonce" not in json.loads(lines[0])["mapping"]


def _log(namespace: str, level: LogLevel, **extra: Any) -> dict[str, Any]:
    return {"log_namespace": namespace, "log_level": level, "log_format": "said",
            **extra}


def test_the_service_news_the_command_renders_is_not_logged_again() -> None:
    shown: list[str] = []
    observe = log_observer(False, shown.append, events_rendered=True)
    observe(_log("txnatpmp._service.MappingService", LogLevel.warn))
    observe(_log("txnatpmp._service.MappingService", LogLevel.info))
    assert shown == []
    observe(_log("txnatpmp._client.NATPMPClient", LogLevel.info, retransmit=True))
    observe(_log("txnatpmp._service.MappingService", LogLevel.critical))
    assert shown == ["natpmp: said\n", "natpmp: said\n"]
    shown.clear()
    observe = log_observer(False, shown.append, events_rendered=False)
    observe(_log("txnatpmp._service.MappingService", LogLevel.warn))
    assert shown == ["natpmp: said\n"]


def test_no_default_route_suggests_g() -> None:
    said: list[str] = []
    status = outcome_of(Failure(GatewayNotFound("no default IPv4 route in /proc/net/route")),
                        said.append)
    assert status == 1 and "give the gateway with -g ADDRESS" in said[0]


def test_a_silent_gateway_suggests_what_to_check() -> None:
    said: list[str] = []
    outcome_of(Failure(GatewayTimeout(("198.51.100.1", 5351), 9, 127.75)), said.append)
    assert "enabled on the router" in said[0] and "-g ADDRESS" in said[0]


@pytest.mark.parametrize(
    "error, status",
    [(Interrupted(signal.SIGINT), 130), (Interrupted(signal.SIGTERM), 143),
     (Interrupted(signal.SIGHUP), 129), (CannotRun("x", 127), 127),
     (GatewayTimeout(("198.51.100.1", 5351), 9, 127.75), 1), (ValueError("bad"), 2)],
)
def test_exit_statuses(error: Exception, status: int) -> None:
    assert outcome_of(Failure(error), lambda _: None) == status


def test_a_broken_stream_says_so_once_then_writes_nothing() -> None:
    heard: list[OSError] = []
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        stream = Stream(full, heard.append)
        stream.write("one\n")
        stream.write("two\n")
    finally:
        os.close(full)
    assert len(heard) == 1 and stream.broken is heard[0]


def test_resolve_finds_commands_as_a_shell_does(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert resolve("tool", {"PATH": str(tmp_path)}) == str(tool)
    assert resolve(str(tool)) == str(tool)
    with pytest.raises(CannotRun) as missing:
        resolve("tool", {"PATH": "/nonexistent"})
    assert missing.value.status == 127
    tool.chmod(0o644)
    with pytest.raises(CannotRun) as refused:
        resolve("tool", {"PATH": str(tmp_path)})
    assert refused.value.status == 126


def test_shell_command_quotes_several_arguments_and_keeps_one_as_a_script() -> None:
    assert shell_command(["printf", "[%s]", "a b"]) == ["/bin/sh", "-c", "printf '[%s]' 'a b'"]
    assert shell_command(["echo $HOME; exit 4"]) == ["/bin/sh", "-c", "echo $HOME; exit 4"]
