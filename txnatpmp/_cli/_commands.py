"""
What each C{natpmp} subcommand does, as coroutines on a running reactor.  Parsing is in
L{txnatpmp._cli._parsing}, the reactor's life in L{txnatpmp._cli}.

Every wait goes through L{StopSignals.race}, so a stop signal ends any stage at once; what was
created is deleted within L{CLEANUP_BUDGET} seconds, and L{Interrupted} reaches the caller.
"""

from __future__ import annotations

import os
import time
from argparse import Namespace
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator, Callable, Coroutine

from attrs import evolve, frozen
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from .._client import NATPMPClient
from .._errors import NATPMPError, ResultError
from .._events import MappingEvent
from .._gateway import find_gateway
from .._hold import keeping
from .._mapper.natpmp import NATPMPMapper
from .._mapper.pcp import PCPMapper
from .._mapper.upnp import UPnPMapper
from .._mapper.shared import Mapper, acquire_mapper, check_methods, release_mapper
from .._pcp.schedule import PCPSchedule
from .._results import ExternalAddress, Mapping
from .._schedule import RetransmitSchedule
from .._service import MappingService
from .._service.service import find_router6
from .._source import global_address_toward
from .._pcp.client import PCPClient
from .._spec import Gateway, MappingSpec, check_gateway6, gateway_family
from ._child import Child, free_port, local_address_towards, resolve, shell_command
from ._nonces import NonceStore, StoredMapping
from ._output import EventReport, Output, ipv6_note, mapping_fields, mapping_line, method_name
from ._signals import Interrupted, StopSignals
from ._tokens import Endpoints, substitute

log = Logger(namespace="txnatpmp._cli")


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


async def router_of(ctx: Context) -> Gateway:
    """
    The IPv6 router from C{-g}, or the default IPv6 route's (with its interface), once this
    host is known to have a global address to open pinholes for (P08).

    @raise NoGlobalAddress: before anything is sent, when it has none.
    """
    if getattr(ctx.args, "gateway6", None) is not None:
        router = Gateway(*ctx.args.gateway6)
    else:
        router = check_gateway6(await ctx.stop.race(find_router6(ctx.reactor)))
    PCPClient(router.host, router.port, ctx.reactor).bind_address()
    return router


async def gateways_of(ctx: Context) -> dict[int, Gateway]:
    """Each C{--family}'s gateway: the IPv4 gateway, the IPv6 router."""
    return {family: await (gateway_of(ctx) if family == 4 else router_of(ctx))
            for family in ctx.args.family}


def methods_for(args: Namespace, family: int) -> tuple[str, ...]:
    """The methods to use on C{family}'s gateway: PCP only over IPv6 (P48)."""
    return methods_of(args) if family == 4 else ("pcp",)


def schedule_of(args: Namespace) -> RetransmitSchedule:
    return RetransmitSchedule(attempts=args.attempts)


def methods_of(args: Namespace) -> tuple[str, ...]:
    return check_methods(args.method)


def pcp_schedule(args: Namespace) -> PCPSchedule:
    """PCP's timer (RFC 6887), giving up when C{--attempts} NAT-PMP transmissions would."""
    return PCPSchedule(max_duration=schedule_of(args).total)


@asynccontextmanager
async def mapper_for(ctx: Context, gateway: Gateway,
                     methods: tuple[str, ...]) -> AsyncIterator[Mapper]:
    """The process's mapper for C{gateway} (discovering its protocol), released after."""
    mapper = await ctx.stop.race(acquire_mapper(ctx.reactor, gateway, methods,
                                                schedule_of(ctx.args)))
    try:
        yield mapper
    finally:
        release_mapper(ctx.reactor, mapper)


def with_free_ports(specs: list[MappingSpec]) -> list[MappingSpec]:
    """Specs whose local port is 0 get a free local port."""
    return [evolve(s, internal_port=free_port(s.protocol)) if s.internal_port == 0 else s
            for s in specs]


class CannotDelete(NATPMPError):
    """Some mappings could not be deleted by this command (each reason on its own line)."""


