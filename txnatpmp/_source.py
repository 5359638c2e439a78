"""
The source address this host uses toward a PCP server (P06), and for IPv6 its global address
(P08): a pinhole belongs to one address, and one for a link-local or unique-local address is of no
use from outside.

The socket helpers use a throwaway connected UDP socket: a UDP C{connect()} only picks a route and
a source address, it sends nothing.  The choices are pure functions, tested without sockets.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Iterable, NamedTuple

#: A global destination to ask the kernel for its global source (RFC 6724) when the server is
#: link-local (P08).  Documentation prefix: nothing is ever sent to it.
GLOBAL_PROBE = ("2001:db8::1", 9)


class NoGlobalAddress(ValueError):
    """This host has no global IPv6 address to open a pinhole for (P08)."""


def is_global_unicast(address: str) -> bool:
    """
    Whether C{address} is usable as an IPv6 pinhole's address (P08): unicast, not link-local,
    not unique-local (fc00::/7), not loopback, unspecified, multicast or IPv4-mapped.  The
    documentation prefix 2001:db8::/32 counts as global (the lab uses it).
    """
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return False
    return not (ip.is_link_local or ip in _ULA or ip.is_loopback or ip.is_unspecified
                or ip.is_multicast or ip.ipv4_mapped is not None or ip.is_site_local)


_ULA = ipaddress.IPv6Network("fc00::/7")


class InterfaceAddress(NamedTuple):
    """A row of Linux's C{/proc/net/if_inet6}."""

    address: str
    interface: str
    scope: int
    flags: int

    @property
    def temporary(self) -> bool:
        """A privacy address (IFA_F_TEMPORARY)."""
        return bool(self.flags & 0x01)

    @property
    def usable(self) -> bool:
        """Neither tentative (0x40), failed duplicate detection (0x08), nor deprecated (0x20)."""
        return not self.flags & (0x40 | 0x08 | 0x20)


def parse_if_inet6(text: str) -> list[InterfaceAddress]:
    """The addresses listed in Linux's C{/proc/net/if_inet6}; malformed rows are skipped."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6 or len(fields[0]) != 32:
            continue
        try:
            address = str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
            found.append(InterfaceAddress(address, fields[5], int(fields[3], 16),
                                          int(fields[4], 16)))
        except ValueError:
            continue
    return found


def pick_global_address(candidates: Iterable[InterfaceAddress], interface: str = "",
                        prefer_temporary: bool = False) -> str:
    """
    The global address to use among C{candidates} (on C{interface} when given): usable ones
    only, stable before temporary unless C{prefer_temporary}, then the lowest for a stable
    choice.

    @raise NoGlobalAddress: when there is none.
    """
    usable = [c for c in candidates if is_global_unicast(c.address) and c.usable
              and (not interface or c.interface == interface)]
    if not usable:
        where = f" on {interface}" if interface else ""
        raise NoGlobalAddress(f"this host has no global IPv6 address{where}")
    usable.sort(key=lambda c: (c.temporary != prefer_temporary,
                               int(ipaddress.IPv6Address(c.address))))
    return usable[0].address


def source_address_toward(server: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """
    The address the kernel sends from toward C{server} (P06): a throwaway UDP socket is
    connected (which sends nothing) and asked its name.  C{server} may be an IPv6 4-tuple with
    a scope id (a link-local router).  The answer carries no C{%zone}.

    @raise OSError: when there is no route.
    """
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(server)
        return str(probe.getsockname()[0]).partition("%")[0]


def check_assigned(address: str) -> None:
    """
    Check that this host still has C{address}, by binding a throwaway UDP socket to it.  Linux
    lets a socket bound to an address that was since removed (a link that went down drops its
    static IPv6 addresses) go on sending from it: the router would answer an address nobody
    has.

    @raise OSError: C{EADDRNOTAVAIL} when the host no longer has it.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as error:
            raise OSError(error.errno, f"this host no longer has {address}") from None


def global_address_toward(server: tuple[str, int] | tuple[str, int, int, int],
                          interface: str = "", if_inet6: str = "/proc/net/if_inet6") -> str:
    """
    This host's global IPv6 address for talking to C{server} (P08): the source toward it when
    that is global; otherwise (a link-local server) the kernel's source toward a global
    destination (L{GLOBAL_PROBE}); otherwise a global address on C{interface} from Linux's
    C{/proc/net/if_inet6}.

    @raise NoGlobalAddress: when the host has none.
    """
    for destination in (server, GLOBAL_PROBE):
        try:
            source = source_address_toward(destination)
        except OSError:
            continue
        if is_global_unicast(source):
            return source
    try:
        with open(if_inet6) as listing:
            return pick_global_address(parse_if_inet6(listing.read()), interface)
    except OSError:
        raise NoGlobalAddress("this host has no global IPv6 address toward "
                              f"{server[0]}") from None
