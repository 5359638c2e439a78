"""
IPv6 default-router discovery (P05, P47), on fixture text for each system (never this machine's
routes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_twisted

from txnatpmp import GatewayNotFound, Router6, find_gateway6
from txnatpmp._gateway import _run
from txnatpmp._gateway6 import (
    _read_proc_net_ipv6_route,
    complete,
    parse_proc_net_ipv6_route,
    parse_route_get_inet6,
    parse_route_print_6,
)

FIXTURES = Path(__file__).parent / "fixtures"
LAB_ROUTER = "fe80::209b:90ff:fe94:60f2"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_P47_linux_default_router_is_the_link_local_next_hop_with_its_interface() -> None:
    # eth0 (metric 0x400) beats wlan0 (0x600); wlan0's route without the gateway flag and lo's
    # reject route to ::/0 do not count.
    router = parse_proc_net_ipv6_route(fixture("proc_net_ipv6_route.txt"))
    assert router == Router6(LAB_ROUTER, "eth0", 0)
    assert router.link_local and router.host == f"{LAB_ROUTER}%eth0"


def test_P47_linux_without_a_default_route() -> None:
    rows = [line for line in fixture("proc_net_ipv6_route.txt").splitlines()
            if not line.startswith("0" * 32 + " 00") or line.endswith("lo")]
    with pytest.raises(GatewayNotFound, match="no default IPv6 route"):
        parse_proc_net_ipv6_route("\n".join(rows))


def test_linux_garbage_rows_are_skipped() -> None:
    text = "zz 00 yy\n" + "0" * 32 + " 00 " + "0" * 32 + " 00 " + "z" * 32 + " 1 1 0 3 eth1\n"
    router = parse_proc_net_ipv6_route(text + fixture("proc_net_ipv6_route.txt"))
    assert router.address == LAB_ROUTER


def test_linux_unreadable_route_file(tmp_path: Path) -> None:
    failure = []
    _read_proc_net_ipv6_route(str(tmp_path / "missing")).addErrback(failure.append)
    assert failure and failure[0].check(GatewayNotFound)


def test_P47_macos_router_and_interface() -> None:
    router = parse_route_get_inet6(fixture("route_get_inet6_default_macos.txt"))
    assert router == Router6("fe80::1c2b:3cff:fe4d:5e6f", "en0", 0)


def test_macos_default_route_through_a_tunnel_only() -> None:
    with pytest.raises(GatewayNotFound, match="no IPv6 router"):
        parse_route_get_inet6(fixture("route_get_inet6_default_vpn_macos.txt"))


def test_macos_interface_from_the_zone_when_no_interface_line() -> None:
    assert parse_route_get_inet6("gateway: fe80::1%en1\n") == Router6("fe80::1", "en1", 0)


def test_P47_windows_lowest_metric_active_route_with_its_interface_index() -> None:
    router = parse_route_print_6(fixture("route_print_6_windows.txt"))
    assert router == Router6("fe80::1", "", 17)
    assert router.sockaddr() == ("fe80::1", 5351, 0, 17)


def test_windows_persistent_routes_do_not_count() -> None:
    text = fixture("route_print_6_windows.txt")
    no_active_default = "\n".join(line.replace("::/0", "::/1") if "fe80" in line else line
                                  for line in text.splitlines())
    assert "::/0" in no_active_default  # the persistent route to ::/0 is still listed
    with pytest.raises(GatewayNotFound):
        parse_route_print_6(no_active_default)


def test_complete_fills_the_index_from_the_name_and_the_name_from_the_index() -> None:
    assert complete(Router6("fe80::1", "eth0"), index_of={"eth0": 4}.__getitem__) == Router6(
        "fe80::1", "eth0", 4)
    assert complete(Router6("fe80::1", "", 17), name_of={17: "Ethernet"}.__getitem__) == Router6(
        "fe80::1", "Ethernet", 17)


def test_complete_refuses_a_link_local_router_on_an_unknown_interface() -> None:
    def missing(name: str) -> int:
        raise OSError("no such device")

    with pytest.raises(GatewayNotFound, match="no interface"):
        complete(Router6("fe80::1", "gone0"), index_of=missing)


def test_a_global_router_needs_no_interface() -> None:
    router = complete(Router6("2001:db8:100::1"))
    assert (router.host, router.sockaddr(), router.link_local) == (
        "2001:db8:100::1", ("2001:db8:100::1", 5351, 0, 0), False)


def test_unknown_platform() -> None:
    failure = []
    find_gateway6(platform="plan9").addErrback(failure.append)
    assert failure[0].check(GatewayNotFound) and "plan9" in str(failure[0].value)


@pytest_twisted.ensureDeferred
async def test_route_command_output_is_parsed_without_blocking() -> None:
    text = fixture("route_get_inet6_default_macos.txt")
    argv = [sys.executable, "-c", f"print({text!r})"]
    from twisted.internet import reactor

    assert await _run(reactor, argv, parse_route_get_inet6) == Router6(
        "fe80::1c2b:3cff:fe4d:5e6f", "en0", 0)