# address (P31)

#: The NAT-PMP address request tried first on a PCP gateway: 0.25 s then 0.5 s, given up
#: after 0.75 s (miniupnpd answers it; a PCP-only server does not).
NATPMP_ADDRESS_SCHEDULE = RetransmitSchedule(attempts=2)
#: The lifetime asked for the short MAP that reads the address (a server may grant more).
ADDRESS_MAP_LIFETIME = 60


async def address(ctx: Context) -> int:
    gateways = await gateways_of(ctx)  # each family's, before anything is asked
    for family, gateway in gateways.items():
        await (address4(ctx, gateway) if family == 4 else address6(ctx, gateway))
    return 0


async def address6(ctx: Context, router: Gateway) -> None:
    """
    IPv6 has no NAT: the public address is this host's own global address toward the router
    (the one its pinholes are for, P08).  Nothing is sent.
    """
    own = global_address_toward(PCPClient(router.host, router.port, ctx.reactor).destination)
    text = own
    if ctx.args.verbose:
        text += f" (IPv6: this host's own global address toward {router.host}; no NAT)"
    ctx.out.say(text, address=own, family=6, method=None)


async def address4(ctx: Context, gateway: Gateway) -> None:
    async with mapper_for(ctx, gateway, methods_of(ctx.args)) as mapper:
        if mapper.method == "natpmp":
            public, method = await ctx.stop.race(mapper.external_address()), "natpmp"
        else:
            public, method = await pcp_address(ctx, gateway, mapper)
    text = public.address
    if ctx.args.verbose:
        text += f" (gateway up {public.epoch} s, asked through {method_name(method)})"
    ctx.out.say(text, address=public.address, epoch=public.epoch, method=method, family=4)


async def pcp_address(ctx: Context, gateway: Gateway,
                      mapper: Mapper) -> tuple[ExternalAddress, str]:
    """
    On a PCP gateway: NAT-PMP's address request, once and briefly, when C{auto} allows it
    (miniupnpd answers it: no mapping made); otherwise a short MAP of a UDP port this process
    holds open, read and deleted at once (P31).
    """
    if "natpmp" in methods_of(ctx.args):
        client = NATPMPClient(gateway.host, gateway.port, ctx.reactor,
                              schedule=NATPMP_ADDRESS_SCHEDULE)
        port = ctx.reactor.listenUDP(0, client)
        try:
            return await ctx.stop.race(client.get_external_address()), "natpmp"
        except NATPMPError as error:
            log.info("No NAT-PMP address answer ({error}): asking with a short PCP mapping",
                     error=error)
        finally:
            await maybeDeferred(port.stopListening)
    return await short_map_address(ctx, mapper), "pcp"


async def short_map_address(ctx: Context, mapper: Mapper) -> ExternalAddress:
    """Map a UDP port this process owns for a moment; the answer carries the address."""
    owned = ctx.reactor.listenUDP(0, DatagramProtocol())  # the wildcard address, for now
    spec = MappingSpec("udp", owned.getHost().port)
    try:
        mapping = await ctx.stop.race(mapper.map(spec, ADDRESS_MAP_LIFETIME,
                                                 within=schedule_of(ctx.args).total))
        return ExternalAddress(mapping.external_address or "0.0.0.0", mapping.epoch)
    finally:
        # Also when no answer came: the gateway may have made it.
        await ctx.stop.bounded(mapper.delete(spec).addErrback(lambda _: None))
        await maybeDeferred(owned.stopListening)


# map

