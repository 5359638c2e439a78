"""
NAT-PMP (RFC 6886) messages as values, with pure encoders and decoders.

Sans-IO: nothing here touches a socket, a clock or Twisted.  L{encode} turns any message into
bytes; L{decode_response}, L{decode_request} and L{decode_announcement} turn bytes into messages or
raise L{DecodeError}.  All integers are big-endian (R01).
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Callable, Literal, Union

from attrs import field, frozen

from ._errors import DecodeError

Protocol = Literal["tcp", "udp"]

NATPMP_VERSION = 0
PCP_VERSION = 2
SERVER_PORT = 5351
ANNOUNCE_PORT = 5350
ANNOUNCE_GROUP = "224.0.0.1"

OP_EXTERNAL_ADDRESS = 0
OP_MAP_UDP = 1
OP_MAP_TCP = 2
RESPONSE_BIT = 128

MAX_U32 = 0xFFFFFFFF
PCP_MAX_LENGTH = 1100

_OPCODE_FOR: dict[str, int] = {"udp": OP_MAP_UDP, "tcp": OP_MAP_TCP}
_PROTOCOL_FOR: dict[int, Protocol] = {OP_MAP_UDP: "udp", OP_MAP_TCP: "tcp"}

_HEADER = struct.Struct("!BBHI")  # version, opcode, result, seconds since start of epoch
_MAP_REQUEST = struct.Struct("!BBHHHI")
_MAP_RESPONSE = struct.Struct("!BBHIHHI")
_PCP_HEADER = struct.Struct("!BBBBII")  # version, R+opcode, reserved, result, lifetime, epoch


def check_protocol(protocol: str) -> Protocol:
    """
    Return C{protocol} if it is C{"tcp"} or C{"udp"}; raise C{ValueError} otherwise.
    """
    if protocol not in _OPCODE_FOR:
        raise ValueError(f"protocol must be 'tcp' or 'udp', not {protocol!r}")
    return protocol  # type: ignore[return-value]


def _int_in(name: str, low: int, high: int) -> Callable[[Any, Any, Any], None]:
    """Return an attrs validator accepting integers from C{low} to C{high}."""

    def check(instance: object, attribute: object, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")

    return check


def _protocol_validator(instance: object, attribute: object, value: str) -> None:
    check_protocol(value)


@frozen
class ExternalAddressRequest:
    """Ask for the gateway's external IPv4 address (R01)."""


@frozen
class MappingRequest:
    """
    Create, renew or (with lifetime 0) delete a mapping (R03, R16).

    @ivar external_port: The suggested external port; 0 means "any" (R13).
    """

    protocol: Protocol = field(validator=_protocol_validator)
    internal_port: int = field(validator=_int_in("internal port", 0, 0xFFFF))
    external_port: int = field(validator=_int_in("external port", 0, 0xFFFF))
    lifetime: int = field(validator=_int_in("lifetime", 0, MAX_U32))


@frozen
class ExternalAddressResponse:
    """The gateway's external address (R02); C{address} means nothing when C{result} is not 0."""

    result: int
    epoch: int
    address: str


@frozen
class MappingResponse:
    """The gateway's answer to a L{MappingRequest} (R04)."""

    protocol: Protocol
    result: int
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int


@frozen
class ErrorResponse:
    """
    A bare 8-byte error reply, as gateways send for an unsupported version or opcode (R06).

    Its opcode may be 0 instead of 128 (RFC 6886 errata 3618).
    """

    opcode: int
    result: int
    epoch: int


@frozen
class PCPAnnounce:
    """A PCP ANNOUNCE response (RFC 6887 section 14.1): an epoch signal from a PCP server (R23)."""

    result: int
    epoch: int


Request = Union[ExternalAddressRequest, MappingRequest]
Response = Union[ExternalAddressResponse, MappingResponse, ErrorResponse]
Message = Union[Request, Response, PCPAnnounce]


def opcode_of(request: Request) -> int:
    """Return the opcode a request is sent with."""
    if isinstance(request, MappingRequest):
        return _OPCODE_FOR[request.protocol]
    return OP_EXTERNAL_ADDRESS


def encode(message: Message) -> bytes:
    """Return the bytes of a NAT-PMP (or PCP ANNOUNCE) message."""
    if isinstance(message, ExternalAddressRequest):
        return bytes((NATPMP_VERSION, OP_EXTERNAL_ADDRESS))
    if isinstance(message, MappingRequest):
        return _MAP_REQUEST.pack(
            NATPMP_VERSION,
            _OPCODE_FOR[message.protocol],
            0,
            message.internal_port,
            message.external_port,
            message.lifetime,
        )
    if isinstance(message, ExternalAddressResponse):
        return _HEADER.pack(
            NATPMP_VERSION, RESPONSE_BIT + OP_EXTERNAL_ADDRESS, message.result, message.epoch
        ) + socket.inet_aton(message.address)
    if isinstance(message, MappingResponse):
        return _MAP_RESPONSE.pack(
            NATPMP_VERSION,
            RESPONSE_BIT + _OPCODE_FOR[message.protocol],
            message.result,
            message.epoch,
            message.internal_port,
            message.external_port,
            message.lifetime,
        )
    if isinstance(message, ErrorResponse):
        return _HEADER.pack(NATPMP_VERSION, message.opcode, message.result, message.epoch)
    if isinstance(message, PCPAnnounce):
        return _PCP_HEADER.pack(PCP_VERSION, RESPONSE_BIT, 0, message.result, 0, message.epoch) + (
            b"\x00" * 12
        )
    raise TypeError(f"not a NAT-PMP message: {message!r}")


