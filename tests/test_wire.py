"""
The wire format (R01-R06, R24) on fixed byte vectors, and encode/decode round trips.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txnatpmp import NotAuthorized, ResultError, UnsupportedOpcode, UnsupportedVersion
from txnatpmp._errors import DecodeError, error_for_result
from txnatpmp._wire import (
    ErrorResponse,
    ExternalAddressRequest,
    ExternalAddressResponse,
    MappingRequest,
    MappingResponse,
    PCPAnnounce,
    answers,
    decode_announcement,
    decode_request,
    decode_response,
    encode,
)

ports = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
protocols = st.sampled_from(["tcp", "udp"])
addresses = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))


class RequestVectors(SynchronousTestCase):
    def test_R01_external_address_request_is_two_bytes(self) -> None:
        self.assertEqual(encode(ExternalAddressRequest()), b"\x00\x00")

    def test_R01_R03_mapping_request_big_endian(self) -> None:
        self.assertEqual(
            encode(MappingRequest("tcp", 0x1234, 0xABCD, 7200)),
            bytes.fromhex("0002 0000 1234 abcd 00001c20"),
        )
        self.assertEqual(encode(MappingRequest("udp", 5353, 0, 60))[:2], b"\x00\x01")

    def test_R03_mapping_request_rejects_bad_values(self) -> None:
        for args in [
            ("sctp", 1, 0, 1),
            ("tcp", -1, 0, 1),
            ("tcp", 65536, 0, 1),
            ("tcp", 1, 70000, 1),
            ("tcp", 1, 0, -1),
            ("tcp", 1, 0, 2**32),
            ("tcp", True, 0, 1),
            ("tcp", "80", 0, 1),
        ]:
            with self.assertRaises(ValueError, msg=repr(args)):
                MappingRequest(*args)  # type: ignore[arg-type]


class ResponseVectors(SynchronousTestCase):
    def test_R02_external_address_response(self) -> None:
        data = bytes.fromhex("0080 0000 00000e10 50646401")
        self.assertEqual(decode_response(data), ExternalAddressResponse(0, 3600, "80.100.100.1"))

    def test_R04_mapping_response(self) -> None:
        data = bytes.fromhex("0082 0000 0000002a 1f90 2328 00000e10")
        self.assertEqual(decode_response(data), MappingResponse("tcp", 0, 42, 8080, 9000, 3600))
        udp = bytes.fromhex("0081 0002 0000002a 1f90 0000 00000000")
        self.assertEqual(decode_response(udp), MappingResponse("udp", 2, 42, 8080, 0, 0))

    def test_R05_result_codes_map_to_exceptions(self) -> None:
        self.assertIsInstance(error_for_result(1), UnsupportedVersion)
        self.assertIsInstance(error_for_result(2), NotAuthorized)
        self.assertIsInstance(error_for_result(5), UnsupportedOpcode)
        for code in range(1, 6):
            self.assertEqual(error_for_result(code).code, code)
        unknown = error_for_result(77)
        self.assertIs(type(unknown), ResultError)
        self.assertEqual(unknown.code, 77)
        self.assertIn("77", str(unknown))

    def test_R06_short_unsupported_version_reply_with_opcode_0_or_128(self) -> None:
        for opcode in (0, 128):
            data = bytes((0, opcode)) + bytes.fromhex("0001 00000005")
            self.assertEqual(decode_response(data), ErrorResponse(opcode, 1, 5))
            response = decode_response(data)
            self.assertTrue(answers(MappingRequest("tcp", 80, 0, 60), response))
            self.assertTrue(answers(ExternalAddressRequest(), response))

    def test_R06_matching_by_opcode_and_internal_port(self) -> None:
        request = MappingRequest("tcp", 8080, 0, 3600)
        self.assertTrue(answers(request, MappingResponse("tcp", 0, 1, 8080, 9000, 3600)))
        self.assertTrue(answers(request, MappingResponse("tcp", 2, 1, 8080, 0, 0)))
        self.assertFalse(answers(request, MappingResponse("udp", 0, 1, 8080, 9000, 3600)))
        self.assertFalse(answers(request, MappingResponse("tcp", 0, 1, 8081, 9000, 3600)))
        self.assertFalse(answers(request, ExternalAddressResponse(0, 1, "80.100.100.1")))
        self.assertFalse(answers(ExternalAddressRequest(), MappingResponse("tcp", 0, 1, 8080, 1, 1)))

    def test_R06_delete_and_create_answers_are_not_confused(self) -> None:
        create = MappingRequest("tcp", 8080, 0, 3600)
        delete = MappingRequest("tcp", 8080, 0, 0)
        self.assertFalse(answers(create, MappingResponse("tcp", 0, 1, 8080, 0, 0)))
        self.assertFalse(answers(delete, MappingResponse("tcp", 0, 1, 8080, 8080, 3600)))
        self.assertTrue(answers(delete, MappingResponse("tcp", 0, 1, 8080, 0, 0)))

    def test_R12_malformed_responses(self) -> None:
        for data in [
            b"",
            b"\x00\x80",
            bytes.fromhex("0080 0000 00000001"),  # 8 bytes claiming success
            bytes.fromhex("0080 0000 00000001 50646401 00"),  # 13 bytes
            bytes.fromhex("0082 0000 00000001 1f90 2328"),  # truncated mapping
            bytes.fromhex("0082 0000 00000001 1f90 2328 00000e10 00"),  # oversized
            bytes.fromhex("0083 0000 00000001 1f90 2328 00000e10"),  # unknown opcode
            bytes.fromhex("0002 0000 1f90 2328 00000e10"),  # a request, not a response
            bytes.fromhex("0085 0001 00000001"),  # short reply to an opcode never sent
        ]:
            with self.assertRaises(DecodeError, msg=data.hex()):
                decode_response(data)

    def test_R24_other_versions_are_not_natpmp(self) -> None:
        pcp = bytes.fromhex("0280 0000 00000000 00000005") + bytes(12)
        for data in [pcp, bytes.fromhex("0180 0000 00000e10 50646401")]:
            with self.assertRaises(DecodeError):
                decode_response(data)


class Announcements(SynchronousTestCase):
    def test_R22_natpmp_announcement(self) -> None:
        data = bytes.fromhex("0080 0000 00000000 50646401")
        self.assertEqual(decode_announcement(data), ExternalAddressResponse(0, 0, "80.100.100.1"))

    def test_R23_pcp_announce(self) -> None:
        data = bytes.fromhex("0280 0000 00000000 00000007") + bytes(12)
        self.assertEqual(decode_announcement(data), PCPAnnounce(0, 7))
        self.assertEqual(encode(PCPAnnounce(0, 7)), data)

    def test_R23_other_pcp_messages_are_rejected(self) -> None:
        for data in [
            bytes.fromhex("0281 0000 00000000 00000007") + bytes(12),  # MAP response
            bytes.fromhex("0280 0000 00000000 00000007") + bytes(11),  # odd length
            bytes.fromhex("0280 0000 00000000"),
            bytes.fromhex("0082 0000 0000002a 1f90 2328 00000e10"),  # mapping response
        ]:
            with self.assertRaises(DecodeError, msg=data.hex()):
                decode_announcement(data)


class Requests(SynchronousTestCase):
    def test_decode_request_rejects_wrong_lengths(self) -> None:
        for data in [b"\x00", b"\x00\x00\x00", bytes.fromhex("0002 0000 1f90"), b"\x02\x00"]:
            with self.assertRaises(DecodeError):
                decode_request(data)


class RoundTrips(SynchronousTestCase):
    @given(protocols, ports, ports, u32)
    def test_mapping_request(self, protocol: str, internal: int, external: int, life: int) -> None:
        request = MappingRequest(protocol, internal, external, life)  # type: ignore[arg-type]
        self.assertEqual(decode_request(encode(request)), request)

    @given(st.integers(0, 0xFFFF), u32, addresses)
    def test_external_address_response(self, result: int, epoch: int, address: str) -> None:
        response = ExternalAddressResponse(result, epoch, address)
        self.assertEqual(decode_response(encode(response)), response)

    @given(protocols, st.integers(0, 0xFFFF), u32, ports, ports, u32)
    def test_mapping_response(
        self, protocol: str, result: int, epoch: int, internal: int, external: int, life: int
    ) -> None:
        response = MappingResponse(protocol, result, epoch, internal, external, life)  # type: ignore[arg-type]
        self.assertEqual(decode_response(encode(response)), response)
