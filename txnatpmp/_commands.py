"""
What each C{natpmp} subcommand does, as coroutines on a running reactor.  Parsing and the
reactor's life are in L{txnatpmp._cli}.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from argparse import Namespace
from typing import Any, Callable

from attrs import asdict
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from ._client import NATPMPClient
from ._errors import NATPMPError
from ._events import EventKind, MappingEvent
from ._gateway import find_gateway
from ._results import Mapping
from ._schedule import RetransmitSchedule
from ._service import MappingService
from ._tokens import Endpoints, substitute


class Interrupts:
    """SIGINT and SIGTERM, turned into Deferreds on the reactor."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._waiting: list[Deferred[int]] = []

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._fire, signum)

    def _fire(self, signum: int) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:  # a timer may have fired it already
                d.callback(signum)

    def next(self) -> Deferred[int]:
        """A Deferred firing with the number of the next signal."""
        d: Deferred[int] = Deferred()
        self._waiting.append(d)
        return d


def mapping_fields(mapping: Mapping) -> dict[str, Any]:
    """A mapping as JSON-ready fields (its PCP nonce is a secret, never printed)."""
    return asdict(mapping, filter=lambda attribute, _: attribute.name != "nonce")


class Output:
    """Results to stdout, as lines of text or of JSON."""

    def __init__(self, as_json: bool, write: Callable[[str], object]) -> None:
        self.as_json = as_json
        self._write = write

    def say(self, text: str, **data: Any) -> None:
        self._write((json.dumps(data) if self.as_json else text) + "\n")


async def gateway_of(reactor: Any, args: Namespace) -> tuple[str, int]:
    """The gateway from C{-g}, or the default route's."""
    if args.gateway is not None:
        return args.gateway  # type: ignore[no-any-return]
    return (await find_gateway(reactor), 5351)


def schedule_of(args: Namespace) -> RetransmitSchedule:
    return RetransmitSchedule(attempts=args.attempts)


async def connect(reactor: Any, args: Namespace) -> NATPMPClient:
    host, port = await gateway_of(reactor, args)
    client = NATPMPClient(host, port, reactor, schedule=schedule_of(args))
    reactor.listenUDP(0, client)
    return client


async def address(reactor: Any, args: Namespace, out: Output, interrupts: Interrupts) -> int:
    client = await connect(reactor, args)
    public = await client.get_external_address()
    text = public.address + (f" (gateway up {public.epoch} s)" if args.verbose else "")
    out.say(text, address=public.address, epoch=public.epoch)
    return 0


async def map_once(reactor: Any, args: Namespace, out: Output, interrupts: Interrupts) -> int:
    client = await connect(reactor, args)
    public = (await client.get_external_address()).address
    for spec in args.specs:
        m = await client.map_port(spec.protocol, spec.internal_port, spec.external_port,
                                  args.lifetime)
        out.say(f"{m.protocol} {public}:{m.external_port} -> local port {m.internal_port} "
                f"for {m.lifetime} s", **{**mapping_fields(m), "external_address": public})
    return 0


async def unmap(reactor: Any, args: Namespace, out: Output, interrupts: Interrupts) -> int:
    client = await connect(reactor, args)
    if args.all is not None:
        await client.unmap_all(args.all)
        out.say(f"deleted every {args.all} mapping of this host", deleted="all",
                protocol=args.all)
        return 0
    for spec in args.specs:
        await client.unmap_port(spec.protocol, spec.internal_port)
        out.say(f"deleted {spec.protocol} {spec.internal_port}", deleted=spec.internal_port,
                protocol=spec.protocol)
    return 0


def _service(reactor: Any, args: Namespace, host: str, port: int,
             out: Output) -> MappingService:
    service = MappingService(host, port, reactor, lifetime=args.lifetime,
                             schedule=schedule_of(args))
    service.add_observer(lambda event: _tell(out, event))
    return service


