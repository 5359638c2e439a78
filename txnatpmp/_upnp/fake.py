"""
L{FakeIGD}: a UPnP Internet Gateway Device double on loopback, with knobs for what real routers
do wrong.
"""

from __future__ import annotations

from typing import Any

from attrs import define
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from .._errors import DecodeError
from .._reactor import global_reactor
from . import soap
from .ssdp import IGD_SEARCH_TARGET

_UPNP = "urn:schemas-upnp-org"
_XML = b'text/xml; charset="utf-8"'
_LEASE_CAP = 604800  # IGD:2: lease 0 and anything longer mean this

_FAULTS = {
    401: "Invalid Action",
    402: "Invalid Args",
    501: "Action Failed",
    606: "Action not authorized",
    714: "NoSuchEntryInArray",
    716: "WildCardNotPermittedInExtPort",
    718: "ConflictInMappingEntry",
    725: "OnlyPermanentLeasesSupported",
    729: "ConflictWithOtherMechanisms",
}


@define
class IGDMapping:
    """A mapping in the IGD's table; C{expires} is C{None} for a permanent one."""

    protocol: str
    external_port: int
    internal_client: str
    internal_port: int
    lease: int
    description: str
    expires: float | None


class FakeIGD:
    """
    A UPnP-IGD double: a C{twisted.web} site serving the device description and the
    WANIPConnection (or WANPPPConnection) SOAP actions, and an SSDP responder answering
    unicast M-SEARCH.  Both bind loopback (any free ports) by default::

        igd = FakeIGD()
        igd.listen()
        client = UPnPClient("127.0.0.1", ssdp_port=igd.ssdp_port)

    Knobs (plain attributes, change them at any time):
      - C{version}: 2 (IGD:2, WANIPConnection:2, AddAnyPortMapping) or 1.
      - C{ppp_only}: describe only a WANPPPConnection:1 service.
      - C{several_devices}: also describe a WANPPPConnection:1 in another connection device,
        listed first, and a non-IGD embedded device.
      - C{fault_next}: fault codes (718, 725, 606...) to answer the next add actions with, one
        per action.
      - C{refuse_with}: answer every add action with this fault code until set back to C{None}.
      - C{permanent_only}: answer 725 to any lease but 0, as some IGD:1 routers do.
      - C{ignore_leases}: accept any lease and hold the mapping permanently.
      - C{secure_mode}: answer 718 when C{NewInternalClient} is not the requesting host.
      - C{first_allowed_port}: external ports below it are refused with 606.
      - C{description_padding}, C{response_padding}: bytes of whitespace added to the
        description, or to each successful SOAP response (oversized XML).
      - C{doctype}: give the description and each successful SOAP response a DOCTYPE that
        declares an entity.
      - C{location_host}: the host written in LOCATION (another host's address, to test that
        a client refuses it).
      - C{answer_searches}: C{False} ignores M-SEARCH.
      - C{external_address}: what GetExternalIPAddress answers.

    L{reboot} forgets every mapping, increases BOOTID and moves the HTTP server to a new port, as
    miniupnpd does; L{forget_mappings} only empties the table.  It records C{actions} (SOAP
    action names, in order), C{searches} and
    C{description_fetches}.
    """

    log = Logger()

    def __init__(self, reactor: Any = None, external_address: str = "203.0.113.1") -> None:
        if reactor is None:
            reactor = global_reactor()
        self._reactor = reactor
        self.external_address = external_address
        self.version = 2
        self.ppp_only = False
        self.several_devices = False
        self.fault_next: list[int] = []
        self.refuse_with: int | None = None
        self.permanent_only = False
        self.ignore_leases = False
        self.secure_mode = True
        self.first_allowed_port = 1024
        self.description_padding = 0
        self.response_padding = 0
        self.doctype = False
        self.location_host: str | None = None
        self.answer_searches = True
        self.boot_id = 1
        self.actions: list[str] = []
        self.searches = 0
        self.description_fetches = 0
        self._table: dict[tuple[str, int], IGDMapping] = {}
        self._started = reactor.seconds()
        self._interface = "127.0.0.1"
        self._http: IListeningPort | None = None
        self._ssdp: IListeningPort | None = None
        root = Resource()  # type: ignore[no-untyped-call]
        root.putChild(b"rootDesc.xml", _Description(self))
        root.putChild(b"ctl", _Control(self))
        self._site = Site(root)  # type: ignore[no-untyped-call]
        self._site.noisy = False

    # Serving

    def listen(self, interface: str = "127.0.0.1") -> None:
        """Serve HTTP and SSDP on C{interface}, each on a free port."""
        self._interface = interface
        self._http = self._reactor.listenTCP(0, self._site, interface=interface)
        self._ssdp = self._reactor.listenUDP(0, _Responder(self), interface=interface)

    def stop(self) -> Deferred[Any]:
        """Stop serving."""
        ports = [p for p in (self._http, self._ssdp) if p is not None]
        self._http = self._ssdp = None
        return DeferredList([Deferred.fromCoroutine(_stopped(p)) for p in ports])

    @property
    def http_port(self) -> int:
        assert self._http is not None, "call listen() first"
        port: int = self._http.getHost().port  # type: ignore[attr-defined]
        return port

    @property
    def ssdp_port(self) -> int:
        assert self._ssdp is not None, "call listen() first"
        port: int = self._ssdp.getHost().port  # type: ignore[attr-defined]
        return port

    @property
    def location(self) -> str:
        """The description URL that SSDP answers carry."""
        return f"http://{self.location_host or self._interface}:{self.http_port}/rootDesc.xml"

    @property
    def service_type(self) -> str:
        if self.ppp_only:
            return f"{_UPNP}:service:WANPPPConnection:1"
        return f"{_UPNP}:service:WANIPConnection:{self.version}"

    def forget_mappings(self) -> None:
        """Lose every mapping without restarting (no new BOOTID or port), as a flushed table."""
        self._table.clear()

    def reboot(self) -> Deferred[None]:
        """Forget every mapping, take a new BOOTID and a new HTTP port."""
        self._table.clear()
        self.boot_id += 1
        old, self._http = self._http, None
        done: Deferred[None] = Deferred()

        def relisten(_: object) -> None:
            self._http = self._reactor.listenTCP(0, self._site, interface=self._interface)
            done.callback(None)

        if old is None:
            relisten(None)
        else:
            d = old.stopListening()
            assert d is not None
            d.addCallback(relisten)
        return done

    # The table

    @property
    def mappings(self) -> list[IGDMapping]:
        """The live mappings."""
        now = self._reactor.seconds()
        for key, mapping in list(self._table.items()):
            if mapping.expires is not None and mapping.expires <= now:
                del self._table[key]
        return list(self._table.values())

    def mapping_for(self, protocol: str, external_port: int) -> IGDMapping | None:
        return next((m for m in self.mappings
                     if (m.protocol, m.external_port) == (protocol, external_port)), None)

    # Texts

    def description(self) -> bytes:
        """The device description, as served now."""
        ip = f"""<service><serviceType>{self.service_type}</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL>
<SCPDURL>/WANIPCn.xml</SCPDURL></service>"""
        connection_devices = f"""<device>
<deviceType>{_UPNP}:device:WANConnectionDevice:{self.version}</deviceType>
<serviceList>{ip}</serviceList></device>"""
        if self.several_devices:
            other = f"""<device>
<deviceType>{_UPNP}:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>{_UPNP}:service:WANPPPConnection:1</serviceType>
<controlURL>/ctl/PPPConn</controlURL></service></serviceList></device>"""
            connection_devices = other + connection_devices
        extra = (f"<device><deviceType>{_UPNP}:device:Printer:1</deviceType><serviceList>"
                 f"<service><serviceType>{_UPNP}:service:PrintBasic:1</serviceType>"
                 "<controlURL>/ctl/Print</controlURL></service></serviceList></device>"
                 if self.several_devices else "")
        text = f"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>1</minor></specVersion>
