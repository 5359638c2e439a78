"""
Values a user gives, parsed once at the edge: mapping specs (C{tcp:60010}, C{tcp:60010:60010},
C{udp:5353}), gateways (C{198.51.100.1}, C{198.51.100.1:5351}) and lifetimes.  The plugin, the
command and the endpoint share these parsers; inner layers take the values, never strings.

Only ASCII digits make a number here: C{str.isdigit()} and C{int()} also accept other scripts'
digits (C{"٣٠٠١٠"}, C{"８０"}), which nobody means as a port.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple, Sequence

from attrs import frozen

from ._wire import SERVER_PORT as SERVER_PORT
from ._wire import Protocol

#: The lifetime requested when none is given (RFC 6886 section 3.3, R14).
DEFAULT_LIFETIME = 7200
#: The largest lifetime a request can carry.
MAX_LIFETIME = 0xFFFFFFFF

_ASCII_DIGITS = frozenset("0123456789")


def is_ascii_number(text: str) -> bool:
    """Whether C{text} is one or more ASCII digits and nothing else."""
    return bool(text) and set(text) <= _ASCII_DIGITS


def parse_number(text: str, what: str, low: int, high: int) -> int:
    """
    A whole number from C{low} to C{high} written in ASCII digits.

    @raise ValueError: naming C{what} and quoting C{text}.
    """
    if not is_ascii_number(text) or not low <= int(text) <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


class Gateway(NamedTuple):
    """
    A gateway's address (IPv4, or IPv6 with C{%zone} when link-local) and its port (5351 unless
    a test double listens elsewhere).  A tuple, so C{host, port = gateway} works where
    C{(host, port)} pairs did.
    """

    host: str
    port: int = SERVER_PORT

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def check_gateway(host: str, port: int = SERVER_PORT) -> Gateway:
    """
    Return the L{Gateway} if C{host} is a dotted IPv4 address and C{port} a UDP port.

    @raise ValueError: otherwise.
    """
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"gateway must be an IPv4 address, not {host!r}") from None
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 0xFFFF:
        raise ValueError(f"gateway port must be from 1 to 65535, not {port!r}")
    return Gateway(str(address), port)


def check_gateway6(host: str, port: int = SERVER_PORT) -> Gateway:
    """
    Return the L{Gateway} if C{host} is an IPv6 address (a link-local one with its interface,
    C{fe80::1%eth0}) and C{port} a UDP port.

    @raise ValueError: otherwise.
    """
    address, percent, zone = host.partition("%")
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        raise ValueError(f"IPv6 gateway must be an IPv6 address, not {host!r}") from None
    if ip.is_link_local and not zone:
        raise ValueError(f"a link-local IPv6 gateway needs its interface, as in fe80::1%eth0, "
                         f"not {host!r}")
    if percent and (not zone or not zone.isascii() or not zone.isprintable() or " " in zone):
        raise ValueError(f"IPv6 gateway {host!r} has a bad interface name")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 0xFFFF:
        raise ValueError(f"gateway port must be from 1 to 65535, not {port!r}")
    return Gateway(f"{ip}%{zone}" if ip.is_link_local else str(ip), port)


def address_port(address: str | None, port: int) -> str:
    """C{address:port}, C{[address]:port} for IPv6, C{?:port} for an address not known yet."""
    if address is not None and ":" in address:
        return f"[{address}]:{port}"
    return f"{address or '?'}:{port}"


def gateway_family(host: str) -> int:
    """4 or 6: the address family of a gateway's address (C{fe80::1%eth0} is 6)."""
    return 6 if ":" in host else 4


#: The address families a service can keep mappings on: an IPv4 mapping, an IPv6 pinhole.
FAMILIES = (4, 6)


