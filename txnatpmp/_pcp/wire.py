"""
PCP (RFC 6887) messages as values, with pure encoders and decoders.

Sans-IO: nothing here touches a socket, a clock or Twisted.  L{encode} turns a message into
bytes; L{decode_response} and L{decode_request} turn bytes into messages or raise
L{DecodeError}.  All integers are big-endian; addresses travel as 16 bytes, IPv4 as
IPv4-mapped IPv6 (P06).  Only what txnatpmp sends is modelled in detail (ANNOUNCE and MAP);
PEER and the THIRD_PARTY, PREFER_FAILURE and FILTER options stay out (P17-P19, P32), though
any option can be carried and every option a server returns is skipped unread (P15).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any, Callable, Union

from attrs import field, frozen

from .._errors import DecodeError

VERSION = 2
NATPMP_VERSION = 0
SERVER_PORT = 5351

OP_ANNOUNCE = 0
OP_MAP = 1
OP_PEER = 2
RESPONSE_BIT = 0x80

HEADER_SIZE = 24
MAP_BODY_SIZE = 36
MAX_LENGTH = 1100  # P04, P14

#: Transport protocol numbers (P21): the API speaks "tcp" and "udp".
PROTOCOL_NUMBERS: dict[str, int] = {"tcp": 6, "udp": 17}
PROTOCOL_NAMES: dict[int, str] = {number: name for name, number in PROTOCOL_NUMBERS.items()}

# Result codes (P12)
SUCCESS = 0
UNSUPP_VERSION = 1
NOT_AUTHORIZED = 2
MALFORMED_REQUEST = 3
UNSUPP_OPCODE = 4
UNSUPP_OPTION = 5
MALFORMED_OPTION = 6
NETWORK_FAILURE = 7
NO_RESOURCES = 8
UNSUPP_PROTOCOL = 9
USER_EX_QUOTA = 10
CANNOT_PROVIDE_EXTERNAL = 11
ADDRESS_MISMATCH = 12
EXCESSIVE_REMOTE_PEERS = 13

#: Errors that clear soon (P13); every other non-zero code is a long one.  CANNOT_PROVIDE_EXTERNAL
#: depends on the reason, which the message does not carry, so it counts as short.
SHORT_ERRORS = frozenset({NETWORK_FAILURE, NO_RESOURCES, USER_EX_QUOTA, CANNOT_PROVIDE_EXTERNAL})

# Option codes (P17-P19): known by number only, never sent by txnatpmp.
OPTION_THIRD_PARTY = 1
OPTION_PREFER_FAILURE = 2
OPTION_FILTER = 3

_REQUEST_HEADER = struct.Struct("!BBHI16s")  # version, R|opcode, reserved, lifetime, client IP
_RESPONSE_HEADER = struct.Struct("!BBBBII12x")  # version, R|opcode, -, result, lifetime, epoch
_MAP_BODY = struct.Struct("!12sB3xHH16s")  # nonce, protocol, internal, external, address
_OPTION_HEADER = struct.Struct("!BBH")

_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


def encode_address(address: str) -> bytes:
    """
    The 16 bytes of an address field: IPv4 as C{::ffff:a.b.c.d} (so C{0.0.0.0} is
    C{::ffff:0:0}), IPv6 as itself (P06).

    @raise ValueError: if C{address} is not an IP address.
    """
    # inet_pton, not ipaddress: this runs for every request, and is 100 times faster.
    try:
        return _MAPPED_PREFIX + socket.inet_pton(socket.AF_INET, address)
    except (OSError, TypeError):
        pass
    try:
        return socket.inet_pton(socket.AF_INET6, address)
    except (OSError, TypeError):
        raise ValueError(f"not an IP address: {address!r}") from None


def decode_address(data: bytes) -> str:
    """
    The text of a 16-byte address field: dotted IPv4 only when all 96 leading bits are those of
    an IPv4-mapped address (P06), IPv6 otherwise.
    """
    if len(data) != 16:
        raise DecodeError(f"address field of {len(data)} bytes")
    if data[:12] == _MAPPED_PREFIX:
        return socket.inet_ntop(socket.AF_INET, data[12:])
    return str(ipaddress.IPv6Address(data))


def unspecified_address(family_of: str) -> str:
    """The all-zero address of C{family_of}'s family: C{0.0.0.0} or C{::} (P23, P29)."""
    return "::" if ":" in family_of else "0.0.0.0"


