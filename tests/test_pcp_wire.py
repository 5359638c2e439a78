"""
PCP (RFC 6887) messages: byte vectors, the order of checks, options, addresses and result codes.
Tests are named after the requirements in shared/rfc6887-client.md.
"""

from __future__ import annotations

import struct

import attrs

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txnatpmp import (
    AddressMismatch,
    MalformedOption,
    MalformedRequest,
    NetworkFailure,
    NotAuthorized,
    OutOfResources,
    ResultError,
    UnsupportedOpcode,
    UnsupportedOption,
    UnsupportedVersion,
)
from txnatpmp._errors import DecodeError, error_for_result, pcp_error_for_result
from txnatpmp._pcp.wire import (
    AnnounceRequest,
    AnnounceResponse,
    MapRequest,
    MapResponse,
    MalformedPCPRequest,
    Option,
    OtherResponse,
    VersionRejected,
    decode_address,
    decode_request,
    decode_response,
    encode,
    encode_address,
)

NONCE = bytes(range(1, 13))
MAPPED_ZERO = bytes(10) + b"\xff\xff" + bytes(4)


def map_request(**changes: object) -> MapRequest:
    values: dict[str, object] = dict(nonce=NONCE, protocol=6, internal_port=8080,
                                     external_port=0, external_address="0.0.0.0",
                                     lifetime=7200, client_address="198.51.100.10")
    values.update(changes)
    return MapRequest(**values)  # type: ignore[arg-type]


def map_response(**changes: object) -> MapResponse:
    values: dict[str, object] = dict(result=0, lifetime=7200, epoch=42, nonce=NONCE, protocol=6,
                                     internal_port=8080, external_port=8080,
                                     external_address="80.100.100.1")
    values.update(changes)
    return MapResponse(**values)  # type: ignore[arg-type]


class Requests(SynchronousTestCase):
    def test_P01_P09_announce_request_is_a_24_byte_version_2_header(self) -> None:
        data = encode(AnnounceRequest("198.51.100.10"))
        self.assertEqual(data, bytes((2, 0, 0, 0)) + bytes(4)
                         + bytes(10) + b"\xff\xff" + bytes((198, 51, 100, 10)))

    def test_P09_P20_map_request_is_60_bytes_big_endian(self) -> None:
        data = encode(map_request(external_port=40000, lifetime=0x01020304))
        self.assertEqual(len(data), 60)
        self.assertEqual(data[:4], bytes((2, 1, 0, 0)))
        self.assertEqual(data[4:8], bytes((1, 2, 3, 4)))
        self.assertEqual(data[24:36], NONCE)
        self.assertEqual(data[36:40], bytes((6, 0, 0, 0)))
        self.assertEqual(struct.unpack("!HH", data[40:44]), (8080, 40000))
        self.assertEqual(data[44:60], MAPPED_ZERO)

    def test_P06_addresses_are_ipv4_mapped(self) -> None:
        self.assertEqual(encode_address("1.2.3.4"), bytes(10) + b"\xff\xff\x01\x02\x03\x04")
        self.assertEqual(encode_address("0.0.0.0"), MAPPED_ZERO)
        self.assertEqual(encode_address("::"), bytes(16))
        self.assertEqual(encode_address("2001:db8::1"), bytes.fromhex("20010db8" + "0" * 22 + "01"))
        self.assertRaises(ValueError, encode_address, "gateway.local")

    def test_P06_decoding_checks_all_96_leading_bits(self) -> None:
        self.assertEqual(decode_address(encode_address("80.100.100.1")), "80.100.100.1")
        self.assertEqual(decode_address(MAPPED_ZERO), "0.0.0.0")
        not_mapped = b"\x01" + bytes(9) + b"\xff\xff\x01\x02\x03\x04"
        self.assertEqual(decode_address(not_mapped), "100::ffff:102:304")
        self.assertEqual(decode_address(bytes(12) + b"\x01\x02\x03\x04"), "::102:304")

    def test_P14_options_are_padded_and_requests_capped_at_1100_bytes(self) -> None:
        data = encode(map_request(options=(Option(200, b"\x01"),)))
        self.assertEqual(data[60:], bytes((200, 0, 0, 1, 1, 0, 0, 0)))
        self.assertEqual(len(encode(map_request(options=(Option(200, bytes(1036)),)))), 1100)
        self.assertRaises(ValueError, encode, map_request(options=(Option(200, bytes(1037)),)))

    def test_P20_bad_values_raise(self) -> None:
        for changes in [dict(nonce=b"short"), dict(internal_port=70000), dict(lifetime=-1),
                        dict(external_address="nowhere"), dict(protocol=256)]:
            self.assertRaises(ValueError, map_request, **changes)

    def test_server_view_of_requests(self) -> None:
        request = map_request(options=(Option(3, bytes(20)),))
        self.assertEqual(decode_request(encode(request)), request)
        self.assertEqual(decode_request(encode(AnnounceRequest("::"))), AnnounceRequest("::"))
        for data, result in [
            (bytes((1, 1)) + bytes(58), 1),  # version 1
            (encode(map_request())[:48], 3),  # MAP cut short
            (encode(map_request()) + b"\x00", 3),  # not a multiple of 4
            (encode(map_request()) + bytes((99, 0, 0, 8, 0, 0, 0, 0)), 6),  # option overruns
        ]:
            error = self.assertRaises(MalformedPCPRequest, decode_request, data)
            self.assertEqual(error.result, result)
        self.assertRaises(DecodeError, decode_request, b"\x02")


