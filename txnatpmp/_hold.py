"""
Holding mappings, for every front end: L{keeping} builds a service that keeps some specs (the
plugin, C{natpmp hold}), and L{start_holding} starts it and waits for their first mappings,
stopping it again (deleting what was made) on any failure (C{hold_mapping}, the C{natpmp:}
endpoint, C{natpmp run}).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Sequence

from twisted.internet.defer import Deferred, gatherResults

from ._events import MappingEvent
from ._results import Mapping
from ._service import MappingService
from ._spec import DEFAULT_LIFETIME, SERVER_PORT, Gateway, MappingSpec, parse_spec


def keeping(
    specs: Sequence[MappingSpec],
    gateway: Gateway | None = None,
    reactor: Any = None,
    *,
    observer: Callable[[MappingEvent], object] | None = None,
    **service_options: Any,
) -> tuple[MappingService, list[Deferred[Mapping]]]:
    """
    A L{MappingService} (not started) keeping C{specs}, and each spec's first result.  Other
    keyword arguments go to the service.
    """
    host, port = gateway if gateway is not None else (None, SERVER_PORT)
    service = MappingService(host, port, reactor, **service_options)
    if observer is not None:
        service.add_observer(observer)
    return service, [service.add_mapping(spec) for spec in specs]


async def start_holding(
    service: MappingService, firsts: Sequence[Deferred[Mapping]]
) -> list[Mapping]:
    """
    Start C{service} and return the first mappings (C{firsts}, from L{keeping}).

    If any fails (or the wait is cancelled), the service is stopped, deleting what it made,
    and the first error is raised.
    """
    service.startService()
    try:
        return list(await gatherResults(firsts, consumeErrors=True))
    except BaseException as error:
        for first in firsts:
            first.addErrback(lambda _: None)
        await service.stopService()
        cause = getattr(error, "subFailure", None)  # a FirstError from gatherResults
        if cause is not None:
            cause.raiseException()
        raise


class HeldMapping:
    """
    The mapping held by L{hold_mapping}: C{mapping} and C{external_address} always tell the
    current values, which renewals and gateway reboots may change.
    """

    def __init__(self, service: MappingService, spec: MappingSpec) -> None:
        self.service = service
        self.spec = spec

    @property
    def mapping(self) -> Mapping | None:
        """The mapping as last granted (C{None} while the gateway is re-creating it)."""
        return self.service.mapping_for(self.spec)

    @property
    def external_address(self) -> str | None:
        return self.service.external_address


@asynccontextmanager
async def hold_mapping(
    spec: str | MappingSpec,
    gateway: str | None = None,
    gateway_port: int = SERVER_PORT,
    reactor: Any = None,
    *,
    lifetime: int = DEFAULT_LIFETIME,
    **service_options: Any,
) -> AsyncIterator[HeldMapping]:
    """
    Create a mapping on entry, keep it renewed while the block runs, delete it on exit (also when
    the block raises)::

        async with hold_mapping("tcp:8080", reactor=reactor) as held:
            print(held.external_address, held.mapping.external_port)
            await serve_for_a_while()

    Entering fails with the first error if the mapping cannot be created.  Other keyword
    arguments go to L{MappingService}.
    """
    wanted = spec if isinstance(spec, MappingSpec) else parse_spec(spec)
    where = Gateway(gateway, gateway_port) if gateway is not None else None
    service, firsts = keeping([wanted], where, reactor, lifetime=lifetime, **service_options)
    await start_holding(service, firsts)
    try:
        yield HeldMapping(service, wanted)
    finally:
        await service.stopService()