def _int_in(name: str, low: int, high: int) -> Callable[[Any, Any, Any], None]:
    def check(instance: object, attribute: object, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")

    return check


def _is_address(instance: object, attribute: Any, value: str) -> None:
    try:
        encode_address(value)
    except ValueError:
        raise ValueError(f"{attribute.name} must be an IP address, not {value!r}") from None


def _is_nonce(instance: object, attribute: object, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 12:
        raise ValueError(f"a PCP nonce is 12 bytes, not {value!r}")


@frozen
class Option:
    """
    One option (P14): C{code} (128 and up are optional ones) and its data, padded with zeros
    to a multiple of 4 on the wire.
    """

    code: int = field(validator=_int_in("option code", 0, 255))
    data: bytes = b""

    @property
    def optional(self) -> bool:
        """Whether a server that does not know it may ignore it (RFC 6887 section 7.3)."""
        return self.code >= 128


Options = tuple[Option, ...]


@frozen
class AnnounceRequest:
    """A solicited ANNOUNCE (P33): is a PCP server there, and what is its epoch?"""

    client_address: str = field(validator=_is_address)
    lifetime: int = field(default=0, validator=_int_in("lifetime", 0, 0xFFFFFFFF))
    options: Options = ()


@frozen
class MapRequest:
    """
    Create, renew or (with lifetime 0) delete a mapping (P20).

    @ivar protocol: The IANA protocol number (6 TCP, 17 UDP).
    @ivar external_port: The suggested external port, 0 for no preference (P23).
    @ivar external_address: The suggested external address, all-zero for no preference.
    """

    nonce: bytes = field(validator=_is_nonce)
    protocol: int = field(validator=_int_in("protocol", 0, 255))
    internal_port: int = field(validator=_int_in("internal port", 0, 0xFFFF))
    external_port: int = field(validator=_int_in("external port", 0, 0xFFFF))
    external_address: str = field(validator=_is_address)
    lifetime: int = field(validator=_int_in("lifetime", 0, 0xFFFFFFFF))
    client_address: str = field(validator=_is_address)
    options: Options = ()


@frozen
class OtherRequest:
    """A version-2 request with an opcode txnatpmp does not model (PEER, unknown ones)."""

    opcode: int
    lifetime: int
    client_address: str
    body: bytes


@frozen
class AnnounceResponse:
    """The answer to an ANNOUNCE, or an unsolicited one (P33, P34)."""

    result: int
    lifetime: int
    epoch: int
    options: Options = ()


@frozen
class MapResponse:
    """
    The answer to a L{MapRequest}, or an unsolicited Mapping Update (P35): the same body with
    the I{assigned} external port and address.
    """

    result: int
    lifetime: int
    epoch: int
    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_address: str
    options: Options = ()


@frozen
class OtherResponse:
    """A version-2 response with an opcode other than ANNOUNCE and MAP (PEER, or an echo)."""

    opcode: int
    result: int
    lifetime: int
    epoch: int


@frozen
class VersionRejected:
    """
    UNSUPP_VERSION, recognised before any other check (P04, P42): a server that does not speak
    the version asked.  C{version} 0 is a NAT-PMP-only server (its 8-byte reply, P46); 1 is a
    draft-era server; 2 answers a request of a later version.
    """

    version: int
    opcode: int
    epoch: int
    lifetime: int = 0


Request = Union[AnnounceRequest, MapRequest, OtherRequest]
Response = Union[AnnounceResponse, MapResponse, OtherResponse, VersionRejected]


def _encode_options(options: Options) -> bytes:
    parts = []
    for option in options:
        padding = -len(option.data) % 4
        parts.append(_OPTION_HEADER.pack(option.code, 0, len(option.data)) + option.data
                     + b"\x00" * padding)
    return b"".join(parts)


def _request_header(opcode: int, lifetime: int, client_address: str) -> bytes:
    return _REQUEST_HEADER.pack(VERSION, opcode, 0, lifetime, encode_address(client_address))


def _response_header(opcode: int, result: int, lifetime: int, epoch: int) -> bytes:
    return _RESPONSE_HEADER.pack(VERSION, RESPONSE_BIT | opcode, 0, result, lifetime, epoch)


def _map_body(message: MapRequest | MapResponse) -> bytes:
    return _MAP_BODY.pack(message.nonce, message.protocol, message.internal_port,
                          message.external_port, encode_address(message.external_address))


def encode(message: Request | Response) -> bytes:
    """
    Return the bytes of a PCP message.

    @raise ValueError: if the message would exceed 1100 bytes (P14).
    """
    if isinstance(message, AnnounceRequest):
        data = (_request_header(OP_ANNOUNCE, message.lifetime, message.client_address)
                + _encode_options(message.options))
    elif isinstance(message, MapRequest):
        data = (_request_header(OP_MAP, message.lifetime, message.client_address)
                + _map_body(message) + _encode_options(message.options))
    elif isinstance(message, OtherRequest):
        data = _request_header(message.opcode, message.lifetime, message.client_address) + (
            message.body)
    elif isinstance(message, AnnounceResponse):
        data = (_response_header(OP_ANNOUNCE, message.result, message.lifetime, message.epoch)
                + _encode_options(message.options))
    elif isinstance(message, MapResponse):
        data = (_response_header(OP_MAP, message.result, message.lifetime, message.epoch)
                + _map_body(message) + _encode_options(message.options))
    elif isinstance(message, OtherResponse):
        data = _response_header(message.opcode, message.result, message.lifetime, message.epoch)
    elif isinstance(message, VersionRejected):
        if message.version == NATPMP_VERSION:  # RFC 6886's 8-byte reply
            return struct.pack("!BBHI", 0, RESPONSE_BIT | message.opcode, UNSUPP_VERSION,
                               message.epoch)
        data = _RESPONSE_HEADER.pack(message.version, RESPONSE_BIT | message.opcode, 0,
                                     UNSUPP_VERSION, message.lifetime, message.epoch)
    else:
        raise TypeError(f"not a PCP message: {message!r}")
    if len(data) > MAX_LENGTH:
        raise ValueError(f"a PCP message of {len(data)} bytes exceeds {MAX_LENGTH}")
    return data


def decode_options(data: bytes) -> Options:
    """
    Read the options after a header and opcode body.  Every option is returned, known or not,
    for the caller to skip (P15); an option running past the end ends the list, as the
    response's meaning does not depend on options txnatpmp never sends.
    """
    options = []
    offset = 0
    while len(data) - offset >= _OPTION_HEADER.size:
        code, _reserved, length = _OPTION_HEADER.unpack_from(data, offset)
        start = offset + _OPTION_HEADER.size
        end = start + length
        if end > len(data):
            break
        options.append(Option(code, data[start:end]))
        offset = end + (-length % 4)
    return tuple(options)


def decode_response(data: bytes) -> Response:
    """
    Parse a datagram from a PCP server, in RFC 6887 section 8.3's order (P03, P04): at least
    4 bytes with the R bit; then UNSUPP_VERSION, whatever the version and length; then version
    2 only, 24 to 1100 bytes in multiples of 4.

    @raise DecodeError: for anything a client must silently drop.
    """
    if len(data) < 4:
        raise DecodeError(f"response too short: {len(data)} bytes")
    version, opcode_byte, result = data[0], data[1], data[3]
    if not opcode_byte & RESPONSE_BIT:
        raise DecodeError("the R bit is clear: a request, not a response")
    opcode = opcode_byte & ~RESPONSE_BIT
    if result == UNSUPP_VERSION and (version != NATPMP_VERSION or data[2] == 0):
        return _version_rejected(data, version, opcode)
    if version != VERSION:
        # Among them miniupnpd's version-0 reply to malformed PCP (P44): not a verdict.
        raise DecodeError(f"version {version} response with result {result}")
    if not HEADER_SIZE <= len(data) <= MAX_LENGTH or len(data) % 4:
        raise DecodeError(f"PCP response of {len(data)} bytes")
    _, _, _, result, lifetime, epoch = _RESPONSE_HEADER.unpack_from(data)
    if opcode == OP_ANNOUNCE:
        return AnnounceResponse(result, lifetime, epoch, decode_options(data[HEADER_SIZE:]))
    if opcode == OP_MAP:
        if len(data) < HEADER_SIZE + MAP_BODY_SIZE:
            raise DecodeError(f"MAP response of {len(data)} bytes")
        nonce, protocol, internal, external, address = _MAP_BODY.unpack_from(data, HEADER_SIZE)
        options = decode_options(data[HEADER_SIZE + MAP_BODY_SIZE:])
        return MapResponse(result, lifetime, epoch, nonce, protocol, internal, external,
                           decode_address(address), options)
    return OtherResponse(opcode, result, lifetime, epoch)


def _version_rejected(data: bytes, version: int, opcode: int) -> VersionRejected:
    if version == NATPMP_VERSION:  # NAT-PMP: epoch in bytes 4-7 when present (RFC 6886 3.5)
        epoch = struct.unpack_from("!I", data, 4)[0] if len(data) >= 8 else 0
        return VersionRejected(version, opcode, epoch)
    lifetime, epoch = struct.unpack_from("!II", data, 4) if len(data) >= 12 else (0, 0)
    return VersionRejected(version, opcode, epoch, lifetime)


class MalformedPCPRequest(DecodeError):
    """
    A datagram a PCP server must answer with an error: C{result} says which (a server's view,
    for L{txnatpmp.testing.FakeGateway}).
    """

    def __init__(self, result: int, message: str) -> None:
        super().__init__(message)
        self.result = result


def decode_request(data: bytes) -> Request:
    """
    Parse a version-2 request, as a server does (RFC 6887 section 8.3).

    @raise MalformedPCPRequest: with the result code a server answers.
    @raise DecodeError: for what a server silently drops (under 2 bytes, or the R bit set).
    """
    if len(data) < 2 or data[1] & RESPONSE_BIT:
        raise DecodeError("not a PCP request")
    if data[0] != VERSION:
        raise MalformedPCPRequest(UNSUPP_VERSION, f"version {data[0]}")
    if not HEADER_SIZE <= len(data) <= MAX_LENGTH or len(data) % 4:
        raise MalformedPCPRequest(MALFORMED_REQUEST, f"request of {len(data)} bytes")
    _, opcode, _, lifetime, client = _REQUEST_HEADER.unpack_from(data)
    client_address = decode_address(client)
    if opcode == OP_ANNOUNCE:
        return AnnounceRequest(client_address, lifetime, _strict_options(data[HEADER_SIZE:]))
    if opcode == OP_MAP:
        if len(data) < HEADER_SIZE + MAP_BODY_SIZE:
            raise MalformedPCPRequest(MALFORMED_REQUEST, f"MAP request of {len(data)} bytes")
        nonce, protocol, internal, external, address = _MAP_BODY.unpack_from(data, HEADER_SIZE)
        return MapRequest(nonce, protocol, internal, external, decode_address(address), lifetime,
                          client_address, _strict_options(data[HEADER_SIZE + MAP_BODY_SIZE:]))
    return OtherRequest(opcode, lifetime, client_address, data[HEADER_SIZE:])


def _strict_options(data: bytes) -> Options:
    options = decode_options(data)
    used = sum(_OPTION_HEADER.size + len(o.data) + (-len(o.data) % 4) for o in options)
    if used != len(data):
        raise MalformedPCPRequest(MALFORMED_OPTION, "an option runs past the end of the request")
    return options

