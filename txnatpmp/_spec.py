"""
Mapping specs (C{tcp:60010}, C{tcp:60010:60010}, C{udp:5353}) and gateway strings
(C{198.51.100.1}, C{198.51.100.1:5351}), shared by the plugin, the command and the endpoint.
"""

from __future__ import annotations

from attrs import frozen

from ._client import check_gateway
from ._wire import SERVER_PORT, Protocol


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
    if not text.isdigit() or not 1 <= int(text) <= 0xFFFF:
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


def parse_gateway(text: str) -> tuple[str, int]:
    """
    Parse C{ADDRESS} or C{ADDRESS:PORT} (an IPv4 address; port 5351 by default).

    @raise ValueError: with a message saying what is wrong.
    """
    host, colon, port_text = text.strip().partition(":")
    port = SERVER_PORT
    if colon:
        if not port_text.isdigit():
            raise ValueError(f"gateway port in {text!r} must be a number, not {port_text!r}")
        port = int(port_text)
    return check_gateway(host, port)


def parse_lifetime(text: str | int) -> int:
    """A requested lifetime in seconds: a whole number from 1 to 4294967295."""
    value = str(text).strip()
    if not value.isdigit() or not 1 <= int(value) <= 0xFFFFFFFF:
        raise ValueError(f"lifetime must be a whole number of seconds from 1 up, not {text!r}")
    return int(value)
