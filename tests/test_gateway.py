"""
Default-gateway discovery, on fixture text for each system (never this machine's routes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_twisted

from txnatpmp import GatewayNotFound, find_gateway
from txnatpmp._gateway import (
    _read_proc_net_route,
    _run,
    parse_proc_net_route,
    parse_route_get,
    parse_route_print,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_linux_lowest_metric_default_route_with_gateway_flag() -> None:
    # wlan0 (metric 600) and eth0 (100) are default routes; tun0 (50) is not flagged UP.
    assert parse_proc_net_route(fixture("proc_net_route.txt")) == "198.51.100.1"


def test_linux_no_default_route() -> None:
    text = fixture("proc_net_route.txt").splitlines()
    only_link = "\n".join([text[0], text[3]])
    with pytest.raises(GatewayNotFound, match="no default IPv4 route"):
        parse_proc_net_route(only_link)


def test_linux_garbage_lines_are_skipped() -> None:
    text = "Iface\tDestination\n" + "eth0 zz yy xx 0 0 1 00000000\n" + fixture("proc_net_route.txt")
    assert parse_proc_net_route(text) == "198.51.100.1"


def test_linux_unreadable_route_file(tmp_path: Path) -> None:
    failure = []
    _read_proc_net_route(str(tmp_path / "missing")).addErrback(failure.append)
    assert failure and failure[0].check(GatewayNotFound)


def test_macos() -> None:
    assert parse_route_get(fixture("route_get_default_macos.txt")) == "198.51.100.1"


def test_macos_default_route_through_an_interface_only() -> None:
    with pytest.raises(GatewayNotFound):
        parse_route_get(fixture("route_get_default_vpn_macos.txt"))


def test_windows_lowest_metric() -> None:
    assert parse_route_print(fixture("route_print_windows.txt")) == "198.51.100.1"


def test_windows_no_default_route() -> None:
    with pytest.raises(GatewayNotFound):
        parse_route_print("Active Routes:\n 127.0.0.0 255.0.0.0 On-link 127.0.0.1 331\n")


def test_unknown_platform() -> None:
    failure = []
    find_gateway(platform="plan9").addErrback(failure.append)
    assert "plan9" in str(failure[0].value)


@pytest_twisted.ensureDeferred
async def test_route_command_runs_without_blocking_and_is_parsed() -> None:
    text = fixture("route_get_default_macos.txt")
    argv = [sys.executable, "-c", f"print({text!r})"]
    from twisted.internet import reactor

    assert await _run(reactor, argv, parse_route_get) == "198.51.100.1"


@pytest_twisted.ensureDeferred
async def test_route_command_that_cannot_run() -> None:
    from twisted.internet import reactor

    with pytest.raises(GatewayNotFound, match="could not run"):
        await _run(reactor, ["/nonexistent/route", "-n"], parse_route_get)
