"""
C{natpmp demo}: the whole story in a few seconds, against FakeGateway doubles on loopback: one
speaking PCP, one speaking only NAT-PMP.  It never
touches the machine's real gateway and needs no root.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater

from .._events import EventKind, MappingEvent
from .._service import MappingService
from ..testing import FakeGateway
from ._output import method_name
from ._signals import StopSignals

#: How long any one step may take before the demo gives up.
STEP_TIMEOUT = 10.0


class _Events:
    """Deferreds for the next event of a kind."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._waiting: list[tuple[set[EventKind], Deferred[MappingEvent]]] = []

    def __call__(self, event: MappingEvent) -> None:
        for entry in list(self._waiting):
            kinds, d = entry
            if event.kind in kinds:
                self._waiting.remove(entry)
                d.callback(event)

    def next(self, *kinds: EventKind) -> Deferred[MappingEvent]:
        d: Deferred[MappingEvent] = Deferred()
        self._waiting.append((set(kinds), d))
        return d.addTimeout(STEP_TIMEOUT, self._reactor)


async def demo(reactor: Any, write: Callable[[str], object],
               stop: StopSignals | None = None) -> int:
    """
    Two rounds against gateway doubles on loopback, each with C{methods="auto"}: one speaking
    PCP (map, renew, survive a simulated reboot, clean up), one speaking only NAT-PMP (found
    after one probe; map, renew, follow an address change, clean up).  A stop signal ends it at
    any step (the mappings are still deleted from the double).
    """
    started = reactor.seconds()
    stop = stop or StopSignals(reactor)

    def say(text: str) -> None:
        write(f"[{reactor.seconds() - started:4.1f} s] {text}\n")

    left = await _round(reactor, say, stop, pcp=True)
    left += await _round(reactor, say, stop, pcp=False)
    say(f"Done. The gateways hold {left} mappings.")
    return 0 if left == 0 else 1


async def _round(reactor: Any, say: Callable[[str], None], stop: StopSignals, pcp: bool) -> int:
    """One gateway double, one mapping: the story; how many mappings the double still holds."""
    gateway = FakeGateway(reactor, external_address="203.0.113.7", pcp=pcp)
    gateway_port = gateway.listen(reactor)
    port: int = gateway_port.getHost().port  # type: ignore[attr-defined]
    speaks = "PCP and NAT-PMP" if pcp else "only NAT-PMP"
    say(f"A gateway double that speaks {speaks} listens on 127.0.0.1:{port}; its external "
        "address is 203.0.113.7. (No real router is contacted.)")
    service = MappingService("127.0.0.1", port, reactor, lifetime=4, announce_port=0,
                             announce_group=None, announce_interface="127.0.0.1",
                             rng=random.Random(6886))
    events = _Events(reactor)
    service.add_observer(events)
    try:
        mapped = events.next(EventKind.MAPPED)
        service.add_mapping("tcp:8080")
        service.startService()
        say("Asking for tcp 8080, lifetime 4 s, method auto: first one PCP ANNOUNCE ...")
        event = await stop.race(mapped)
        assert event.mapping is not None and service.announcement_port is not None
        gateway.announce_to.append(("127.0.0.1", service.announcement_port))
        if event.mapping.method == "pcp":
            say("The gateway answered the ANNOUNCE in PCP: discovery picked PCP.")
        else:
            say("The gateway answered the ANNOUNCE with NAT-PMP's 8-byte \"unsupported "
                "version\": discovery picked NAT-PMP (and will ask again in 30 minutes).")
        say(f"tcp 8080 is reachable at {event.external_address}:{event.mapping.external_port} "
            f"for {event.mapping.lifetime} s ({method_name(event.mapping.method)})")

        event = await stop.race(events.next(EventKind.RENEWED))
        if pcp:
            say("Renewed at a random point between 1/2 and 5/8 of its lifetime, as RFC 6887 "
                "asks, with the nonce that made it.")
            await stop.race(deferLater(reactor, 0.5))
            say("Simulating a router reboot: the gateway forgets its mappings, restarts its "
                "epoch and sends a PCP ANNOUNCE ...")
            lost = events.next(EventKind.STATE_LOST)
            back = events.next(EventKind.RECREATED, EventKind.PORT_CHANGED)
            gateway.reboot(announce=False)
            gateway.announce(pcp=True)
            await stop.race(lost)
            say(f"Noticed: the epoch went back. The gateway now holds {len(gateway.mappings)} "
                "mappings; re-creating with the same nonce ...")
            event = await stop.race(back)
            assert event.mapping is not None
            say(f"Re-created: tcp 8080 is reachable at {event.external_address}:"
                f"{event.mapping.external_port} again (PCP).")
        else:
            say("Renewed at half its lifetime, as RFC 6886 asks.")
            say("Simulating a new external address from the provider ...")
            changed = events.next(EventKind.ADDRESS_CHANGED)
            gateway.set_external_address("203.0.113.8")
            event = await stop.race(changed)
            say(f"Announcement heard: the external address is now {event.external_address}.")
    finally:
        say("Stopping: deleting the mapping with the method that made it ...")
        await stop.bounded(service.stopService(), STEP_TIMEOUT)
        await maybeDeferred(gateway_port.stopListening)
    return len(gateway.mappings)