def _tell(out: Output, event: MappingEvent) -> None:
    m, spec = event.mapping, event.spec
    where = f"{event.external_address or '?'}:{m.external_port}" if m else ""
    texts = {
        EventKind.MAPPED: f"{spec} -> {where} for {m.lifetime if m else 0} s",
        EventKind.RENEWED: f"renewed {spec} -> {where} for {m.lifetime if m else 0} s",
        EventKind.RECREATED: f"re-created {spec} -> {where} for {m.lifetime if m else 0} s",
        EventKind.PORT_CHANGED: f"{spec} moved to {where}",
        EventKind.EXPIRED: f"{spec}: its lifetime ran out before it could be renewed",
        EventKind.ADDRESS_CHANGED: f"external address is now {event.external_address}",
        EventKind.STATE_LOST: "the gateway lost its mappings (rebooted?): re-creating them",
        EventKind.FAILED: f"{spec}: {event.error}",
        EventKind.REMOVED: f"deleted {spec}",
    }
    data = {"event": event.kind.value, "spec": str(spec) if spec else None,
            "external_address": event.external_address,
            "mapping": mapping_fields(m) if m else None,
            "error": str(event.error) if event.error else None}
    out.say(texts[event.kind], **data)


async def hold(reactor: Any, args: Namespace, out: Output, interrupts: Interrupts) -> int:
    host, port = await gateway_of(reactor, args)
    service = _service(reactor, args, host, port, out)
    for spec in args.specs:
        service.add_mapping(spec).addErrback(lambda _: None)  # reported through events
    service.startService()
    stop: Deferred[Any] = interrupts.next()
    timer = None
    if args.duration is not None:
        timer = reactor.callLater(args.duration, stop.callback, None)
    await stop
    if timer is not None and timer.active():
        timer.cancel()
    await service.stopService()
    return 0


class _Child(ProcessProtocol):
    """The command of C{natpmp run}; C{ended} fires with its exit status."""

    def __init__(self) -> None:
        self.ended: Deferred[int] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        if isinstance(reason.value, ProcessDone):
            self.ended.callback(0)
        elif isinstance(reason.value, ProcessTerminated):
            status = reason.value.exitCode
            if status is None:
                status = 128 + (reason.value.signal or 0)
            self.ended.callback(status)
        else:  # pragma: no cover - Twisted reports only those two
            self.ended.callback(1)


def local_address_towards(host: str) -> str:
    """The address this host uses to reach C{host} (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))
        return str(probe.getsockname()[0])


async def run(reactor: Any, args: Namespace, out: Output, interrupts: Interrupts) -> int:
    host, port = await gateway_of(reactor, args)
    service = _service(reactor, args, host, port, out)
    firsts = [service.add_mapping(spec) for spec in args.specs]
    service.startService()
    try:
        mappings = [await first for first in firsts]
    except BaseException:
        await service.stopService()
        raise
    endpoints = Endpoints.of(mappings[0], local_address_towards(host),
                             service.external_address or "0.0.0.0")
    argv = [substitute(a, endpoints) for a in args.program]
    if args.shell:
        argv = ["/bin/sh", "-c", " ".join(argv)]
    executable = shutil.which(argv[0])
    if executable is None:
        await service.stopService()
        raise NATPMPError(f"command not found: {argv[0]}")
    child = _Child()
    process = reactor.spawnProcess(child, executable, argv, env={**os.environ,
                                   **endpoints.environment()}, childFDs={0: 0, 1: 1, 2: 2})

    def forward(signum: int) -> None:
        if not child.ended.called:
            process.signalProcess(signum)
            interrupts.next().addCallback(forward)

    interrupts.next().addCallback(forward)
    status = await child.ended
    await service.stopService()
    return status


COMMANDS: dict[str, Callable[..., Any]] = {
    "address": address,
    "map": map_once,
    "unmap": unmap,
    "hold": hold,
    "run": run,
}