async def map_once(ctx: Context) -> int:
    """
    Create each mapping (on each C{--family}: an IPv4 mapping, an IPv6 pinhole), print it and
    keep what a later C{natpmp unmap} needs (the PCP nonce).  A stop deletes every mapping asked
    for so far (the one in flight too: the gateway may have made it without the answer
    arriving).
    """
    gateways = await gateways_of(ctx)
    specs = with_free_ports(ctx.args.specs)  # one local port, whichever the family
    store = NonceStore()
    async with AsyncExitStack() as mappers:
        lanes = [(gateway, await mappers.enter_async_context(
                      mapper_for(ctx, gateway, methods_for(ctx.args, family))))
                 for family, gateway in gateways.items()]
        asked: list[tuple[Gateway, Mapper, MappingSpec]] = []
        made: dict[tuple[Gateway, tuple[str, int]], Mapping] = {}
        try:
            for gateway, mapper in lanes:
                public: str | None = None
                if not mapper.reports_address:
                    public = (await ctx.stop.race(mapper.external_address())).address
                for spec in specs:
                    asked.append((gateway, mapper, spec))
                    within = schedule_of(ctx.args).total if mapper.method == "pcp" else None
                    before = made_before(store, gateway, mapper, spec)
                    m = await ctx.stop.race(mapper.map(spec, ctx.args.lifetime,
                                                       previous=before, within=within))
                    made[gateway, spec.key] = m
                    keep(store, gateway, m)
                    shown = m.external_address or public
                    ctx.out.say(mapping_line(m, shown),
                                **{**mapping_fields(m), "external_address": shown,
                                   "family": m.family})
        except Interrupted:
            # Each delete said (and forgotten) as it is confirmed: one family's may be, while
            # the other's gateway does not answer within the clean-up budget.
            deletes = [mapper.delete(s, made.get((gateway, s.key))).addCallback(
                           deleted_after_stop, ctx, store, gateway, mapper, s)
                       for gateway, mapper, s in asked]
            await ctx.stop.bounded(gatherResults(deletes, consumeErrors=True))
            raise
    return 0


def deleted_after_stop(left: object, ctx: Context, store: NonceStore, gateway: Gateway,
                       mapper: Mapper, spec: MappingSpec) -> None:
    family = gateway_family(gateway.host)
    name = f"{spec.protocol}:{spec.internal_port} ({method_name(mapper.method)}" \
           f"{ipv6_note(family)})"
    if isinstance(left, Mapping) and left.lifetime > 0:  # a pinhole only shortened
        keep(store, gateway, left)
        ctx.out.say(f"{name}: the gateway keeps it {left.lifetime} s more",
                    kept=spec.internal_port, protocol=spec.protocol, lifetime=left.lifetime,
                    method=mapper.method, family=family)
        return
    forget(store, gateway, spec)
    ctx.out.say(f"deleted {name}", deleted=spec.internal_port, protocol=spec.protocol,
                method=mapper.method, family=family)


def made_before(store: NonceStore, gateway: Gateway, mapper: Mapper,
                spec: MappingSpec) -> Mapping | None:
    """A live PCP mapping an earlier C{natpmp map} made for C{spec}: mapping it again is then
    a renewal with its nonce (P22), so that its nonce stays the one that deletes it."""
    stored = store.get(gateway, spec.protocol, spec.internal_port)
    if stored is None or stored.method != "pcp" or mapper.method != "pcp" or not stored.nonce:
        return None
    if spec.external_port and spec.external_port != stored.external_port:
        return None  # another external port asked for: a new mapping
    return stored.mapping()


def keep(store: NonceStore, gateway: Gateway, mapping: Mapping) -> None:
    try:
        store.remember(gateway, mapping)
    except OSError as error:
        extra = (": natpmp unmap will not be able to delete it (PCP needs its nonce); it "
                 f"expires in {mapping.lifetime} s" if mapping.method == "pcp" else "")
        log.warn("Cannot keep {spec} in {path} ({error}){extra}",
                 spec=f"{mapping.protocol}:{mapping.internal_port}", path=str(store.path),
                 error=error.strerror, extra=extra)


def forget(store: NonceStore, gateway: Gateway, spec: MappingSpec) -> None:
    try:
        store.forget(gateway, spec.protocol, spec.internal_port)
    except OSError as error:
        log.warn("Cannot update {path} ({error})", path=str(store.path), error=error.strerror)


# unmap