<device>
<deviceType>{_UPNP}:device:InternetGatewayDevice:{self.version}</deviceType>
<friendlyName>txnatpmp FakeIGD</friendlyName>
<UDN>uuid:00000000-0000-0000-0000-000000000001</UDN>
<deviceList>
<device>
<deviceType>{_UPNP}:device:WANDevice:{self.version}</deviceType>
<deviceList>{connection_devices}</deviceList>
</device>{extra}
</deviceList>
</device>
</root>
""" + " " * self.description_padding
        if self.doctype:
            text = ('<?xml version="1.0"?>\n<!DOCTYPE root [<!ENTITY boom "boom">]>\n'
                    + text.split("\n", 1)[1])
        return text.encode("utf-8")

    def search_answer(self) -> bytes:
        return (
            "HTTP/1.1 200 OK\r\n"
            "CACHE-CONTROL: max-age=120\r\n"
            f"ST: {IGD_SEARCH_TARGET}\r\n"
            f"USN: uuid:00000000-0000-0000-0000-000000000001::{IGD_SEARCH_TARGET}\r\n"
            "EXT:\r\n"
            "SERVER: txnatpmp/0 UPnP/1.1 FakeIGD/1\r\n"
            f"LOCATION: {self.location}\r\n"
            "OPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\n"
            f"BOOTID.UPNP.ORG: {self.boot_id}\r\n"
            "CONFIGID.UPNP.ORG: 1337\r\n"
            "\r\n"
        ).encode("ascii")

    # Actions

    def act(self, name: str, arguments: dict[str, str], requester: str) -> tuple[int, bytes]:
        """Run one SOAP action; return the HTTP status and body."""
        self.actions.append(name)
        handler = getattr(self, "_action_" + name, None)
        if handler is None:
            return self._fault(401)
        try:
            outputs: list[tuple[str, str]] | int = handler(arguments, requester)
        except (KeyError, ValueError):
            return self._fault(402)
        if isinstance(outputs, int):
            return self._fault(outputs)
        body = soap.encode_response(self.service_type, name, outputs)
        if self.doctype:
            body = body.replace(b"?>", b'?><!DOCTYPE s:Envelope [<!ENTITY boom "boom">]>', 1)
        return 200, body + b" " * self.response_padding

    def _fault(self, code: int) -> tuple[int, bytes]:
        return 500, soap.encode_fault(code, _FAULTS.get(code, "Error"))

    def _action_GetExternalIPAddress(self, arguments: dict[str, str],
                                     requester: str) -> list[tuple[str, str]]:
        return [("NewExternalIPAddress", self.external_address)]

    def _action_GetStatusInfo(self, arguments: dict[str, str],
                              requester: str) -> list[tuple[str, str]]:
        return [("NewConnectionStatus", "Connected"), ("NewLastConnectionError", "ERROR_NONE"),
                ("NewUptime", str(int(self._reactor.seconds() - self._started)))]

    def _action_AddPortMapping(self, arguments: dict[str, str],
                               requester: str) -> list[tuple[str, str]] | int:
        return self._add(arguments, requester, any_port=False)

    def _action_AddAnyPortMapping(self, arguments: dict[str, str],
                                  requester: str) -> list[tuple[str, str]] | int:
        if self.version < 2 or self.ppp_only:
            return 401
        return self._add(arguments, requester, any_port=True)

    def _add(self, arguments: dict[str, str], requester: str,
             any_port: bool) -> list[tuple[str, str]] | int:
        protocol = arguments["NewProtocol"].lower()
        external = int(arguments["NewExternalPort"])
        internal = int(arguments["NewInternalPort"])
        client = arguments["NewInternalClient"]
        lease = int(arguments["NewLeaseDuration"])
        if protocol not in ("tcp", "udp") or not 1 <= internal <= 0xFFFF:
            return 402
        if self.fault_next:
            return self.fault_next.pop(0)
        if self.refuse_with is not None:
            return self.refuse_with
        if external == 0:
            return 716
        if self.permanent_only and lease != 0:
            return 725
        if self.secure_mode and client != requester:
            return 718
        if external < self.first_allowed_port:
            if not any_port:
                return 606
            external = self.first_allowed_port
        held = self.mapping_for(protocol, external)
        if held is not None and held.internal_client != client:
            if not any_port:
                return 718
            external = next(p for p in range(max(external, self.first_allowed_port), 0x10000)
                            if (m := self.mapping_for(protocol, p)) is None
                            or m.internal_client == client)
        expires: float | None
        if self.ignore_leases or (lease == 0 and self.version < 2):
            expires = None
        else:
            lease = min(lease or _LEASE_CAP, _LEASE_CAP)
            expires = self._reactor.seconds() + lease
        self._table[(protocol, external)] = IGDMapping(
            protocol, external, client, internal, lease,
            arguments.get("NewPortMappingDescription", ""), expires)
        return [("NewReservedPort", str(external))] if any_port else []

    def _action_DeletePortMapping(self, arguments: dict[str, str],
                                  requester: str) -> list[tuple[str, str]] | int:
        key = (arguments["NewProtocol"].lower(), int(arguments["NewExternalPort"]))
        if self.mapping_for(*key) is None:
            return 714
        del self._table[key]
        return []

    def _action_GetSpecificPortMappingEntry(self, arguments: dict[str, str],
                                            requester: str) -> list[tuple[str, str]] | int:
        found = self.mapping_for(arguments["NewProtocol"].lower(),
                                 int(arguments["NewExternalPort"]))
        if found is None:
            return 714
        remaining = (0 if found.expires is None
                     else max(0, int(found.expires - self._reactor.seconds())))
        return [("NewInternalPort", str(found.internal_port)),
                ("NewInternalClient", found.internal_client), ("NewEnabled", "1"),
                ("NewPortMappingDescription", found.description),
                ("NewLeaseDuration", str(remaining))]


async def _stopped(port: IListeningPort) -> None:
    await port.stopListening()  # type: ignore[misc]


class _Description(Resource):
    isLeaf = True

    def __init__(self, igd: FakeIGD) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._igd = igd

    def render_GET(self, request: Request) -> bytes:
        self._igd.description_fetches += 1
        request.setHeader(b"Content-Type", _XML)  # type: ignore[no-untyped-call]
        return self._igd.description()


class _Control(Resource):
    isLeaf = True

    def __init__(self, igd: FakeIGD) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._igd = igd

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        try:
            name, arguments = soap.decode_request(request.content.read(soap.MAX_RESPONSE + 1))
        except DecodeError:
            request.setResponseCode(400)
            return b""
        requester = request.getClientAddress().host  # type: ignore[no-untyped-call]
        status, body = self._igd.act(name, arguments, requester)
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", _XML)  # type: ignore[no-untyped-call]
        return body


class _Responder(DatagramProtocol):
    """Answers M-SEARCH for the IGD, its services, or C{ssdp:all}, by unicast."""

    log = Logger()

    def __init__(self, igd: FakeIGD) -> None:
        self._igd = igd

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            text = data.decode("ascii", "replace")
            if not text.startswith("M-SEARCH * HTTP/1.1") or not self._igd.answer_searches:
                return
            self._igd.searches += 1
            target = next((line.split(":", 1)[1].strip() for line in text.split("\r\n")
                           if line.upper().startswith("ST:")), "")
            if target == "ssdp:all" or target.startswith(f"{_UPNP}:device:InternetGateway") or \
                    target.startswith(f"{_UPNP}:service:WAN"):
                assert self.transport is not None
                self.transport.write(self._igd.search_answer(), addr)
        except Exception:
            self.log.failure("FakeIGD failed to answer an M-SEARCH")
