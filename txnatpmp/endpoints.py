"""
The C{natpmp:} server endpoint: listen locally and map the port on the gateway.

    twist web --listen natpmp:8080 --path .
    twist web --listen natpmp:8080:external=80:lifetime=3600 --path .
    twist web --listen natpmp:8080:method=natpmp --path .   (method=auto|pcp|natpmp|upnp)
    twist web --listen natpmp:8080:family=46 --path .   (an IPv4 mapping and an IPv6 pinhole)
    twist web --listen natpmp:tcp\\:8080\\:interface=198.51.100.10 ...   (any inner endpoint)

or from Python::

    endpoint = NATPMPServerEndpoint(reactor, TCP4ServerEndpoint(reactor, 8080))
    port = await endpoint.listen(factory)
    print(port.public_address, port.public_port, port.public_addresses)
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    quoteStringArgument,
    serverFromString,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from ._hold import HeldMapping, keeping, start_holding
from ._mapper.shared import check_methods
from ._service import MappingService
from ._spec import (
    DEFAULT_LIFETIME,
    SERVER_PORT,
    Gateway,
    MappingSpec,
    check_families,
    is_ascii_number,
    parse_gateway,
    parse_lifetime,
)

__all__ = ["NATPMPListeningPort", "NATPMPServerEndpoint", "NATPMPServerParser"]


@implementer(IListeningPort)
class NATPMPListeningPort(HeldMapping):
    """
    A listening port whose TCP port is mapped on the gateway, and kept mapped (renewed, and
    re-created after gateway reboots) while it listens: a L{HeldMapping} that listens.

    @ivar service: The L{MappingService} keeping the mapping; add observers to it to follow
        changes.
    """

    def __init__(self, port: IListeningPort, service: MappingService, spec: MappingSpec) -> None:
        super().__init__(service, spec)
        self.port = port

    @property
    def public_address(self) -> str | None:
        """The public address (the first family's: the gateway's external IPv4 address, or
        for IPv6 only this host's global address)."""
        return self.external_address

    @property
    def public_port(self) -> int | None:
        """The external port mapped to this one (the first family's)."""
        mapping = self.mapping
        return mapping.external_port if mapping else None

    @property
    def public_addresses(self) -> list[tuple[str, int]]:
        """C{(address, port)} where the world reaches this port, one per family that has its
        mapping now: the IPv4 mapping's, then the IPv6 pinhole's."""
        found = []
        for family in self.service.families:
            mapping = self.service.mapping_for(self.spec, family)
            if mapping is None:
                continue
            address = mapping.external_address or self.service.external_address_for(family)
            if address:
                found.append((address, mapping.external_port))
        return found

    def startListening(self) -> None:
        self.port.startListening()

    def stopListening(self) -> Deferred[None]:
        """Delete the mapping, then stop listening locally."""
        stopping = self.service.stopService()

        async def stop() -> None:
            await stopping
            await maybeDeferred(self.port.stopListening)

        return Deferred.fromCoroutine(stop())

    def getHost(self) -> Any:
        return self.port.getHost()


@implementer(IStreamServerEndpoint)
class NATPMPServerEndpoint:
    """
    Listens with an inner stream server endpoint, then maps the port it got on the gateway.

    C{listen()} fires with a L{NATPMPListeningPort} once both are done, or fails with the
    gateway's error after closing the local port again.
    """

    def __init__(
        self,
        reactor: Any,
        inner: IStreamServerEndpoint,
        external_port: int = 0,
        lifetime: int = DEFAULT_LIFETIME,
        gateway: str | None = None,
        gateway_port: int = SERVER_PORT,
        methods: Sequence[str] | str = "auto",
        families: int | str | Sequence[int] = (4,),
        **service_options: Any,
    ) -> None:
        """
        @param methods: C{"auto"} (PCP where the gateway speaks it, else NAT-PMP, else
            UPnP-IGD), or some of C{"pcp"}, C{"natpmp"}, C{"upnp"}.
        @param families: C{4}, C{6} (an IPv6 pinhole, through PCP) or C{(4, 6)}: both.  The
            inner endpoint must listen on the families asked for.
        @raise ValueError: for a bad lifetime, methods or families, before anything is sent.
        """
        self._reactor = reactor
        self.methods = check_methods(methods)
        self.families = check_families(families)
        self.inner = inner
        self.external_port = external_port
        self.lifetime = parse_lifetime(lifetime)
        self.gateway = gateway
        self.gateway_port = gateway_port
        self._service_options = service_options

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return Deferred.fromCoroutine(self._listen(protocolFactory))

    async def _listen(self, factory: IProtocolFactory) -> IListeningPort:
        port = await self.inner.listen(factory)
        spec = MappingSpec("tcp", port.getHost().port, self.external_port)  # type: ignore[attr-defined]
        where = Gateway(self.gateway, self.gateway_port) if self.gateway is not None else None
        service, firsts = keeping([spec], where, self._reactor, lifetime=self.lifetime,
                                  methods=self.methods, families=self.families,
                                  **self._service_options)
        try:
            await start_holding(service, firsts)
        except BaseException:
            await maybeDeferred(port.stopListening)
            raise
        return NATPMPListeningPort(port, service, spec)


def _unparse(args: tuple[str, ...], kwargs: dict[str, str]) -> str:
    """An endpoint description again, from parsed arguments."""
    quote = quoteStringArgument
    return ":".join([quote(a) for a in args]  # type: ignore[no-untyped-call]
                    + [f"{quote(k)}={quote(v)}" for k, v in sorted(kwargs.items())])  # type: ignore[no-untyped-call]


def _port_option(name: str, text: str, lowest: int = 1) -> int:
    if not is_ascii_number(text) or not lowest <= int(text) <= 0xFFFF:
        raise ValueError(
            f"natpmp endpoint: {name} must be a port from {lowest} to 65535, not {text!r}"
        )
    return int(text)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class NATPMPServerParser:
    """
    Parses C{natpmp:PORT[:interface=ADDRESS][:external=PORT][:lifetime=SECONDS]
    [:gateway=ADDRESS[\\:PORT]][:gateway6=ADDRESS][:method=auto|pcp|natpmp|upnp]
    [:family=4|6|46]}, or C{natpmp:INNER...} with any inner server endpoint description
    (C{natpmp:tcp:8080:interface=...}); the natpmp options are taken out and the rest goes to
    the inner endpoint.  With C{family=6} or C{46}, C{natpmp:PORT} listens on C{::} (IPv6, and
    IPv4 too where the system maps it, as Linux does by default).
    """

    prefix = "natpmp"

    def parseStreamServer(
        self, reactor: IReactorCore, *parsed_args: object, **parsed_kwargs: object
    ) -> IStreamServerEndpoint:
        args = tuple(str(a) for a in parsed_args)
        kwargs = {k: str(v) for k, v in parsed_kwargs.items()}
        options: dict[str, Any] = {}
        if "external" in kwargs:
            options["external_port"] = _port_option("external", kwargs.pop("external"))
        if "lifetime" in kwargs:
            try:
                options["lifetime"] = parse_lifetime(kwargs.pop("lifetime"))
            except ValueError as error:
                raise ValueError(f"natpmp endpoint: {error}") from None
        if "gateway" in kwargs:
            try:
                options["gateway"], options["gateway_port"] = parse_gateway(kwargs.pop("gateway"))
            except ValueError as error:
                raise ValueError(f"natpmp endpoint: {error}") from None
        if "method" in kwargs:
            try:
                options["methods"] = check_methods(kwargs.pop("method"))
            except ValueError as error:
                raise ValueError(f"natpmp endpoint: {error}") from None
        families: tuple[int, ...] = (4,)
        if "family" in kwargs:
            try:
                families = options["families"] = check_families(kwargs.pop("family"))
            except ValueError as error:
                raise ValueError(f"natpmp endpoint: {error}") from None
        if "gateway6" in kwargs:
            try:
                options["gateway6"] = router = parse_gateway(kwargs.pop("gateway6"))
                if ":" not in router.host:
                    raise ValueError(f"gateway6 must be the IPv6 router's address, not "
                                     f"{router.host!r}")
            except ValueError as error:
                raise ValueError(f"natpmp endpoint: {error}") from None
        if not args or not args[0]:
            raise ValueError("natpmp endpoint needs a port: natpmp:8080")
        if len(args) == 1 and is_ascii_number(args[0]):
            port = _port_option("port", args[0], 0)
            interface = kwargs.pop("interface", "")
            inner: IStreamServerEndpoint
            if 6 in families:
                inner = TCP6ServerEndpoint(  # type: ignore[no-untyped-call]
                    reactor, port, interface=interface or "::")
            else:
                inner = TCP4ServerEndpoint(  # type: ignore[no-untyped-call]
                    reactor, port, interface=interface)
            if kwargs:
                raise ValueError(f"natpmp endpoint: unknown options {sorted(kwargs)}")
        else:
            inner = serverFromString(reactor, _unparse(args, kwargs))  # type: ignore[no-untyped-call]
        return NATPMPServerEndpoint(reactor, inner, **options)