class Responses(SynchronousTestCase):
    def test_P10_P11_map_response(self) -> None:
        data = bytearray(encode(map_response()))
        self.assertEqual(len(data), 60)
        self.assertEqual((data[0], data[1], data[3]), (2, 0x81, 0))
        data[2] = 0xEE  # reserved bits are ignored
        data[12:24] = b"\xab" * 12
        data[37:40] = b"\xcd" * 3
        self.assertEqual(decode_response(bytes(data)), map_response())

    def test_P10_announce_response(self) -> None:
        data = bytes((2, 0x80, 0, 0)) + struct.pack("!II", 500, 1234) + bytes(12)
        self.assertEqual(decode_response(data), AnnounceResponse(0, 500, 1234))

    def test_P11_other_opcodes(self) -> None:
        data = bytes((2, 0x85, 0, 4)) + bytes(20)
        self.assertEqual(decode_response(data), OtherResponse(5, 4, 0, 0))

    def test_P03_short_datagrams_and_requests_are_dropped(self) -> None:
        for data in [b"", b"\x02", b"\x02\x81\x00", encode(map_request())]:
            self.assertRaises(DecodeError, decode_response, data)

    def test_P04_P42_unsupported_version_is_recognised_before_the_length_check(self) -> None:
        natpmp = struct.pack("!BBHI", 0, 0x80, 1, 77)  # 8 bytes: a NAT-PMP-only server
        self.assertEqual(decode_response(natpmp), VersionRejected(0, 0, 77))
        errata = struct.pack("!BBHI", 0, 0x81, 1, 77)  # opcode 0x80 + op (errata 3618)
        self.assertEqual(decode_response(errata), VersionRejected(0, 1, 77))
        self.assertEqual(decode_response(natpmp[:4]), VersionRejected(0, 0, 0))
        draft = bytes((1, 0x81, 0, 1)) + struct.pack("!II", 0, 5)  # 12 bytes, version 1
        self.assertEqual(decode_response(draft), VersionRejected(1, 1, 5, 0))

    def test_P04_length_rules_after_the_version(self) -> None:
        good = encode(map_response())
        for data in [good[:20], good + b"\x00\x00", good + bytes(1044)]:
            self.assertRaises(DecodeError, decode_response, data)
        self.assertIsInstance(decode_response(good + bytes(1040)), MapResponse)  # 1100 bytes
        self.assertRaises(DecodeError, decode_response, good[:56])  # MAP without its body

    def test_P44_version_0_with_another_result_is_no_verdict(self) -> None:
        miniupnpd_malformed = bytes((0, 0x80, 0, 3)) + bytes(20)
        self.assertRaises(DecodeError, decode_response, miniupnpd_malformed)
        natpmp_success = struct.pack("!BBHI", 0, 0x80, 0, 5) + bytes(4)
        self.assertRaises(DecodeError, decode_response, natpmp_success)

    def test_P15_unknown_options_are_skipped_mandatory_range_included(self) -> None:
        options = (Option(99, bytes(4)), Option(200, b"\x01"), Option(3, bytes(20)))
        data = encode(map_response(options=options))
        response = decode_response(data)
        assert isinstance(response, MapResponse)
        self.assertEqual(response.options, options)
        self.assertEqual(response.external_port, 8080)
        overrun = encode(map_response()) + bytes((99, 0, 0, 40, 0, 0, 0, 0))
        self.assertEqual(decode_response(overrun), map_response())

    @given(st.binary(max_size=1200))
    def test_P03_any_datagram_decodes_or_raises_decode_error(self, data: bytes) -> None:
        try:
            decode_response(data)
        except DecodeError:
            pass

    @given(st.binary(min_size=12, max_size=12), st.sampled_from([6, 17]),
           st.integers(1, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF),
           st.integers(0, 0xFFFFFFFF), st.ip_addresses().map(str))
    def test_map_response_round_trip(self, nonce: bytes, protocol: int, internal: int,
                                     external: int, lifetime: int, epoch: int,
                                     address: str) -> None:
        response = map_response(nonce=nonce, protocol=protocol, internal_port=internal,
                                external_port=external, lifetime=lifetime, epoch=epoch,
                                external_address=address)
        decoded = decode_response(encode(response))
        assert isinstance(decoded, MapResponse)
        self.assertEqual(decoded.external_address, decode_address(encode_address(address)))
        self.assertEqual(decoded, attrs.evolve(response,
                                                external_address=decoded.external_address))


