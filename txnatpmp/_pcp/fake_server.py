"""
The PCP half of L{txnatpmp.testing.FakeGateway}: MAP and ANNOUNCE (RFC 6887) on the gateway's
mapping table, with nonce checks, as the RFC says or as miniupnpd 2.3.1 really does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from .._errors import DecodeError
from .._wire import MappingRequest
from .wire import (
    ADDRESS_MISMATCH,
    HEADER_SIZE,
    MAP_BODY_SIZE,
    MAX_LENGTH,
    OP_MAP,
    MALFORMED_REQUEST,
    NO_RESOURCES,
    NOT_AUTHORIZED,
    OPTION_FILTER,
    OPTION_PREFER_FAILURE,
    PROTOCOL_NAMES,
    RESPONSE_BIT,
    SHORT_ERRORS,
    SUCCESS,
    UNSUPP_OPCODE,
    UNSUPP_OPTION,
    UNSUPP_PROTOCOL,
    UNSUPP_VERSION,
    VERSION,
    AnnounceRequest,
    AnnounceResponse,
    MalformedPCPRequest,
    MapRequest,
    MapResponse,
    Options,
    OtherResponse,
    Request,
    VersionRejected,
    decode_request,
    encode,
)

if TYPE_CHECKING:
    from ..testing import FakeGateway

Quirks = Literal["rfc", "miniupnpd"]

#: The options the server knows and accepts (it acts on neither, as miniupnpd does not).
_KNOWN_OPTIONS = frozenset({OPTION_PREFER_FAILURE, OPTION_FILTER})
#: miniupnpd 2.3.1's min_lifetime default, applied to PCP lifetimes only.
_MINIUPNPD_MIN_LIFETIME = 120


#: What miniupnpd 2.3.1 keeps of a renewed IPv6 pinhole's nonce: nothing any request matches.
_FORGOTTEN = b""


class PCPServer:
    """
    Answers the PCP requests reaching a L{FakeGateway}, on its table, epoch and knobs
    (C{refuse_with} is read as a PCP result code here).

    @ivar quirks: C{"rfc"} follows RFC 6887; C{"miniupnpd"} reproduces miniupnpd 2.3.1
        (lab-pcp-upnp.md): a delete of a missing mapping gets NO_RESOURCES; a renewal with
        another nonce takes the mapping over; long errors carry lifetime 0; malformed requests
        get a version-0 reply; ANNOUNCE echoes the lifetime and options and skips the address
        check; success responses echo every option; lifetimes are at least 120 s.  Over IPv6
        (a client address with a colon) a MAP opens a pinhole, the client's own address and
        internal port (P48), in both modes; with C{"miniupnpd"} a delete of a missing pinhole
        succeeds, and a renewal forgets the pinhole's nonce, so that every later delete gets
        NOT_AUTHORIZED (its nftables backend before 2.3.8); a MAP with another nonce for an
        existing pinhole takes it over, answering the suggested port (0 if none).
    @ivar requests: Every well-formed PCP request received, in order.
    """

    def __init__(self, gateway: FakeGateway, quirks: Quirks = "rfc") -> None:
        if quirks not in ("rfc", "miniupnpd"):
            raise ValueError(f"PCP quirks must be 'rfc' or 'miniupnpd', not {quirks!r}")
        self._gateway = gateway
        self.quirks = quirks
        self.requests: list[Request] = []

    @property
    def _miniupnpd(self) -> bool:
        return self.quirks == "miniupnpd"

    def reply(self, data: bytes, client: str) -> bytes | None:
        """The bytes to answer C{data} from C{client} with, or C{None} for silence."""
        if len(data) < (3 if self._miniupnpd else 2) or data[1] & RESPONSE_BIT:
            return None
        opcode = data[1]
        try:
            request = decode_request(data)
        except MalformedPCPRequest as error:
            return self._malformed(data, opcode, error.result)
        except DecodeError:
            return None
        self.requests.append(request)
        epoch = self._gateway.epoch
        if isinstance(request, MapRequest):
            return encode(self._map(request, client))
        if isinstance(request, AnnounceRequest):
            if self._miniupnpd:  # it checks neither the address nor the options here
                result = self._gateway.refuse_with or SUCCESS
            else:
                result = self._check(request.client_address, client, request.options, True)
            lifetime = request.lifetime if self._miniupnpd else 0
            if result:
                lifetime = self._error_lifetime(result)
            echoed = request.options if self._miniupnpd or result else ()
            return encode(AnnounceResponse(result, lifetime, epoch, echoed))
        return encode(OtherResponse(opcode, UNSUPP_OPCODE, self._error_lifetime(UNSUPP_OPCODE),
                                    epoch)) + request.body

    def _malformed(self, data: bytes, opcode: int, result: int) -> bytes:
        epoch = self._gateway.epoch
        body = data[HEADER_SIZE:MAX_LENGTH]
        if result == UNSUPP_VERSION:
            reply = encode(VersionRejected(VERSION, opcode, epoch,
                                           self._error_lifetime(UNSUPP_VERSION)))
            if self._miniupnpd and opcode == OP_MAP and len(body) >= MAP_BODY_SIZE:
                reply += body[:13] + bytes(7) + body[20:36]  # the ports zeroed
            return reply
        if not self._miniupnpd:
            return encode(OtherResponse(opcode, result, self._error_lifetime(result), epoch))
        body += bytes(-len(body) % 4)
        if HEADER_SIZE <= len(data) <= MAX_LENGTH and not len(data) % 4:  # a short MAP, say
            echo = body[:16] + bytes(len(body[16:]))  # nonce and protocol; the rest zeroed
            return encode(OtherResponse(opcode, result, self._error_lifetime(result), epoch)) + echo
        # Lengths it cannot parse: version 0, opcode 0x80, result 3, epoch 0, the body echoed.
        return bytes((0, RESPONSE_BIT, 0, MALFORMED_REQUEST)) + bytes(20) + body

    def _error_lifetime(self, result: int) -> int:
        if result in SHORT_ERRORS:
            return 30
        return 0 if self._miniupnpd else 1800

    def _check(self, claimed: str, client: str, options: Options, check_address: bool) -> int:
        """The result code for the checks every request passes (0 when they pass)."""
        if check_address and claimed != client:
            return ADDRESS_MISMATCH
        for option in options:
            if option.code not in _KNOWN_OPTIONS and not option.optional:
                return UNSUPP_OPTION  # THIRD_PARTY included: never allowed here
        return self._gateway.refuse_with or SUCCESS

    def _map(self, request: MapRequest, client: str) -> MapResponse:
        gateway = self._gateway

        def answer(result: int, lifetime: int, external_port: int, address: str,
                   options: Options = request.options) -> MapResponse:
            return MapResponse(result, lifetime, gateway.epoch, request.nonce, request.protocol,
                               request.internal_port, external_port, address, options)

        def error(result: int, checked: bool = True) -> MapResponse:
            if not self._miniupnpd:  # the suggestion copied (section 7.2)
                return answer(result, self._error_lifetime(result), request.external_port,
                              request.external_address)
            # miniupnpd: port 0; the real address once the request passed its first checks.
            address = gateway.external_address if checked else request.external_address
            return answer(result, self._error_lifetime(result), 0, address)

        result = self._check(request.client_address, client, request.options, check_address=True)
        if result:
            return error(result, checked=False)
        protocol = PROTOCOL_NAMES.get(request.protocol)
        if protocol is None or request.internal_port == 0:
            return error(MALFORMED_REQUEST if self._miniupnpd or protocol else UNSUPP_PROTOCOL)
        gateway._expire()
        key = (client, protocol, request.internal_port)
        existing = gateway._table.get(key)
        echoed = request.options if self._miniupnpd else ()
        pinhole = ":" in client
        if request.lifetime == 0:
            if existing is None:
                if self._miniupnpd and not pinhole:
                    return error(NO_RESOURCES)
                return answer(SUCCESS, 0, 0, request.external_address, echoed)
            if existing.nonce != request.nonce:
                return error(NOT_AUTHORIZED)
            gateway._remove(key)
            address = gateway.external_address if self._miniupnpd else request.external_address
            return answer(SUCCESS, 0, 0, address, echoed)
        if (existing is not None and existing.nonce is not None
                and existing.nonce != request.nonce and not self._miniupnpd):
            return error(NOT_AUTHORIZED)  # RFC 6887 section 11.3
        lifetime = request.lifetime
        if self._miniupnpd:
            lifetime = max(lifetime, _MINIUPNPD_MIN_LIFETIME)
        granted = gateway._map(
            client, MappingRequest(protocol, request.internal_port,  # type: ignore[arg-type]
                                   request.external_port, lifetime))
        gateway._table[key].nonce = request.nonce
        if not pinhole:
            return answer(SUCCESS, granted.lifetime, granted.external_port,
                          gateway.external_address, echoed)
        port = request.internal_port
        if self._miniupnpd and existing is not None:
            gateway._table[key].nonce = _FORGOTTEN
            if existing.nonce != request.nonce:  # another's pinhole: the suggestion echoed
                port = request.external_port
        return answer(SUCCESS, granted.lifetime, port, client, echoed)
