"""
The C{twistd natpmp} / C{twist natpmp} plugin: options and service.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from ._service import MappingService
from ._spec import MappingSpec, parse_gateway, parse_lifetime, parse_spec


class Options(usage.Options):
    """Command-line options of the natpmp plugin."""

    synopsis = "--map SPEC [--map SPEC ...] [--gateway ADDRESS[:PORT]] [--lifetime SECONDS]"
    longdesc = (
        "Keep port mappings open on the NAT-PMP gateway (RFC 6886): create them, renew them, "
        "re-create them after the router reboots, and delete them on exit. Examples: "
        "twist natpmp --map tcp:60010;  twistd -n natpmp -m tcp:8080:80 -m udp:5353 -g 198.51.100.1"
    )
    optParameters = [
        ["gateway", "g", None, "Gateway ADDRESS[:PORT] (default: the default route's gateway)."],
        ["lifetime", "l", "7200", "Lifetime to request, in seconds."],
        ["status-file", None, None, "Write the current mappings to this file as JSON."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        specs: list[MappingSpec] = []
        self["map"] = specs

    def opt_map(self, spec: str) -> None:
        """Keep a mapping: tcp:60010, tcp:60010:60010 (suggest an external port). Repeatable."""
        try:
            self["map"].append(parse_spec(spec))
        except ValueError as error:
            raise usage.UsageError(str(error)) from None

    opt_m = opt_map

    def postOptions(self) -> None:
        if not self["map"]:
            raise usage.UsageError("at least one --map is needed, for example --map tcp:60010")
        try:
            self["lifetime"] = parse_lifetime(self["lifetime"])
            if self["gateway"] is not None:
                self["gateway"] = parse_gateway(self["gateway"])
        except ValueError as error:
            raise usage.UsageError(str(error)) from None


def makeService(options: Any) -> MappingService:
    """A L{MappingService} keeping every C{--map}."""
    host, port = options["gateway"] or (None, 5351)
    service = MappingService(
        host, port, lifetime=options["lifetime"], status_file=options["status-file"]
    )
    for spec in options["map"]:
        # The service logs failures and keeps trying; nobody waits on the first result here.
        service.add_mapping(spec).addErrback(lambda _: None)
    return service