async def unmap(ctx: Context) -> int:
    """
    Delete each mapping (on each C{--family}) with the method (and for PCP the nonce) that
    made it, as kept by C{natpmp map}; a mapping nothing is kept for, with the gateway's
    method: NAT-PMP deletes it, PCP cannot (it refuses deletes without the nonce), which is
    said, and exit 1.
    """
    store = NonceStore()
    problems: list[str] = []
    for family, gateway in (await gateways_of(ctx)).items():
        methods = methods_for(ctx.args, family)
        if ctx.args.all is not None:
            try:
                await unmap_all(ctx, gateway, store, methods)
            except CannotDelete as error:
                problems.append(str(error))
            continue
        for spec in ctx.args.specs:
            try:
                problem = await unmap_one(ctx, gateway, store, methods, spec)
            except ResultError as error:  # a refusal: said, and the other specs still deleted
                problem = (f"{spec.protocol}:{spec.internal_port}"
                           f"{' (IPv6)' if family == 6 else ''}: {error}")
            if problem is not None:
                problems.append(problem)
    if problems:
        raise CannotDelete("\nnatpmp: ".join(problems))
    return 0


async def unmap_one(ctx: Context, gateway: Gateway, store: NonceStore,
                    methods: tuple[str, ...], spec: MappingSpec) -> str | None:
    """Delete one mapping; what went wrong, if anything."""
    name = f"{spec.protocol}:{spec.internal_port}"
    stored = store.get(gateway, spec.protocol, spec.internal_port)
    if stored is not None and stored.method not in methods:
        made_by = method_name(stored.method)
        return (f"{name} was made through {made_by} by natpmp map ({expiry(stored)}): "
                f"delete it with --method {stored.method} or auto"
                + (" (a NAT-PMP delete of a PCP mapping answers success and deletes nothing)"
                   if stored.method == "pcp" else ""))
    async with mapper_for(ctx, gateway,
                          (stored.method,) if stored is not None else methods) as mapper:
        if isinstance(mapper, NATPMPMapper):
            await ctx.stop.race(mapper.client.unmap_port(spec.protocol, spec.internal_port))
        elif isinstance(mapper, UPnPMapper):
            if stored is None:
                return (f"{name}: natpmp map kept no record of it here, so its external port "
                        "is not known (UPnP-IGD deletes by external port)")
            await ctx.stop.race(mapper.delete(spec, stored.mapping()))
        elif stored is None or stored.nonce is None:
            return (f"{name}: no PCP nonce is kept for it here, so this is not a mapping "
                    "natpmp map made as this user on this host (or it has expired): a PCP "
                    "mapping can only be deleted by the program that made it (PCP refuses "
                    "deletes without its nonce); it lasts until its lifetime runs out")
        else:
            # Through the mapper: a renewed IPv6 pinhole miniupnpd refuses to delete is
            # shortened instead.
            assert isinstance(mapper, PCPMapper)
            left = await ctx.stop.race(mapper.delete(spec, stored.mapping(),
                                                     schedule=pcp_schedule(ctx.args)))
            if isinstance(left, Mapping) and left.lifetime > 0:  # a busy mapping (RFC 6887
                # section 15) or a shortened pinhole: it lasts a while yet
                keep(store, gateway, evolve(left, nonce=stored.nonce))
                ctx.out.say(f"{name}: the gateway keeps it {left.lifetime} s more",
                            kept=spec.internal_port, protocol=spec.protocol,
                            lifetime=left.lifetime, method="pcp",
                            family=gateway_family(gateway.host))
                return None
    forget(store, gateway, spec)
    ctx.out.say(f"deleted {name} ({method_name(mapper.method)}"
                f"{ipv6_note(gateway_family(gateway.host))})",
                deleted=spec.internal_port, protocol=spec.protocol, method=mapper.method,
                family=gateway_family(gateway.host))
    return None


def expiry(stored: StoredMapping) -> str:
    left = max(0, int(stored.expires - time.time()))
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stored.expires))
    return f"it expires at {when}, in {left} s"


