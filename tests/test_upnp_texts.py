"""
UPnP-IGD texts, sans-IO: SSDP search and answers, device descriptions, SOAP requests, responses
and faults, and the untrusted-input rules (size caps, no DOCTYPE or entities, LOCATION only on
the gateway).  The miniupnpd texts in tests/fixtures/upnp were captured from the lab's
miniupnpd 2.3.1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txnatpmp import (
    DecodeError,
    NotAuthorized,
    OutOfResources,
    PortConflict,
    ResultError,
    UPnPFault,
)
from txnatpmp._upnp import soap
from txnatpmp._upnp.description import (
    MAX_DESCRIPTION,
    Service,
    choose_service,
    parse_description,
)
from txnatpmp._upnp.ssdp import (
    IGD_SEARCH_TARGET,
    check_location,
    decode_answer,
    encode_search,
)

FIXTURES = Path(__file__).parent / "fixtures" / "upnp"
LOCATION = "http://198.51.100.1:45063/rootDesc.xml"
WANIP2 = "urn:schemas-upnp-org:service:WANIPConnection:2"
WANIP1 = "urn:schemas-upnp-org:service:WANIPConnection:1"
WANPPP1 = "urn:schemas-upnp-org:service:WANPPPConnection:1"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# SSDP


def test_search_asks_for_an_igd_with_the_headers_uda_requires() -> None:
    text = encode_search(host="198.51.100.1:1900").decode()
    assert text.startswith("M-SEARCH * HTTP/1.1\r\n") and text.endswith("\r\n\r\n")
    assert "HOST: 198.51.100.1:1900\r\n" in text
    assert 'MAN: "ssdp:discover"\r\n' in text
    assert "MX: 1\r\n" in text
    assert f"ST: {IGD_SEARCH_TARGET}\r\n" in text


def test_miniupnpd_answer_gives_location_and_bootid() -> None:
    answer = decode_answer(fixture("miniupnpd-ssdp-answer.txt"))
    assert answer.location.startswith("http://198.51.100.1:")
    assert answer.location.endswith("/rootDesc.xml")
    assert answer.target == IGD_SEARCH_TARGET
    assert "MiniUPnPd/2.3.1" in answer.server
    assert answer.boot_id is not None and answer.boot_id > 0


def test_answer_headers_match_in_any_case_and_bare_newlines() -> None:
    answer = decode_answer(b"HTTP/1.1 200 OK\nLocation: http://198.51.100.1/d.xml\n"
                           b"bootid.upnp.org: 7\nst: x\n\n")
    assert (answer.location, answer.boot_id, answer.target) == ("http://198.51.100.1/d.xml", 7, "x")


@pytest.mark.parametrize("data", [
    b"NOTIFY * HTTP/1.1\r\nLOCATION: http://198.51.100.1/d.xml\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nLOCATION: http://198.51.100.1/d.xml\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nST: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nLOCATION: http://198.51.100.1/\xff\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nLOCATION: http://198.51.100.1/d.xml\r\nX: " + b"a" * 2048 + b"\r\n\r\n",
])
def test_what_is_not_an_answer_is_refused(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_answer(data)


def test_a_silly_bootid_is_no_bootid() -> None:
    answer = decode_answer(b"HTTP/1.1 200 OK\r\nLOCATION: http://198.51.100.1/\r\n"
                           b"BOOTID.UPNP.ORG: 99999999999999999999\r\n\r\n")
    assert answer.boot_id is None


def test_location_on_the_gateway_is_accepted() -> None:
    assert check_location(LOCATION, "198.51.100.1") == LOCATION
    bare = "http://198.51.100.1/d.xml"
    assert check_location(bare, "198.51.100.1") == bare


@pytest.mark.parametrize("location", [
    "http://198.51.100.66:45063/rootDesc.xml",           # another host on the LAN
    "https://198.51.100.1:45063/rootDesc.xml",           # not plain http
    "file:///etc/passwd",
    "http://user:secret@198.51.100.1:45063/rootDesc.xml",
    "http://router.lan:45063/rootDesc.xml",              # a name, resolved who knows where
    "http://198.51.100.1:0/rootDesc.xml",
    "http://198.51.100.1:99999/rootDesc.xml",
    "http://198.51.100.1.evil.example/rootDesc.xml",
    "http://[::1]:80/rootDesc.xml",
    "http://198.51.100.1/" + "a" * 600,
    "http://198.51.100.1/\x00",
])
def test_location_elsewhere_is_refused(location: str) -> None:
    with pytest.raises(DecodeError):
        check_location(location, "198.51.100.1")


# Descriptions


def test_miniupnpd_igd2_description_gives_wanipconnection2() -> None:
    services = parse_description(fixture("miniupnpd-v2-rootDesc.xml"), LOCATION)
    types = [s.service_type.rpartition(":service:")[2] for s in services]
    assert types == ["Layer3Forwarding:1", "DeviceProtection:1", "WANCommonInterfaceConfig:1",
                     "WANIPConnection:2", "WANIPv6FirewallControl:1"]
    assert choose_service(services) == Service(WANIP2, "http://198.51.100.1:45063/ctl/IPConn")


def test_miniupnpd_forced_igd1_description_gives_wanipconnection1() -> None:
    services = parse_description(fixture("miniupnpd-v1-rootDesc.xml"), LOCATION)
    assert choose_service(services) == Service(WANIP1, "http://198.51.100.1:45063/ctl/IPConn")


def description(*services: tuple[str, str], url_base: str = "", prefix: str = "") -> bytes:
    """A description nesting C{services} (type, control URL) two devices deep."""
    p = f"{prefix}:" if prefix else ""
    items = "".join(f"<{p}service><{p}serviceType>{t}</{p}serviceType>"
                    f"<{p}controlURL>{u}</{p}controlURL></{p}service>" for t, u in services)
    xmlns = f'xmlns:{prefix}="urn:schemas-upnp-org:device-1-0"' if prefix else \
        'xmlns="urn:schemas-upnp-org:device-1-0"'
    base = f"<{p}URLBase>{url_base}</{p}URLBase>" if url_base else ""
    return (f'<?xml version="1.0"?><{p}root {xmlns}>{base}<{p}device><{p}deviceList><{p}device>'
            f"<{p}deviceList><{p}device><{p}serviceList>{items}</{p}serviceList></{p}device>"
            f"</{p}deviceList></{p}device></{p}deviceList></{p}device></{p}root>").encode()


@pytest.mark.parametrize("offered, chosen", [
    ([WANPPP1, WANIP1, WANIP2], WANIP2),
    ([WANPPP1, WANIP1], WANIP1),
    ([WANPPP1], WANPPP1),
    (["urn:schemas-upnp-org:service:WANIPConnection:3", WANIP1],
     "urn:schemas-upnp-org:service:WANIPConnection:3"),
    (["urn:schemas-upnp-org:service:Layer3Forwarding:1", "urn:example:service:WANIPConnection:2"],
     None),
])
def test_wanipconnection2_before_1_before_wanpppconnection1(offered: list[str],
                                                           chosen: str | None) -> None:
    services = parse_description(description(*[(t, f"/ctl/{i}") for i, t in enumerate(offered)]),
                                 LOCATION)
    best = choose_service(services)
    assert (best.service_type if best else None) == chosen


def test_elements_match_by_local_name_whatever_the_prefix() -> None:
    services = parse_description(description((WANIP1, "/c"), prefix="d"), LOCATION)
    assert services == [Service(WANIP1, "http://198.51.100.1:45063/c")]


def test_control_urls_resolve_against_urlbase_and_stay_on_the_device() -> None:
    data = description((WANIP1, "c1"), (WANIP2, "http://198.51.100.66/steal"),
                       (WANPPP1, "https://198.51.100.1/c3"),
                       url_base="http://198.51.100.1:5000/base/")
    assert parse_description(data, LOCATION) == [
        Service(WANIP1, "http://198.51.100.1:5000/base/c1")]


@pytest.mark.parametrize("data", [
    b'<?xml version="1.0"?><!DOCTYPE root [<!ENTITY a "b">]><root><device/></root>',
    b'<?xml version="1.0"?><!doctype root><root><device/></root>',
    b'<root><device/></root><!ENTITY a SYSTEM "file:///etc/passwd">',
    # billion laughs: refused before expat sees it
    b'<!DOCTYPE l [<!ENTITY l0 "ha"><!ENTITY l1 "&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;">]>'
    b"<root><device>&l1;</device></root>",
    '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE r><root><device/></root>'.encode("utf-16"),
    b"<root><device/></root>" + b" " * MAX_DESCRIPTION,
    b"<root><device>",
    b"<notroot><device/></notroot>",
    b"<root><specVersion/></root>",
    b"<root><device>" + b"<deviceList><device>" * 20 + b"</device></deviceList>" * 20
    + b"</device></root>",
])
def test_unsafe_or_wrong_descriptions_are_refused(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_description(data, LOCATION)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_raise_decode_error(data: bytes) -> None:
    for parse in (lambda: parse_description(data, LOCATION), lambda: decode_answer(data),
                  lambda: soap.decode_response(200, data, soap.get_external_ip_address(WANIP2)),
                  lambda: soap.decode_response(500, data, soap.get_external_ip_address(WANIP2))):
        try:
            parse()
        except (DecodeError, ResultError):
            pass


# SOAP


def test_action_request_names_the_service_and_escapes_arguments() -> None:
    action = soap.add_port_mapping(WANIP2, "tcp", 60010, 60010, "198.51.100.10", 600, "a<b&c")
    assert action.soap_action == f'"{WANIP2}#AddPortMapping"'
    name, arguments = soap.decode_request(action.encode())
    assert name == "AddPortMapping"
    assert arguments == {
        "NewRemoteHost": "", "NewExternalPort": "60010", "NewProtocol": "TCP",
        "NewInternalPort": "60010", "NewInternalClient": "198.51.100.10", "NewEnabled": "1",
        "NewPortMappingDescription": "a<b&c", "NewLeaseDuration": "600",
    }
    assert b"a&lt;b&amp;c" in action.encode()


def test_response_outputs_by_name() -> None:
    action = soap.add_any_port_mapping(WANIP2, "udp", 0, 5353, "198.51.100.10", 0, "x")
    body = soap.encode_response(WANIP2, "AddAnyPortMapping", [("NewReservedPort", "40000")])
    assert soap.decode_response(200, body, action) == {"NewReservedPort": "40000"}


def test_miniupnpd_style_response_with_prefixes() -> None:
    body = (b'<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/'
            b'envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            b'<u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:'
            b'WANIPConnection:2"><NewExternalIPAddress>80.100.100.1</NewExternalIPAddress>'
            b"</u:GetExternalIPAddressResponse></s:Body></s:Envelope>\r\n")
    outputs = soap.decode_response(200, body, soap.get_external_ip_address(WANIP2))
    assert outputs == {"NewExternalIPAddress": "80.100.100.1"}


@pytest.mark.parametrize("code, kind", [
    (606, NotAuthorized), (718, PortConflict), (729, PortConflict), (728, OutOfResources),
    (725, UPnPFault), (402, UPnPFault), (401, UPnPFault), (714, UPnPFault),
])
def test_faults_map_to_the_shared_error_classes(code: int, kind: type[ResultError]) -> None:
    action = soap.add_port_mapping(WANIP1, "tcp", 80, 80, "198.51.100.10", 0, "x")
    with pytest.raises(kind) as caught:
        soap.decode_response(500, soap.encode_fault(code, "Because"), action)
    assert caught.value.code == code
    assert getattr(caught.value, "protocol") == "upnp"
    assert getattr(caught.value, "description") == "Because"


@pytest.mark.parametrize("status, body", [
    (500, b"Internal error"),
    (200, b"<nope/>"),
    (200, soap.encode_response(WANIP2, "SomethingElse", [])),
    (404, soap.encode_response(WANIP2, "GetExternalIPAddress", [])),
    (500, soap.encode_fault(0, "x").replace(b"<errorCode>0<", b"<errorCode>-1<")),
    (500, soap.encode_response(WANIP2, "X", []).replace(b"XResponse", b"Fault")),
    (200, soap.encode_response(WANIP2, "GetExternalIPAddress", []) + b" " * soap.MAX_RESPONSE),
])
def test_what_is_neither_response_nor_fault_is_a_decode_error(status: int, body: bytes) -> None:
    with pytest.raises(DecodeError):
        soap.decode_response(status, body, soap.get_external_ip_address(WANIP2))
