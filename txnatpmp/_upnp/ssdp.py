"""
SSDP texts (UPnP Device Architecture 1.1, section 1.3): the M-SEARCH a control point sends and the
answers a device returns.  Sans-IO: bytes in, values out.

An answer's LOCATION is chosen by whoever answered, and anyone on the LAN can answer, so
L{check_location} accepts only a plain C{http:} URL on the gateway's own address.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from attrs import frozen

from .._errors import DecodeError

SSDP_GROUP = "239.255.255.250"
SSDP_PORT = 1900
#: What to search for: every IGD, version 1 or 2, answers this type (UDA 1.1 section 1.3.2).
IGD_SEARCH_TARGET = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
#: The largest answer read; real ones are about 300 bytes.
MAX_ANSWER = 2048
#: The longest URL accepted in LOCATION.
MAX_LOCATION = 512


def encode_search(target: str = IGD_SEARCH_TARGET, wait: int = 1,
                  host: str = f"{SSDP_GROUP}:{SSDP_PORT}") -> bytes:
    """
    An M-SEARCH request for C{target}, answered within C{wait} seconds (MX).

    @param host: The HOST header: the multicast group, or the device for a unicast search.
    """
    return (
        "M-SEARCH * HTTP/1.1\r\n"
        f"HOST: {host}\r\n"
        'MAN: "ssdp:discover"\r\n'
        f"MX: {wait}\r\n"
        f"ST: {target}\r\n"
        "\r\n"
    ).encode("ascii")


@frozen
class SearchAnswer:
    """
    A device's answer to an M-SEARCH.

    @ivar location: The URL of its device description, as sent (see L{check_location}).
    @ivar target: The ST it answered for.
    @ivar usn: Its unique service name.
    @ivar server: Its SERVER header (operating system, UPnP version, product).
    @ivar boot_id: BOOTID.UPNP.ORG, which a device increases on every restart; C{None} if absent.
    """

    location: str
    target: str
    usn: str
    server: str
    boot_id: int | None


def decode_answer(data: bytes) -> SearchAnswer:
    """
    Parse an M-SEARCH answer.

    @raise DecodeError: if C{data} is too long, not a C{200} answer, or lacks a LOCATION.
    """
    if len(data) > MAX_ANSWER:
        raise DecodeError(f"SSDP answer of {len(data)} bytes is longer than {MAX_ANSWER}")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError("SSDP answer is not ASCII") from None
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    status = lines[0].split(None, 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "200":
        raise DecodeError(f"not an SSDP answer: {lines[0][:60]!r}")
    headers = _headers(lines[1:])
    location = headers.get("location", "")
    if not location:
        raise DecodeError("SSDP answer without LOCATION")
    return SearchAnswer(
        location=location,
        target=headers.get("st", ""),
        usn=headers.get("usn", ""),
        server=headers.get("server", ""),
        boot_id=_boot_id(headers),
    )


def check_location(location: str, gateway: str) -> str:
    """
    Return C{location} if it is a URL this client may fetch: C{http:}, no user name or password,
    an IPv4 literal equal to C{gateway} (the address the user or the default route named), and a
    valid port.  Everything else could send the client to a host an attacker chose.

    @raise DecodeError: saying why not.
    """
    if len(location) > MAX_LOCATION or not location.isascii() or not location.isprintable():
        raise DecodeError("LOCATION is too long or not printable ASCII")
    parts = urlsplit(location)
    if parts.scheme != "http":
        raise DecodeError(f"LOCATION {location!r} is not an http: URL")
    if parts.username is not None or parts.password is not None:
        raise DecodeError(f"LOCATION {location!r} carries a user name or password")
    try:
        host = str(ipaddress.IPv4Address(parts.hostname or ""))
        port = parts.port
    except ValueError:
        raise DecodeError(f"LOCATION {location!r} does not name an IPv4 address and port") from None
    if host != gateway:
        raise DecodeError(f"LOCATION {location!r} is not on the gateway {gateway}")
    if port == 0:
        raise DecodeError(f"LOCATION {location!r} names port 0")
    return location


@frozen
class Notification:
    """
    A device's multicast NOTIFY: C{ssdp:alive} when it starts and every so often (with its
    BOOTID, which a restart increases), C{ssdp:byebye} when it stops.

    @ivar kind: C{"alive"}, C{"byebye"} or C{"update"}.
    @ivar location: Its description URL (absent from byebye: C{""}).
    """

    kind: str
    location: str
    target: str
    usn: str
    boot_id: int | None


def decode_notification(data: bytes) -> Notification:
    """
    Parse a NOTIFY.

    @raise DecodeError: if C{data} is too long, not a NOTIFY, or of an unknown kind.
    """
    if len(data) > MAX_ANSWER:
        raise DecodeError(f"SSDP NOTIFY of {len(data)} bytes is longer than {MAX_ANSWER}")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError("SSDP NOTIFY is not ASCII") from None
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    if not lines[0].startswith("NOTIFY * HTTP/1."):
        raise DecodeError(f"not an SSDP NOTIFY: {lines[0][:60]!r}")
    headers = _headers(lines[1:])
    kind = headers.get("nts", "").removeprefix("ssdp:")
    if kind not in ("alive", "byebye", "update"):
        raise DecodeError(f"SSDP NOTIFY of unknown kind {headers.get('nts', '')[:40]!r}")
    return Notification(kind, headers.get("location", ""), headers.get("nt", ""),
                        headers.get("usn", ""), _boot_id(headers))


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            headers.setdefault(name.strip().lower(), value.strip())
    return headers


def _boot_id(headers: dict[str, str]) -> int | None:
    boot = headers.get("bootid.upnp.org", "")
    return int(boot) if boot.isascii() and boot.isdigit() and len(boot) <= 10 else None