async def unmap_all(ctx: Context, gateway: Gateway, store: NonceStore,
                    methods: tuple[str, ...]) -> int:
    """
    NAT-PMP: one request deletes every mapping of a protocol this host made.  PCP has no such
    request: every mapping C{natpmp map} kept is deleted with its own method and nonce.
    """
    protocol = ctx.args.all
    async with mapper_for(ctx, gateway, methods) as mapper:
        if isinstance(mapper, NATPMPMapper):
            await ctx.stop.race(mapper.client.unmap_all(protocol))
            for entry in store.entries(gateway, protocol):
                forget(store, gateway, MappingSpec(protocol, entry.internal_port))
            ctx.out.say(f"deleted every {protocol} mapping of this host (NAT-PMP)",
                        deleted="all", protocol=protocol, method="natpmp")
            return 0
    problems = []
    for entry in store.entries(gateway, protocol):
        if entry.method in methods:
            problem = await unmap_one(ctx, gateway, store, methods,
                                      MappingSpec(protocol, entry.internal_port))
            if problem is not None:
                problems.append(problem)
    ctx.out.say(f"deleted every {protocol} mapping natpmp map made here (PCP cannot delete "
                "the ones other programs made)", deleted="all", protocol=protocol,
                method=mapper.method)
    if problems:
        raise CannotDelete("\nnatpmp: ".join(problems))
    return 0


# Held mappings (hold, run)

def start_keeping(ctx: Context, gateways: dict[int, Gateway], specs: list[MappingSpec],
                  observer: Callable[[MappingEvent], object],
                  ) -> tuple[MappingService, list[Deferred[Mapping]]]:
    """A started L{MappingService} keeping C{specs} on each family's gateway, and each spec's
    first result (once every family has its mapping)."""
    service, firsts = keeping(specs, gateways.get(4), ctx.reactor, observer=observer,
                              lifetime=ctx.args.lifetime, schedule=schedule_of(ctx.args),
                              methods=methods_of(ctx.args), families=ctx.args.family,
                              gateway6=gateways.get(6))
    service.startService()
    return service, firsts


async def stop_keeping(ctx: Context, service: MappingService) -> None:
    """Stop C{service}, deleting its mappings, within the clean-up budget."""
    await ctx.stop.bounded(service.stopService())


async def hold(ctx: Context) -> int:
    gateways = await gateways_of(ctx)
    service, firsts = start_keeping(ctx, gateways, with_free_ports(ctx.args.specs),
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
    gateways = await gateways_of(ctx)
    specs = with_free_ports(args.specs)
    service, firsts = start_keeping(ctx, gateways, specs,
                                    EventReport(ctx.out, first_failures_said_elsewhere=True))
    try:
        mappings = [await ctx.stop.race(first) for first in firsts]
        if ctx.stop.asked:  # a signal the reactor has not handled yet: start nothing
            raise Interrupted(ctx.stop.exit_status - 128)  # type: ignore[operator]
        endpoints = endpoints_of(service, mappings[0], gateways)
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


def endpoints_of(service: MappingService, mapping: Mapping,
                 gateways: dict[int, Gateway]) -> Endpoints:
    """What C{%p %h %P %H} and the C{NATPMP_*} variables say of C{mapping} (the first spec's,
    on the first family), and with C{--family 46} of its IPv6 pinhole, in
    C{NATPMP_PUBLIC_ADDRESS6} and C{NATPMP_PUBLIC_PORT6}."""
    first = service.families[0]
    spec = MappingSpec(mapping.protocol, mapping.internal_port)
    public = service.external_address_for(first) or "0.0.0.0"
    local = local_address_towards(gateways[4].host) if first == 4 else public
    endpoints = Endpoints.of(mapping, local, public)
    pinhole = service.mapping_for(spec, 6) if first == 4 and 6 in service.families else None
    if pinhole is not None:
        endpoints = evolve(endpoints, public6=(service.external_address_for(6) or "",
                                               pinhole.external_port))
    return endpoints


COMMANDS: dict[str, Callable[[Context], Coroutine[Any, Any, int]]] = {
    "address": address,
    "map": map_once,
    "unmap": unmap,
    "hold": hold,
    "run": run,
}
