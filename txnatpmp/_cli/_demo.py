"""
C{natpmp demo}: the whole story in a few seconds, against a FakeGateway on loopback.  It never
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
    Map, renew, survive a simulated reboot and an address change, clean up.  A stop signal ends
    it at any step (the mappings are still deleted from the double).
    """
    started = reactor.seconds()
    stop = stop or StopSignals(reactor)

    def say(text: str) -> None:
        write(f"[{reactor.seconds() - started:4.1f} s] {text}\n")

    gateway = FakeGateway(reactor, external_address="203.0.113.7")
    gateway_port = gateway.listen(reactor)
    port: int = gateway_port.getHost().port  # type: ignore[attr-defined]
    say(f"A NAT-PMP gateway double listens on 127.0.0.1:{port}; its external address is "
        "203.0.113.7. (No real router is contacted.)")
    service = MappingService("127.0.0.1", port, reactor, lifetime=4, announce_port=0,
                             announce_group=None, announce_interface="127.0.0.1",
                             rng=random.Random(6886))
    events = _Events(reactor)
    service.add_observer(events)
    try:
        mapped = events.next(EventKind.MAPPED)
        service.add_mapping("tcp:8080")
        service.startService()
        say("Asking for tcp 8080, lifetime 4 s ...")
        event = await stop.race(mapped)
        assert event.mapping is not None and service.announcement_port is not None
        gateway.announce_to.append(("127.0.0.1", service.announcement_port))
        say(f"tcp 8080 is reachable at {event.external_address}:{event.mapping.external_port} "
            f"for {event.mapping.lifetime} s")

        event = await stop.race(events.next(EventKind.RENEWED))
        say("Renewed at half its lifetime, as RFC 6886 asks; it will be renewed every 2 s.")
        await stop.race(deferLater(reactor, 1.5))  # a gateway up for a few seconds: a reboot shows clearly

        say("Simulating a router reboot: the gateway forgets its mappings, restarts its epoch "
            "and announces itself ...")
        lost = events.next(EventKind.STATE_LOST)
        back = events.next(EventKind.RECREATED, EventKind.PORT_CHANGED)
        gateway.reboot()
        await stop.race(lost)
        say(f"Noticed: the epoch went back. The gateway now holds {len(gateway.mappings)} "
            "mappings; re-creating after a random wait of up to 5 s ...")
        event = await stop.race(back)
        assert event.mapping is not None
        say(f"Re-created: tcp 8080 is reachable at {event.external_address}:"
            f"{event.mapping.external_port} again.")

        say("Simulating a new external address from the provider ...")
        changed = events.next(EventKind.ADDRESS_CHANGED)
        gateway.set_external_address("203.0.113.8")
        event = await stop.race(changed)
        say(f"Announcement heard: the external address is now {event.external_address}.")
    finally:
        say("Stopping: deleting every mapping ...")
        await stop.bounded(service.stopService(), STEP_TIMEOUT)
        await maybeDeferred(gateway_port.stopListening)
    left = len(gateway.mappings)
    say(f"Done. The gateway holds {left} mappings.")
    return 0 if left == 0 else 1
