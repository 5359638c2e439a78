"""
Token substitution for C{natpmp run}: C{%p} local port, C{%h} local address, C{%P} public port,
C{%H} public address, C{%%} a literal C{%}.  Any other C{%} (a trailing one, C{%x}) stays as it
is, so arguments that merely contain a percent sign pass through unchanged.
"""

from __future__ import annotations

from attrs import frozen

from .._results import Mapping


@frozen
class Endpoints:
    """Where a held mapping leads: the local and the public side."""

    local_address: str
    local_port: int
    public_address: str
    public_port: int
    #: With C{--family 46}: the IPv6 pinhole's address and port, beside the IPv4 mapping.
    public6: tuple[str, int] | None = None

    @classmethod
    def of(cls, mapping: Mapping, local_address: str, public_address: str) -> Endpoints:
        return cls(local_address, mapping.internal_port, public_address, mapping.external_port)

    def tokens(self) -> dict[str, str]:
        return {
            "p": str(self.local_port),
            "h": self.local_address,
            "P": str(self.public_port),
            "H": self.public_address,
            "%": "%",
        }

    def environment(self) -> dict[str, str]:
        """The same values as environment variables for the command."""
        variables = {
            "NATPMP_LOCAL_PORT": str(self.local_port),
            "NATPMP_LOCAL_ADDRESS": self.local_address,
            "NATPMP_PUBLIC_PORT": str(self.public_port),
            "NATPMP_PUBLIC_ADDRESS": self.public_address,
        }
        if self.public6 is not None:
            variables["NATPMP_PUBLIC_ADDRESS6"], port6 = self.public6
            variables["NATPMP_PUBLIC_PORT6"] = str(port6)
        return variables


def substitute(argument: str, endpoints: Endpoints) -> str:
    """Replace the tokens in one argument."""
    tokens = endpoints.tokens()
    out: list[str] = []
    i = 0
    while i < len(argument):
        char = argument[i]
        following = argument[i + 1] if i + 1 < len(argument) else ""
        if char == "%" and following in tokens:
            out.append(tokens[following])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)
