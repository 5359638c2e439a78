"""
C{async with hold_mapping(...)}: a mapping for the length of a block.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from ._results import Mapping
from ._service import MappingService
from ._spec import MappingSpec, parse_spec


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
    gateway_port: int = 5351,
    reactor: Any = None,
    *,
    lifetime: int = 7200,
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
    service = MappingService(gateway, gateway_port, reactor, lifetime=lifetime, **service_options)
    first = service.add_mapping(wanted)
    service.startService()
    try:
        await first
        yield HeldMapping(service, wanted)
    finally:
        await service.stopService()
