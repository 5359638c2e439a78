"""
Finding the default IPv4 gateway, where a NAT-PMP server usually lives.

The parsers are pure functions of the text each system gives, so each is tested on fixture text;
L{find_gateway} only chooses one and fetches its input without blocking the reactor.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from typing import Callable, NoReturn, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess

from ._reactor import global_reactor
from ._errors import GatewayNotFound

T = TypeVar("T")

_RTF_UP = 0x1
_RTF_GATEWAY = 0x2


def _ipv4(text: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def parse_proc_net_route(text: str) -> str:
    """
    The default gateway from Linux's C{/proc/net/route}: among routes to 0.0.0.0/0 that are up
    and go through a gateway, the one with the lowest metric.
    """
    candidates: list[tuple[int, str]] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        _iface, destination, gateway, flags, _refcnt, _use, metric, mask = fields[:8]
        try:
            is_default = int(destination, 16) == 0 and int(mask, 16) == 0
            wanted = int(flags, 16) & (_RTF_UP | _RTF_GATEWAY) == _RTF_UP | _RTF_GATEWAY
            address = socket.inet_ntoa(struct.pack("<I", int(gateway, 16)))
            rank = int(metric)
        except (ValueError, struct.error):
            continue
        if is_default and wanted:
            candidates.append((rank, address))
    if not candidates:
        raise GatewayNotFound("no default IPv4 route in /proc/net/route")
    return min(candidates)[1]


def parse_route_get(text: str) -> str:
    """The default gateway from macOS/BSD C{route -n get default}."""
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "gateway":
            address = _ipv4(value.strip())
            if address is not None:
                return address
    raise GatewayNotFound("'route -n get default' shows no IPv4 gateway")


def parse_route_print(text: str) -> str:
    """The default gateway from Windows C{route print -4}: lowest metric among 0.0.0.0/0 routes."""
    candidates: list[tuple[int, str]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[:2] == ["0.0.0.0", "0.0.0.0"]:
            address = _ipv4(fields[2])
            if address is not None and fields[4].isdigit():
                candidates.append((int(fields[4]), address))
    if not candidates:
        raise GatewayNotFound("'route print -4' shows no default IPv4 route")
    return min(candidates)[1]


def _read_proc_net_route(path: str = "/proc/net/route") -> Deferred[str]:
    try:
        with open(path) as routes:
            return defer.succeed(parse_proc_net_route(routes.read()))
    except OSError as error:
        return defer.fail(GatewayNotFound(f"cannot read {path}: {error}"))
    except GatewayNotFound as error:  # no default route (yet): a failed Deferred, not a raise
        return defer.fail(error)


def _run(reactor: IReactorProcess, argv: list[str], parse: Callable[[str], T]) -> Deferred[T]:
    """Run a routing command without blocking, and parse what it prints."""
    from twisted.internet.utils import getProcessOutput

    def failed(reason: object) -> NoReturn:
        raise GatewayNotFound(f"could not run {' '.join(argv)}: {reason}")

    try:
        output: Deferred[bytes] = getProcessOutput(argv[0], argv[1:], reactor=reactor)  # type: ignore[no-untyped-call]
    except OSError as error:
        return defer.fail(GatewayNotFound(f"could not run {' '.join(argv)}: {error}"))
    return output.addCallbacks(lambda out: parse(out.decode("utf-8", "replace")), failed)


def find_gateway(
    reactor: IReactorProcess | None = None, platform: str | None = None
) -> Deferred[str]:
    """
    Find the default IPv4 gateway.

    @param platform: A C{sys.platform} value; the running system's by default.
    @return: A Deferred firing with the gateway's dotted address, or failing with
        L{GatewayNotFound}.
    """
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux"):
        return _read_proc_net_route()
    if reactor is None:
        reactor = global_reactor()
    if platform == "win32":
        return _run(reactor, ["route", "print", "-4"], parse_route_print)
    if platform == "darwin" or "bsd" in platform:
        return _run(reactor, ["/sbin/route", "-n", "get", "default"], parse_route_get)
    return defer.fail(GatewayNotFound(f"do not know how to find the gateway on {platform}"))
