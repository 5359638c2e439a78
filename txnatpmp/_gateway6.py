"""
Finding the IPv6 default router, where an IPv6 PCP server lives (P05, P47).

The router is usually a link-local address learnt from a Router Advertisement, so it only means
something together with its interface: L{Router6} keeps both.  The parsers are pure functions of
the text each system gives, tested on fixture text; L{find_gateway6} chooses one, fetches its
input without blocking the reactor, and fills in the interface's name or index from the other.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Callable

from attrs import frozen
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess

from ._errors import GatewayNotFound
from ._gateway import _run
from ._reactor import global_reactor

_RTF_UP = 0x1
_RTF_GATEWAY = 0x2
_RTF_REJECT = 0x200


@frozen
class Router6:
    """
    An IPv6 router: its C{address} (no C{%zone} in it), the C{interface} it is reached on (a
    name; C{""} when unknown) and that interface's index, C{scope_id} (0 when unknown).
    """

    address: str
    interface: str = ""
    scope_id: int = 0

    @property
    def link_local(self) -> bool:
        """Whether the address is link-local (fe80::/10): usable only with its interface."""
        return ipaddress.IPv6Address(self.address).is_link_local

    @property
    def host(self) -> str:
        """The address as a socket takes it: C{fe80::1%eth0} for a link-local one."""
        if not self.link_local:
            return self.address
        zone = self.interface or (str(self.scope_id) if self.scope_id else "")
        return f"{self.address}%{zone}" if zone else self.address

    def sockaddr(self, port: int = 5351) -> tuple[str, int, int, int]:
        """The 4-tuple socket address C{(address, port, 0, scope_id)}."""
        return (self.address, port, 0, self.scope_id if self.link_local else 0)


def _ipv6(text: str) -> tuple[str, str] | None:
    """C{(address, zone)} from C{text} such as C{fe80::1%en0}; C{None} if not IPv6."""
    address, _, zone = text.strip().partition("%")
    try:
        return str(ipaddress.IPv6Address(address)), zone
    except ValueError:
        return None


def parse_proc_net_ipv6_route(text: str) -> Router6:
    """
    The default router from Linux's C{/proc/net/ipv6_route}: among routes to ::/0 that are up,
    go through a next hop and do not reject, the one with the lowest metric.  Its C{scope_id}
    is 0: the file names the interface only.
    """
    candidates: list[tuple[int, str, str]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 10:
            continue
        destination, prefix, _src, _src_prefix, next_hop, metric, _ref, _use, flags, name = fields
        try:
            is_default = int(destination, 16) == 0 and int(prefix, 16) == 0
            wanted = int(flags, 16) & (_RTF_UP | _RTF_GATEWAY | _RTF_REJECT)
            address = str(ipaddress.IPv6Address(bytes.fromhex(next_hop)))
            rank = int(metric, 16)
        except ValueError:
            continue
        if is_default and wanted == _RTF_UP | _RTF_GATEWAY and address != "::":
            candidates.append((rank, address, name))
    if not candidates:
        raise GatewayNotFound("no default IPv6 route in /proc/net/ipv6_route")
    _rank, address, name = min(candidates)
    return Router6(address, name)


def parse_route_get_inet6(text: str) -> Router6:
    """The default router from macOS/BSD C{route -n get -inet6 default}."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.strip().partition(":")
        if colon and key in ("gateway", "interface"):
            fields.setdefault(key, value.strip())
    found = _ipv6(fields.get("gateway", ""))
    if found is None:
        raise GatewayNotFound("'route -n get -inet6 default' shows no IPv6 router")
    address, zone = found
    interface = fields.get("interface", "") or zone
    return Router6(address, interface)


def parse_route_print_6(text: str) -> Router6:
    """
    The default router from Windows C{route print -6}: the lowest metric among the active
    C{::/0} routes through a router.  Windows names the interface by its index only, so that
    is the C{scope_id}, and C{interface} is C{""}.
    """
    candidates: list[tuple[int, str, int]] = []
    active = False
    for line in text.splitlines():
        if line.strip().startswith("Persistent Routes"):
            active = False
        elif line.strip().startswith("Active Routes"):
            active = True
        fields = line.split()
        if not active or len(fields) != 4 or fields[2] != "::/0":
            continue
        found = _ipv6(fields[3])
        if found is not None and fields[0].isdigit() and fields[1].isdigit():
            candidates.append((int(fields[1]), found[0], int(fields[0])))
    if not candidates:
        raise GatewayNotFound("'route print -6' shows no default IPv6 route")
    _rank, address, index = min(candidates)
    return Router6(address, "", index)


def complete(router: Router6, index_of: Callable[[str], int] = socket.if_nametoindex,
             name_of: Callable[[int], str] = socket.if_indextoname) -> Router6:
    """
    C{router} with the interface's index found from its name, or its name from its index.

    @raise GatewayNotFound: for a link-local router whose interface cannot be found.
    """
    try:
        if router.interface and not router.scope_id:
            return Router6(router.address, router.interface, index_of(router.interface))
        if router.scope_id and not router.interface:
            return Router6(router.address, name_of(router.scope_id), router.scope_id)
    except OSError as error:
        if router.link_local:
            raise GatewayNotFound(f"no interface for the IPv6 router {router.address}: {error}")
    if router.link_local and not router.scope_id:
        raise GatewayNotFound(f"the IPv6 router {router.address} is link-local, on no interface")
    return router


def _read_proc_net_ipv6_route(path: str = "/proc/net/ipv6_route") -> Deferred[Router6]:
    try:
        with open(path) as routes:
            return defer.succeed(complete(parse_proc_net_ipv6_route(routes.read())))
    except OSError as error:
        return defer.fail(GatewayNotFound(f"cannot read {path}: {error}"))
    except GatewayNotFound:
        return defer.fail()


def find_gateway6(
    reactor: IReactorProcess | None = None, platform: str | None = None
) -> Deferred[Router6]:
    """
    Find the IPv6 default router (P05, P47).

    @param platform: A C{sys.platform} value; the running system's by default.
    @return: A Deferred firing with a L{Router6} whose C{interface} and C{scope_id} are both
        known for a link-local router, or failing with L{GatewayNotFound}.
    """
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux"):
        return _read_proc_net_ipv6_route()
    if reactor is None:
        reactor = global_reactor()
    if platform == "win32":
        argv = ["route", "print", "-6"]
        parse: Callable[[str], Router6] = parse_route_print_6
    elif platform == "darwin" or "bsd" in platform:
        argv = ["/sbin/route", "-n", "get", "-inet6", "default"]
        parse = parse_route_get_inet6
    else:
        return defer.fail(GatewayNotFound(f"do not know how to find the IPv6 router on {platform}"))
    return _run(reactor, argv, lambda text: complete(parse(text)))
