"""
A txnatpmp process for a lab namespace, driven by JSON lines on stdin (one answer line each).

Commands ("op"): find_gateway; connect [gateway, port, initial_delay, attempts]; address;
map protocol internal_port [external_port lifetime]; map_many protocol ports [lifetime];
unmap protocol internal_port; unmap_all protocol; lost_state (epoch losses seen so far);
serve protocol port (a TCP server that greets and closes, or a UDP echo);
listen_announcements; announcements (those heard so far).
Failures answer {"error": <exception class>, "message": ..., "code": <result code or null>}.
"""

from __future__ import annotations

import json
import time
from typing import Any

import attrs
from twisted.internet import defer, reactor, stdio
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.protocols.basic import LineReceiver

from txnatpmp import NATPMPClient, RetransmitSchedule, find_gateway
from txnatpmp._announce import AnnouncementListener, listen_for_announcements
from txnatpmp._upnp import UPnPClient
from txnatpmp import Mapping, PCPClient, PCPSchedule, ResultError
from txnatpmp._wire import PCPAnnounce
from txnatpmp import Router6, find_gateway6
from txnatpmp._announce6 import watch_announcements6

GREETING = b"hello from behind the NAT\n"


class Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(GREETING)
        self.transport.loseConnection()


class Echo(DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(data, addr)


def as_dict(value: Any) -> dict[str, Any]:
    return attrs.asdict(value, filter=lambda attribute, _: attribute.name != "nonce")


class Agent(LineReceiver):
    delimiter = b"\n"

    def __init__(self) -> None:
        self.client: NATPMPClient | None = None
        self.lost: list[dict[str, float]] = []
        self.heard: list[dict[str, Any]] = []

    def lineReceived(self, line: bytes) -> None:
        command = json.loads(line)
        d = defer.maybeDeferred(getattr(self, "op_" + command.pop("op")), **command)
        d.addErrback(lambda f: {"error": type(f.value).__name__, "message": str(f.value),
                                "code": getattr(f.value, "code", None)})
        d.addCallback(lambda answer: self.sendLine(json.dumps(answer).encode()))

    async def op_find_gateway(self) -> dict[str, Any]:
        return {"gateway": await find_gateway()}

    async def op_connect(self, gateway: str | None = None, port: int = 5351,
                         initial_delay: float = 0.25, attempts: int = 9) -> dict[str, Any]:
        gateway = gateway or await find_gateway()
        self.client = NATPMPClient(gateway, port, schedule=RetransmitSchedule(initial_delay, attempts))
        self.client.epoch.add_observer(
            lambda received, expected: self.lost.append({"received": received, "expected": expected}))
        reactor.listenUDP(0, self.client)
        return {"gateway": gateway}

    async def op_address(self) -> dict[str, Any]:
        assert self.client is not None
        return as_dict(await self.client.get_external_address())

    async def op_map(self, protocol: str, internal_port: int, external_port: int = 0,
                     lifetime: int = 7200) -> dict[str, Any]:
        assert self.client is not None
        return as_dict(await self.client.map_port(protocol, internal_port, external_port, lifetime))

    def op_map_begin(self, protocol: str, internal_port: int, lifetime: int = 600) -> dict[str, Any]:
        """Start a mapping request without waiting; map_wait gives its outcome."""
        assert self.client is not None and self.client.transport is not None
        self.begun = self.client.map_port(protocol, internal_port, 0, lifetime)
        return {"client_port": self.client.transport.getHost().port}

    async def op_map_wait(self) -> dict[str, Any]:
        return as_dict(await self.begun)

    async def op_map_many(self, protocol: str, ports: list[int], lifetime: int = 600) -> dict[str, Any]:
        assert self.client is not None
        mappings = await defer.gatherResults(
            [self.client.map_port(protocol, p, 0, lifetime) for p in ports], consumeErrors=True)
        return {"mappings": [as_dict(m) for m in mappings]}

    async def op_unmap(self, protocol: str, internal_port: int) -> dict[str, Any]:
        assert self.client is not None
        return as_dict(await self.client.unmap_port(protocol, internal_port))

    async def op_unmap_all(self, protocol: str) -> dict[str, Any]:
        assert self.client is not None
        return as_dict(await self.client.unmap_all(protocol))

    def op_lost_state(self) -> dict[str, Any]:
        return {"lost": self.lost}

    def op_serve(self, protocol: str, port: int) -> dict[str, Any]:
        if protocol == "tcp":
            reactor.listenTCP(port, Factory.forProtocol(Greeter))
        else:
            reactor.listenUDP(port, Echo())
        return {"serving": port}

    def op_listen_announcements(self, gateway: str) -> dict[str, Any]:
        def heard(announcement: Any) -> None:
            self.heard.append({"kind": type(announcement).__name__, **as_dict(announcement)})

        listen_for_announcements(AnnouncementListener(gateway, heard))
        return {"listening": True}

    def op_announcements(self) -> dict[str, Any]:
        return {"announcements": self.heard}

    # UPnP-IGD: upnp_connect [gateway internal_client]; upnp_address; upnp_map protocol
    # internal_port [external_port lifetime]; upnp_renew / upnp_unmap / upnp_check protocol
    # internal_port; upnp_reestablish; upnp_listen_restarts (NOTIFYs); upnp_restarts (reasons
    # heard so far).

    async def op_upnp_connect(self, gateway: str | None = None,
                              internal_client: str | None = None) -> dict[str, Any]:
        self.upnp = UPnPClient(gateway or await find_gateway(), internal_client=internal_client)
        self.upnp_mappings: dict[tuple[str, int], Any] = {}
        self.restarts: list[str] = []
        self.upnp.add_restart_observer(self.restarts.append)
        device = await self.upnp.discover()
        return {"location": device.location, "boot_id": device.boot_id,
                "service": device.service.service_type,
                "external_address": device.external_address}

    async def op_upnp_address(self) -> dict[str, Any]:
        return as_dict(await self.upnp.get_external_address())

    async def op_upnp_map(self, protocol: str, internal_port: int, external_port: int = 0,
                          lifetime: int = 7200) -> dict[str, Any]:
        mapping = await self.upnp.map_port(protocol, internal_port, external_port, lifetime)
        self.upnp_mappings[(protocol, internal_port)] = mapping
        return as_dict(mapping)

    async def op_upnp_renew(self, protocol: str, internal_port: int) -> dict[str, Any]:
        mapping = await self.upnp.renew(self.upnp_mappings[(protocol, internal_port)])
        self.upnp_mappings[(protocol, internal_port)] = mapping
        return as_dict(mapping)

    async def op_upnp_unmap(self, protocol: str, internal_port: int) -> dict[str, Any]:
        mapping = self.upnp_mappings.pop((protocol, internal_port))
        return as_dict(await self.upnp.unmap_port(mapping))

    async def op_upnp_check(self, protocol: str, internal_port: int) -> dict[str, Any]:
        return {"held": await self.upnp.check(self.upnp_mappings[(protocol, internal_port)])}

    async def op_upnp_reestablish(self) -> dict[str, Any]:
        mappings = await self.upnp.reestablish()
        for mapping in mappings:
            self.upnp_mappings[(mapping.protocol, mapping.internal_port)] = mapping
        return {"mappings": [as_dict(m) for m in mappings]}

    def op_upnp_listen_restarts(self) -> dict[str, Any]:
        self.upnp.listen_for_restarts()
        return {"listening": True}

    def op_upnp_restarts(self) -> dict[str, Any]:
        return {"restarts": self.restarts}

    # PCP (RFC 6887): pcp_connect [server, port, initial, max_count, max_duration,
    # client_address]; pcp_map protocol internal_port [external_port lifetime]; pcp_renew
    # mapping; pcp_unmap mapping (a mapping dict as pcp_map answers, nonce in hex); pcp_announce;
    # pcp_lost_state; pcp_listen_announcements server; pcp_announcements.  A PCP error answers
    # {"error", "message", "code", "server_version", "retry_after", "seconds"}.

    async def op_pcp_connect(self, server: str | None = None, port: int = 5351,
                             initial: float = 3.0, max_count: int = 0, max_duration: float = 0,
                             client_address: str | None = None) -> dict[str, Any]:
        server = server or await find_gateway()
        schedule = PCPSchedule(initial, max_count=max_count, max_duration=max_duration)
        self.pcp = PCPClient(server, port, schedule=schedule, client_address=client_address)
        self.pcp_lost: list[dict[str, float]] = []
        self.pcp_heard: list[int] = []
        self.pcp.epoch.add_observer(
            lambda received, expected: self.pcp_lost.append(
                {"received": received, "expected": expected}))
        self.pcp.add_announce_observer(self.pcp_heard.append)
        reactor.listenUDP(0, self.pcp)
        return {"server": server}

    async def _pcp(self, request: Any) -> dict[str, Any]:
        started = time.monotonic()
        try:
            value = await request
        except ResultError as error:
            return {"error": type(error).__name__, "message": str(error), "code": error.code,
                    "server_version": getattr(error, "server_version", None),
                    "retry_after": error.retry_after, "seconds": time.monotonic() - started}
        if isinstance(value, Mapping):
            return {**as_dict(value), "nonce": (value.nonce or b"").hex()}
        return {"epoch": value}

    async def op_pcp_map(self, protocol: str, internal_port: int, external_port: int = 0,
                         lifetime: int = 7200) -> dict[str, Any]:
        return await self._pcp(self.pcp.map_port(protocol, internal_port, external_port, lifetime))

    async def op_pcp_renew(self, mapping: dict[str, Any]) -> dict[str, Any]:
        return await self._pcp(self.pcp.renew(pcp_mapping(mapping)))

    async def op_pcp_unmap(self, mapping: dict[str, Any]) -> dict[str, Any]:
        return await self._pcp(self.pcp.unmap_port(pcp_mapping(mapping)))

    async def op_pcp_announce(self) -> dict[str, Any]:
        return await self._pcp(self.pcp.announce())

    def op_pcp_lost_state(self) -> dict[str, Any]:
        return {"lost": self.pcp_lost}

    def op_pcp_listen_announcements(self, server: str) -> dict[str, Any]:
        def heard(announcement: Any) -> None:
            if isinstance(announcement, PCPAnnounce):
                self.pcp.observe_announce(announcement.epoch)

        listen_for_announcements(AnnouncementListener(server, heard))
        return {"listening": True}

    def op_pcp_announcements(self) -> dict[str, Any]:
        return {"heard": self.pcp_heard}


    # IPv6 (issue 15): find_gateway6; pcp6_connect [server scope_id initial max_count
    # max_duration] (a PCPClient for the IPv6 router found by find_gateway6, started with
    # listen(): bound to the global address when the router is link-local); then the pcp_* ops
    # above; pcp6_listen_announcements ([ff02::1]:5350 on the router's interface); pcp6_source
    # (the client's address now, and changes seen); serve6 protocol port (on ::).

    async def op_find_gateway6(self) -> dict[str, Any]:
        router = await find_gateway6()
        return {"address": router.address, "interface": router.interface,
                "scope_id": router.scope_id, "host": router.host}

    async def op_pcp6_connect(self, server: str | None = None, port: int = 5351,
                              initial: float = 3.0, max_count: int = 0,
                              max_duration: float = 0) -> dict[str, Any]:
        self.router6 = Router6(server) if server else await find_gateway6()
        schedule = PCPSchedule(initial, max_count=max_count, max_duration=max_duration)
        self.pcp = PCPClient(self.router6.host, port, schedule=schedule,
                             scope_id=self.router6.scope_id)
        self.pcp_lost = []
        self.pcp_heard = []
        self.source_changes: list[list[str]] = []
        self.pcp.epoch.add_observer(
            lambda received, expected: self.pcp_lost.append(
                {"received": received, "expected": expected}))
        self.pcp.add_announce_observer(self.pcp_heard.append)
        self.pcp.add_source_observer(lambda old, new: self.source_changes.append([old, new]))
        listening = self.pcp.listen(reactor)
        return {"server": self.router6.address, "scope_id": self.pcp.scope_id,
                "bound": listening.getHost().host}

    def op_pcp6_listen_announcements(self) -> dict[str, Any]:
        watch_announcements6(self.pcp, self.router6, reactor)
        return {"listening": True}

    def op_pcp6_source(self) -> dict[str, Any]:
        return {"source": self.pcp.source_address, "changed": self.pcp.check_source(),
                "changes": self.source_changes}

    def op_serve6(self, protocol: str, port: int) -> dict[str, Any]:
        if protocol == "tcp":
            reactor.listenTCP(port, Factory.forProtocol(Greeter), interface="::")
        else:
            reactor.listenUDP(port, Echo(), interface="::")
        return {"serving": port}

    # Issue 14, MappingService over PCP or NAT-PMP: service_start name specs [methods gateway
    # port lifetime status_file] (answers once every spec is first mapped); service_info name
    # (its method, state, mappings and the kinds of events so far); service_stop name (deletes
    # every mapping, as a daemon's SIGTERM does).

    async def op_service_start(self, name: str, specs: list[str], methods: Any = "auto",
                               gateway: str | None = None, port: int = 5351,
                               lifetime: int = 7200,
                               status_file: str | None = None) -> dict[str, Any]:
        from txnatpmp import MappingService

        services = self.__dict__.setdefault("services", {})
        events = self.__dict__.setdefault("service_events", {})
        service = services[name] = MappingService(gateway, port, methods=methods,
                                                  lifetime=lifetime, status_file=status_file)
        events[name] = []
        service.add_observer(lambda event: events[name].append(event.kind.value))
        firsts = [service.add_mapping(spec) for spec in specs]
        service.startService()
        await defer.gatherResults(firsts, consumeErrors=True)
        return self.op_service_info(name)

    def op_service_info(self, name: str) -> dict[str, Any]:
        service = self.services[name]
        return {"method": service.mapper.method if service.mapper is not None else None,
                "state": service.state.value, "events": self.service_events[name],
                "mappings": [as_dict(m) for m in service.mappings]}

    async def op_service_stop(self, name: str) -> dict[str, Any]:
        await self.services[name].stopService()
        return self.op_service_info(name)


def pcp_mapping(fields: dict[str, Any]) -> Mapping:
    """A Mapping from the dict pcp_map answers (its nonce in hex), as another process has it."""
    return Mapping(**{**fields, "nonce": bytes.fromhex(fields["nonce"])})


if __name__ == "__main__":
    stdio.StandardIO(Agent())
    reactor.run()
