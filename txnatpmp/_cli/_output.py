"""
What the command prints: one line format for a mapping, each service event said once, and
streams that survive a closed or broken stdout (C{| head -1}, C{> /dev/full}, C{>&-}).
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any, Callable

from attrs import asdict

from .._events import EventKind, MappingEvent
from .._results import Mapping
from .._spec import MappingSpec, address_port


def ensure_standard_fds() -> None:
    """
    Open C{/dev/null} on any of fds 0, 1, 2 that is closed (C{natpmp map ... >&-}), so that no
    socket the reactor opens later takes its number and receives the command's output.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


class Stream:
    """
    Text to a file descriptor, written at once.  After the first failed write (the reader went
    away, the disk is full) it writes nothing more; C{on_broken} hears of it once.
    """

    def __init__(self, fd: int, on_broken: Callable[[OSError], object] | None = None) -> None:
        self.fd = fd
        self.broken: OSError | None = None
        self._on_broken = on_broken

    def write(self, text: str) -> None:
        if self.broken is not None:
            return
        data = text.encode("utf-8", "replace")
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as error:
            self.broken = error
            if self._on_broken is not None:
                self._on_broken(error)

    def silence(self) -> None:
        """Point a broken descriptor at C{/dev/null}, so that nothing at exit writes to it."""
        if self.broken is not None:
            ensure_standard_fds()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.fd)
            os.close(null)


def quiet_about(error: OSError) -> bool:
    """A reader that went away (C{| head -1}) is normal; a full disk deserves a word."""
    return error.errno in (errno.EPIPE, errno.ECONNRESET)


def mapping_fields(mapping: Mapping) -> dict[str, Any]:
    """A mapping as JSON-ready fields (its PCP nonce is a secret, never printed)."""
    return asdict(mapping, filter=lambda attribute, _: attribute.name != "nonce")


#: How each method is named to a person.
METHOD_NAMES = {"natpmp": "NAT-PMP", "pcp": "PCP", "upnp": "UPnP"}


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def mapping_line(mapping: Mapping, address: str | None) -> str:
    """The one way a mapping is written: C{tcp:8080 -> 203.0.113.7:8080 for 7200 s (PCP)}, an
    IPv6 pinhole C{tcp:8080 -> [2001:db8::10]:8080 for 7200 s (PCP)}."""
    return (f"{mapping.protocol}:{mapping.internal_port} -> "
            f"{address_port(address, mapping.external_port)} for {mapping.lifetime} s "
            f"({method_name(mapping.method)})")


def ipv6_note(family: int) -> str:
    """C{", IPv6"} after a method's name, for what an IPv6 router did."""
    return ", IPv6" if family == 6 else ""


def spec_name(spec: MappingSpec | None) -> str:
    return f"{spec.protocol}:{spec.internal_port}" if spec is not None else "?"


class Output:
    """Results, as lines of text or of JSON."""

    def __init__(self, as_json: bool, write: Callable[[str], object]) -> None:
        self.as_json = as_json
        self._write = write

    def say(self, text: str, **data: Any) -> None:
        self._write((json.dumps(data) if self.as_json else text) + "\n")


class EventReport:
    """
    Says each service event once, in the mapping line format.  A mapping made again after the
    gateway lost its state is "re-created", whether the service reports it as such or as a
    renewal.
    """

    def __init__(self, out: Output, first_failures_said_elsewhere: bool = False) -> None:
        """
        @param first_failures_said_elsewhere: A failure before a spec was ever mapped ends the
            command, which says the error itself (C{natpmp run}): not said here too.
        """
        self._out = out
        self._quiet_first_failures = first_failures_said_elsewhere
        self._held: set[tuple[int, tuple[str, int]]] = set()  # (family, spec key)
        self._lost: set[tuple[int, tuple[str, int]]] = set()

    def __call__(self, event: MappingEvent) -> None:
        kind, m, spec = event.kind, event.mapping, event.spec
        key = (event.family, spec.key) if spec is not None else None
        shown = kind.value
        six = event.family == 6
        if kind is EventKind.FAILED and self._quiet_first_failures and key not in self._held:
            return
        if kind is EventKind.STATE_LOST:
            self._lost = {held for held in self._held if held[0] == event.family}
        elif key is not None and kind in (EventKind.MAPPED, EventKind.RENEWED,
                                          EventKind.RECREATED, EventKind.PORT_CHANGED):
            if key in self._lost and kind is not EventKind.PORT_CHANGED:
                shown = EventKind.RECREATED.value
            self._lost.discard(key)
            self._held.add(key)
        elif key is not None and kind is EventKind.REMOVED:
            self._held.discard(key)
            self._lost.discard(key)
        line = mapping_line(m, m.external_address or event.external_address) if m else ""
        previous = event.previous
        name = spec_name(spec) + (" (IPv6)" if six else "")
        texts = {
            "mapped": line,
            "renewed": f"renewed {line}",
            "re-created": f"re-created {line}",
            "port changed": f"moved {line}",
            "expired": f"expired {name}"
                       + (" (was -> " + address_port(
                           previous.external_address or event.external_address,
                           previous.external_port) + ")" if previous is not None else "")
                       + ": re-creating it",
            "address changed": (f"this host's IPv6 address is now {event.external_address}"
                                if six else f"external address is now {event.external_address}"),
            "gateway lost state": ("the IPv6 router lost its pinholes (rebooted?): re-opening them"
                                   if six else
                                   "the gateway lost its mappings (rebooted?): re-creating them"),
            "mapping failed": f"{name}: {event.error}",
            "removed": (f"let go of {spec_name(spec)}"
                        if m is not None and m.lifetime > 0 else f"deleted {spec_name(spec)}")
                       + (f" ({method_name(previous.method)}{ipv6_note(event.family)})"
                          if previous is not None else (" (IPv6)" if six else ""))
                       + (f": the gateway keeps it {m.lifetime} s more"
                          if m is not None and m.lifetime > 0 else ""),
        }
        data = {"event": shown, "family": event.family, "spec": str(spec) if spec else None,
                "external_address": event.external_address,
                "mapping": mapping_fields(m) if m else None,
                "error": str(event.error) if event.error else None}
        self._out.say(texts.get(shown, f"{shown} {spec_name(spec)}"), **data)
