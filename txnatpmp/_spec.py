"""
Values a user gives, parsed once at the edge: mapping specs (C{tcp:60010}, C{tcp:60010:60010},
C{udp:5353}), gateways (C{198.51.100.1}, C{198.51.100.1:5351}) and lifetimes.  The plugin, the
command and the endpoint share these parsers; inner layers take the values, never strings.

Only ASCII digits make a number here: C{str.isdigit()} and C{int()} also accept other scripts'
digits (C{"٣٠٠١٠"}, C{"８０"}), which nobody means as a port.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

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
    A gateway's IPv4 address and its port (5351 unless a test double listens elsewhere).  A
    tuple, so C{host, port = gateway} works where C{(host, port)} pairs did.
    """

    host: str
    port: int = SERVER_PORT

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


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
    Parse C{ADDRESS} or C{ADDRESS:PORT} (an IPv4 address; port 5351 by default).

    @raise ValueError: with a message saying what is wrong.
    """
    host, colon, port_text = text.strip().partition(":")
    port = SERVER_PORT
    if colon:
        if not is_ascii_number(port_text):
            raise ValueError(f"gateway port in {text!r} must be a number, not {port_text!r}")
        port = int(port_text)
    return check_gateway(host, port)


def parse_lifetime(text: str | int) -> int:
    """A requested lifetime in seconds: a whole number from 1 to 4294967295."""
    if isinstance(text, bool):
        raise ValueError(f"lifetime must be a whole number of seconds from 1 up, not {text!r}")
    value = str(text).strip()
    if not is_ascii_number(value) or not 1 <= int(value) <= MAX_LIFETIME:
        raise ValueError(f"lifetime must be a whole number of seconds from 1 up, not {text!r}")
    return int(value)