def check_families(families: int | str | Sequence[int]) -> tuple[int, ...]:
    """
    The address families to keep each mapping on, in order: C{4}, C{6}, or both (C{(4, 6)},
    or C{"46"} as the command line writes it).

    @raise ValueError: for anything else, before anything is sent.
    """
    if isinstance(families, bool):
        chosen: tuple[object, ...] = (families,)
    elif isinstance(families, int):
        chosen = (4, 6) if families == 46 else (families,)
    elif isinstance(families, str):
        text = families.strip()
        chosen = {"4": (4,), "6": (6,), "46": (4, 6)}.get(text, (text,))
    else:
        chosen = tuple(families)
    if (not chosen or len(set(chosen)) != len(chosen)
            or any(isinstance(f, bool) or f not in FAMILIES for f in chosen)):
        raise ValueError(f"family must be 4, 6 or 46 (both), not {families!r}")
    return tuple(f for f in FAMILIES if f in chosen)


@frozen
class MappingSpec:
    """
    A mapping to keep: C{protocol}, the local C{internal_port}, and a suggested C{external_port}
    (0 for any).
    """

    protocol: Protocol
    internal_port: int
    external_port: int = 0

    @property
    def key(self) -> tuple[str, int]:
        """What identifies a mapping on a gateway for one host: protocol and internal port."""
        return (self.protocol, self.internal_port)

    def __str__(self) -> str:
        suffix = f":{self.external_port}" if self.external_port else ""
        return f"{self.protocol}:{self.internal_port}{suffix}"


def _port(text: str, what: str, spec: str) -> int:
    if not is_ascii_number(text) or not 1 <= int(text) <= 0xFFFF:
        raise ValueError(f"{what} in {spec!r} must be a number from 1 to 65535, not {text!r}")
    return int(text)


def parse_spec(spec: str) -> MappingSpec:
    """
    Parse C{PROTOCOL:INTERNAL[:EXTERNAL]}.

    @raise ValueError: with a message saying what is wrong.
    """
    parts = spec.strip().split(":")
    if len(parts) not in (2, 3):
        raise ValueError(
            f"mapping {spec!r} is not PROTOCOL:PORT or PROTOCOL:PORT:EXTERNAL_PORT "
            "(for example tcp:60010)"
        )
    protocol = parts[0].lower()
    if protocol not in ("tcp", "udp"):
        raise ValueError(f"protocol in {spec!r} must be tcp or udp, not {parts[0]!r}")
    internal = _port(parts[1], "port", spec)
    external = _port(parts[2], "external port", spec) if len(parts) == 3 else 0
    return MappingSpec(protocol, internal, external)  # type: ignore[arg-type]


def parse_gateway(text: str) -> Gateway:
    """
    Parse C{ADDRESS} or C{ADDRESS:PORT}: an IPv4 address, or an IPv6 one (C{fe80::1%eth0},
    C{[2001:db8::1]:5351}); port 5351 by default.

    @raise ValueError: with a message saying what is wrong.
    """
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"gateway {text!r} is not [IPV6-ADDRESS] or [IPV6-ADDRESS]:PORT")
        return check_gateway6(host, _gateway_port(rest[1:], text) if rest else SERVER_PORT)
    if text.count(":") > 1:
        return check_gateway6(text)
    host, colon, port_text = text.partition(":")
    return check_gateway(host, _gateway_port(port_text, text) if colon else SERVER_PORT)


def _gateway_port(port_text: str, text: str) -> int:
    if not is_ascii_number(port_text):
        raise ValueError(f"gateway port in {text!r} must be a number, not {port_text!r}")
    return int(port_text)


def parse_seconds(text: str, what: str = "") -> float:
    """
    A positive number of seconds in ASCII digits (C{10}, C{2.5}, C{.5}).

    @raise ValueError: naming C{what} (when given) and quoting C{text}.
    """
    whole, _, fraction = text.partition(".")
    if (not (whole or fraction) or (whole and not is_ascii_number(whole))
            or (fraction and not is_ascii_number(fraction)) or not float(text) > 0):
        raise ValueError(f"{what} must be a positive number of seconds, not {text!r}".strip())
    return float(text)


def parse_lifetime(text: str | int) -> int:
    """A requested lifetime in seconds: a whole number from 1 to 4294967295."""
    if isinstance(text, bool):
        raise ValueError(f"lifetime must be a whole number of seconds from 1 up, not {text!r}")
    value = str(text).strip()
    if not is_ascii_number(value) or not 1 <= int(value) <= MAX_LIFETIME:
        raise ValueError(f"lifetime must be a whole number of seconds from 1 up, not {text!r}")
    return int(value)
