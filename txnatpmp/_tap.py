"""
The C{twistd natpmp} / C{twist natpmp} plugin: options and service.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.python import usage

from ._reactor import global_reactor
from ._hold import keeping
from ._mapper.shared import check_methods
from ._service.status import check_status_file
from ._spec import MappingSpec, parse_gateway, parse_lifetime, parse_spec


class Options(usage.Options):
    """Command-line options of the natpmp plugin."""

    synopsis = ("--map SPEC [--map SPEC ...] [--gateway ADDRESS[:PORT]] [--lifetime SECONDS] "
                "[--method auto|pcp|natpmp|upnp] [--status-file PATH]")
    longdesc = (
        "Keep port mappings open on the gateway, through PCP (RFC 6887) where it speaks it, else "
        "NAT-PMP (RFC 6886): create them, renew them, "
        "re-create them after the router reboots, and delete them on exit. Examples: "
        "twist natpmp --map tcp:60010;  twistd -n natpmp -m tcp:8080:80 -m udp:5353 -g 198.51.100.1"
    )
    optParameters = [
        ["gateway", "g", None, "Gateway ADDRESS[:PORT] (default: the default route's gateway)."],
        ["lifetime", "l", "7200", "Lifetime to request, in seconds."],
        ["status-file", None, None, "Write the current mappings to this file as JSON."],
        ["method", None, "auto", "auto (PCP where the gateway speaks it, else NAT-PMP), pcp or "
                                 "natpmp."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        specs: list[MappingSpec] = []
        self["map"] = specs

    def opt_map(self, spec: str) -> None:
        """Keep a mapping: tcp:60010, tcp:60010:60010 (suggest an external port). Repeatable."""
        try:
            wanted = parse_spec(spec)
        except ValueError as error:
            raise usage.UsageError(str(error)) from None
        if any(kept.key == wanted.key for kept in self["map"]):
            raise usage.UsageError(f"{wanted.protocol} {wanted.internal_port} is given twice "
                                   f"({spec!r})")
        self["map"].append(wanted)

    opt_m = opt_map

    def postOptions(self) -> None:
        if not self["map"]:
            raise usage.UsageError("at least one --map is needed, for example --map tcp:60010")
        try:
            self["lifetime"] = parse_lifetime(self["lifetime"])
            self["methods"] = check_methods(self["method"])
            if self["gateway"] is not None:
                self["gateway"] = parse_gateway(self["gateway"])
            if self["status-file"] is not None:
                check_status_file(self["status-file"])
        except ValueError as error:
            raise usage.UsageError(str(error)) from None


class StopOnHangup(Service):
    """
    SIGHUP (the terminal closed, an SSH session ended) stops the reactor like SIGTERM does, so
    that every mapping is deleted; C{twist} and C{twistd} then end with that signal.
    """

    def __init__(self, reactor: Any = None) -> None:
        self._reactor = reactor
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if hasattr(signal, "SIGHUP"):
            self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if hasattr(signal, "SIGHUP") and self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _hangup(self, signum: int, frame: object) -> None:
        reactor = self._reactor if self._reactor is not None else global_reactor()
        stop = getattr(reactor, "sigTerm", None)  # notes the signal for twist's exit
        if stop is not None:
            stop(signum, frame)
        else:
            reactor.callFromThread(reactor.stop)


def makeService(options: Any) -> MultiService:
    """A L{MappingService} keeping every C{--map}, and L{StopOnHangup}."""
    service, firsts = keeping(options["map"], options["gateway"], lifetime=options["lifetime"],
                              status_file=options["status-file"],
                              methods=options.get("methods", "auto"))
    for first in firsts:  # the service logs failures and keeps trying: nobody waits here
        first.addErrback(lambda _: None)
    top = MultiService()  # type: ignore[no-untyped-call]
    service.setServiceParent(top)  # type: ignore[no-untyped-call]
    StopOnHangup().setServiceParent(top)  # type: ignore[no-untyped-call]
    return top
