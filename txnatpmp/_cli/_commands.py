"""
What each C{natpmp} subcommand does, as coroutines on a running reactor.  Parsing is in
L{txnatpmp._cli._parsing}, the reactor's life in L{txnatpmp._cli}.

Every wait goes through L{StopSignals.race}, so a stop signal ends any stage at once; what was
created is deleted within L{CLEANUP_BUDGET} seconds, and L{Interrupted} reaches the caller.
"""

from __future__ import annotations

import os
from argparse import Namespace
from typing import Any, Callable, Coroutine

from attrs import evolve, frozen
from twisted.internet.defer import Deferred, gatherResults

from .._client import NATPMPClient
from .._events import MappingEvent
from .._gateway import find_gateway
from .._results import Mapping
from .._schedule import RetransmitSchedule
from .._hold import keeping
from .._service import MappingService
from .._spec import Gateway, MappingSpec
from ._child import Child, free_port, local_address_towards, resolve, shell_command
from ._output import EventReport, Output, mapping_fields, mapping_line
from ._signals import Interrupted, StopSignals
from ._tokens import Endpoints, substitute


@frozen
class Context:
    """What every subcommand gets: the reactor, the parsed arguments, output and signals."""

    reactor: Any
    args: Namespace
    out: Output
    stop: StopSignals


async def gateway_of(ctx: Context) -> Gateway:
    """The gateway from C{-g}, or the default route's."""
    if ctx.args.gateway is not None:
        return Gateway(*ctx.args.gateway)
    return Gateway(await ctx.stop.race(find_gateway(ctx.reactor)))


def schedule_of(args: Namespace) -> RetransmitSchedule:
    return RetransmitSchedule(attempts=args.attempts)


async def connect(ctx: Context) -> NATPMPClient:
    host, port = await gateway_of(ctx)
    client = NATPMPClient(host, port, ctx.reactor, schedule=schedule_of(ctx.args))
    ctx.reactor.listenUDP(0, client)
    return client


def with_free_ports(specs: list[MappingSpec]) -> list[MappingSpec]:
    """Specs whose local port is 0 get a free local port."""
    return [evolve(s, internal_port=free_port(s.protocol)) if s.internal_port == 0 else s
            for s in specs]


async def address(ctx: Context) -> int:
    client = await connect(ctx)
    public = await ctx.stop.race(client.get_external_address())
    text = public.address + (f" (gateway up {public.epoch} s)" if ctx.args.verbose else "")
    ctx.out.say(text, address=public.address, epoch=public.epoch)
    return 0


async def map_once(ctx: Context) -> int:
    """
    Create each mapping and print it.  A stop deletes every mapping asked for so far (the one in
    flight too: the gateway may have made it without the answer arriving).
    """
    client = await connect(ctx)
    asked: list[MappingSpec] = []
    try:
        public = (await ctx.stop.race(client.get_external_address())).address
        for spec in with_free_ports(ctx.args.specs):
            asked.append(spec)
            m = await ctx.stop.race(client.map_port(spec.protocol, spec.internal_port,
                                                    spec.external_port, ctx.args.lifetime))
            ctx.out.say(mapping_line(m, public),
                        **{**mapping_fields(m), "external_address": public})
    except Interrupted:
        deletes = [client.unmap_port(s.protocol, s.internal_port) for s in asked]
        if await ctx.stop.bounded(gatherResults(deletes, consumeErrors=True)):
            for s in asked:
                ctx.out.say(f"deleted {s.protocol}:{s.internal_port}",
                            deleted=s.internal_port, protocol=s.protocol)
        raise
    return 0


async def unmap(ctx: Context) -> int:
    client = await connect(ctx)
    if ctx.args.all is not None:
        await ctx.stop.race(client.unmap_all(ctx.args.all))
        ctx.out.say(f"deleted every {ctx.args.all} mapping of this host", deleted="all",
                    protocol=ctx.args.all)
        return 0
    for spec in ctx.args.specs:
        await ctx.stop.race(client.unmap_port(spec.protocol, spec.internal_port))
        ctx.out.say(f"deleted {spec.protocol}:{spec.internal_port}", deleted=spec.internal_port,
                    protocol=spec.protocol)
    return 0


# Held mappings (hold, run).  The lead swaps these two functions for the shared helper.

def start_keeping(ctx: Context, gateway: Gateway, specs: list[MappingSpec],
                  observer: Callable[[MappingEvent], object],
                  ) -> tuple[MappingService, list[Deferred[Mapping]]]:
    """A started L{MappingService} keeping C{specs}, and each spec's first result."""
    service, firsts = keeping(specs, gateway, ctx.reactor, observer=observer,
                              lifetime=ctx.args.lifetime, schedule=schedule_of(ctx.args))
    service.startService()
    return service, firsts


async def stop_keeping(ctx: Context, service: MappingService) -> None:
    """Stop C{service}, deleting its mappings, within the clean-up budget."""
    await ctx.stop.bounded(service.stopService())


async def hold(ctx: Context) -> int:
    gateway = await gateway_of(ctx)
    service, firsts = start_keeping(ctx, gateway, with_free_ports(ctx.args.specs),
                                    EventReport(ctx.out))
    for first in firsts:
        first.addErrback(lambda _: None)  # failures are reported through events
    until: Deferred[Any] = Deferred()
    timer = None
    if ctx.args.duration is not None:
        timer = ctx.reactor.callLater(ctx.args.duration, until.callback, None)
    try:
        await ctx.stop.race(until)
    finally:
        if timer is not None and timer.active():
            timer.cancel()
        await stop_keeping(ctx, service)
    return 0


async def run(ctx: Context) -> int:
    """Map, run the command while the mappings are kept, delete them whatever happens."""
    args = ctx.args
    program = shell_command(args.program) if args.shell else list(args.program)
    executable = resolve(program[0])  # before anything is sent: 127 or 126 as shells
    gateway = await gateway_of(ctx)
    service, firsts = start_keeping(ctx, gateway, with_free_ports(args.specs),
                                    EventReport(ctx.out, first_failures_said_elsewhere=True))
    try:
        mappings = [await ctx.stop.race(first) for first in firsts]
        if ctx.stop.asked:  # a signal the reactor has not handled yet: start nothing
            raise Interrupted(ctx.stop.exit_status - 128)  # type: ignore[operator]
        endpoints = Endpoints.of(mappings[0], local_address_towards(gateway.host),
                                 service.external_address or "0.0.0.0")
        argv = [substitute(a, endpoints) for a in program]
        child = Child(ctx.reactor, args.grace)
        child.start(executable, argv, {**os.environ, **endpoints.environment()})
        ctx.stop.every(child.stop)
        status = await child.ended
    finally:
        for first in firsts:
            first.addErrback(lambda _: None)
        await stop_keeping(ctx, service)
    return status


COMMANDS: dict[str, Callable[[Context], Coroutine[Any, Any, int]]] = {
    "address": address,
    "map": map_once,
    "unmap": unmap,
    "hold": hold,
    "run": run,
}
