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
from ._service.shutdown import STOP_BUDGET
from ._service.status import check_status_file
from ._spec import (
    MappingSpec,
    check_families,
    gateway_family,
    parse_gateway,
    parse_lifetime,
    parse_seconds,
    parse_spec,
)


class Options(usage.Options):
    """Command-line options of the natpmp plugin."""

    synopsis = ("--map SPEC [--map SPEC ...] [--gateway ADDRESS[:PORT]] [--lifetime SECONDS] "
                "[--method auto|pcp|natpmp|upnp] [--family 4|6|46] [--status-file PATH] "
                "[--stop-timeout SECONDS]")
    longdesc = (
        "Keep port mappings open on the gateway, through PCP (RFC 6887) where it speaks it, else "
        "NAT-PMP (RFC 6886), else UPnP-IGD: create them, renew them, re-create them after the "
        "router reboots, and delete them on exit. With --family 6 or 46, IPv6 pinholes in the "
        "router's firewall too (PCP). Examples: twist natpmp --map tcp:60010;  "
        "twistd -n natpmp -m tcp:8080:80 -m udp:5353 -g 198.51.100.1;  "
        "twist natpmp -m tcp:8080 --family 46"
    )
    optParameters = [
        ["lifetime", "l", "7200", "Lifetime to request, in seconds."],
        ["status-file", None, None, "Write the current mappings to this file as JSON."],
        ["method", None, "auto", "auto (PCP where the gateway speaks it, else NAT-PMP, else "
                                 "UPnP-IGD), pcp, natpmp or upnp."],
        ["family", None, "4", "4: IPv4 mappings; 6: IPv6 pinholes (PCP); 46: both."],
        ["stop-timeout", None, "10", "Seconds a stop may spend deleting the mappings."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        specs: list[MappingSpec] = []
        self["map"] = specs
        self["gateway"] = None
        self["gateway6"] = None

    def opt_gateway(self, text: str) -> None:
        """Gateway ADDRESS[:PORT] (default: the default route's gateway); with --family 6 or 46
        the IPv6 router (fe80::1%eth0) too, given again."""
        try:
            gateway = parse_gateway(text)
        except ValueError as error:
            raise usage.UsageError(str(error)) from None
        family = gateway_family(gateway.host)
        name = "gateway" if family == 4 else "gateway6"
        if self[name] is not None:
            raise usage.UsageError(f"--gateway given twice for IPv{family}: "
                                   f"{self[name].host} and {gateway.host}")
        self[name] = gateway

    opt_g = opt_gateway

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
            self["families"] = check_families(self["family"])
            self["stop-timeout"] = parse_seconds(self["stop-timeout"], "--stop-timeout")
            for name, family in (("gateway", 4), ("gateway6", 6)):
                if self[name] is not None and family not in self["families"]:
                    raise ValueError(f"--gateway {self[name].host} is IPv{family}, but "
                                     f"--family is {self['family']} (--family {family} or 46)")
            if 6 in self["families"] and "pcp" not in self["methods"]:
                raise ValueError(f"--family {self['family']} needs PCP: IPv6 pinholes are made "
                                 f"with PCP only, not --method {self['method']}")
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
                              methods=options.get("methods", "auto"),
                              families=options.get("families", (4,)),
                              gateway6=options.get("gateway6"),
                              stop_timeout=options.get("stop-timeout", STOP_BUDGET))
    for first in firsts:  # the service logs failures and keeps trying: nobody waits here
        first.addErrback(lambda _: None)
    top = MultiService()  # type: ignore[no-untyped-call]
    service.setServiceParent(top)  # type: ignore[no-untyped-call]
    StopOnHangup().setServiceParent(top)  # type: ignore[no-untyped-call]
    return top