class ResultCodes(SynchronousTestCase):
    def test_P12_codes_raise_the_shared_classes_where_the_meaning_is_the_same(self) -> None:
        for code, cls in [(1, UnsupportedVersion), (2, NotAuthorized), (3, MalformedRequest),
                          (4, UnsupportedOpcode), (5, UnsupportedOption), (6, MalformedOption),
                          (7, NetworkFailure), (8, OutOfResources), (12, AddressMismatch)]:
            error = pcp_error_for_result(code, 30)
            self.assertIsInstance(error, cls)
            self.assertEqual((error.code, error.protocol, error.lifetime), (code, "pcp", 30))
        unknown = pcp_error_for_result(77, 0)
        self.assertEqual((type(unknown), unknown.code), (ResultError, 77))

    def test_P12_natpmp_codes_keep_their_meaning(self) -> None:
        self.assertIsInstance(error_for_result(3), NetworkFailure)
        self.assertIsInstance(error_for_result(4), OutOfResources)
        self.assertEqual((error_for_result(3).protocol, error_for_result(3).lifetime),
                         ("natpmp", None))
        self.assertEqual(str(error_for_result(2)), "gateway answered with result 2: "
                         "not authorized or refused")

    def test_P07_address_mismatch_says_another_nat_sits_in_between(self) -> None:
        self.assertIn("another NAT sits between you and the gateway",
                      str(pcp_error_for_result(12, 0)))

    def test_P42_unsupported_version_carries_the_server_version(self) -> None:
        error = UnsupportedVersion(protocol="pcp", server_version=0)
        self.assertEqual((error.code, error.server_version), (1, 0))
        self.assertIsNone(UnsupportedVersion().server_version)