def decode_response(data: bytes) -> Response:
    """
    Parse a datagram from a NAT-PMP gateway.

    @raise DecodeError: for anything but a well-formed version-0 response (R12, R24).
    """
    if len(data) < _HEADER.size:
        raise DecodeError(f"response too short: {len(data)} bytes")
    version, opcode, result, epoch = _HEADER.unpack_from(data)
    if version != NATPMP_VERSION:
        raise DecodeError(f"not a NAT-PMP response: version {version}")
    if len(data) == _HEADER.size:
        if result == 0 or opcode not in (0, 128, 129, 130):
            raise DecodeError(f"8-byte response with opcode {opcode} and result {result}")
        return ErrorResponse(opcode, result, epoch)
    if opcode == RESPONSE_BIT + OP_EXTERNAL_ADDRESS:
        if len(data) != 12:
            raise DecodeError(f"external address response of {len(data)} bytes, not 12")
        return ExternalAddressResponse(result, epoch, socket.inet_ntoa(data[8:12]))
    protocol = _PROTOCOL_FOR.get(opcode - RESPONSE_BIT)
    if protocol is None:
        raise DecodeError(f"unknown response opcode {opcode}")
    if len(data) != _MAP_RESPONSE.size:
        raise DecodeError(f"mapping response of {len(data)} bytes, not 16")
    _, _, _, _, internal, external, lifetime = _MAP_RESPONSE.unpack(data)
    return MappingResponse(protocol, result, epoch, internal, external, lifetime)


def decode_request(data: bytes) -> Request:
    """
    Parse a version-0 request, as a gateway does.

    Version and opcode checks that call for an error reply are the server's policy; this only
    says whether the bytes are a well-formed request.
    """
    if len(data) < 2:
        raise DecodeError(f"request too short: {len(data)} bytes")
    version, opcode = data[0], data[1]
    if version != NATPMP_VERSION:
        raise DecodeError(f"not a NAT-PMP request: version {version}")
    if opcode == OP_EXTERNAL_ADDRESS:
        if len(data) != 2:
            raise DecodeError(f"external address request of {len(data)} bytes, not 2")
        return ExternalAddressRequest()
    protocol = _PROTOCOL_FOR.get(opcode)
    if protocol is None:
        raise DecodeError(f"unknown request opcode {opcode}")
    if len(data) != _MAP_REQUEST.size:
        raise DecodeError(f"mapping request of {len(data)} bytes, not 12")
    _, _, _reserved, internal, external, lifetime = _MAP_REQUEST.unpack(data)
    return MappingRequest(protocol, internal, external, lifetime)


def decode_announcement(data: bytes) -> ExternalAddressResponse | PCPAnnounce:
    """
    Parse a multicast announcement: a NAT-PMP external address response (R22) or a PCP
    ANNOUNCE response (R23).
    """
    if data[:1] == bytes((PCP_VERSION,)):
        if not _PCP_HEADER.size + 12 <= len(data) <= PCP_MAX_LENGTH or len(data) % 4:
            raise DecodeError(f"PCP message of {len(data)} bytes")
        _, opcode, _, result, _, epoch = _PCP_HEADER.unpack_from(data)
        if opcode != RESPONSE_BIT:
            raise DecodeError(f"PCP opcode {opcode} is not an ANNOUNCE response")
        return PCPAnnounce(result, epoch)
    response = decode_response(data)
    if not isinstance(response, ExternalAddressResponse):
        raise DecodeError(f"announcement is not an external address response: {response!r}")
    return response


def is_delete(request: Request) -> bool:
    """Whether a request deletes mappings (lifetime 0, R16)."""
    return isinstance(request, MappingRequest) and request.lifetime == 0


def answers(request: Request, response: Response) -> bool:
    """
    Whether C{response} can be the gateway's answer to C{request} (R06).

    NAT-PMP has no transaction id: a response matches by opcode and, for mappings, by protocol and
    internal port.  A successful response also has to fit what was asked: a delete is answered
    with lifetime 0 and a create with more, so a late answer to a delete is never taken for the
    answer to a create of the same port, nor a late create answer for a confirmed delete (which
    would leave the mapping on the gateway).
    """
    if isinstance(response, ErrorResponse):
        return response.opcode in (0, RESPONSE_BIT, RESPONSE_BIT + opcode_of(request))
    if isinstance(request, ExternalAddressRequest):
        return isinstance(response, ExternalAddressResponse)
    if not isinstance(response, MappingResponse):
        return False
    if (response.protocol, response.internal_port) != (request.protocol, request.internal_port):
        return False
    return response.result != 0 or (response.lifetime == 0) == (request.lifetime == 0)
