"""
Device descriptions (UDA 1.1 section 2.3): find the WAN connection services in an IGD's nested
devices and pick the one to use.  Sans-IO.
"""

from __future__ import annotations

from typing import Iterator
from urllib.parse import urljoin, urlsplit
from xml.etree import ElementTree

from attrs import frozen

from .._errors import DecodeError
from .safexml import child, child_text, local_name, parse_xml

#: The largest description accepted (miniupnpd's is about 3 KB; big routers' 20-40 KB).
MAX_DESCRIPTION = 64 * 1024
#: How deep devices may nest (IGD > WANDevice > WANConnectionDevice is 3).
MAX_DEPTH = 8

_SERVICE_PREFIX = "urn:schemas-upnp-org:service:"
@frozen
class Service:
    """
    A service of a device, as its description lists it.

    @ivar service_type: The full type, for example
        C{"urn:schemas-upnp-org:service:WANIPConnection:2"}; SOAP actions are named in it.
    @ivar control_url: The absolute URL SOAP requests are posted to.
    """

    service_type: str
    control_url: str

    @property
    def name(self) -> str:
        """The type's name, for example C{"WANIPConnection"}."""
        return self.service_type.removeprefix(_SERVICE_PREFIX).rpartition(":")[0]

    @property
    def version(self) -> int:
        """The type's version, 0 if it has none readable."""
        number = self.service_type.rpartition(":")[2]
        return int(number) if number.isascii() and number.isdigit() and len(number) < 4 else 0


def parse_description(data: bytes, location: str) -> list[Service]:
    """
    Every service in the description at C{location}, from the root device and those nested in it,
    with control URLs made absolute (against URLBase if present, else C{location}).  Control URLs
    on another host than C{location}'s, or not C{http:}, are left out.

    @raise DecodeError: for oversized or unsafe XML, or a document that is not a device
        description.
    """
    root = parse_xml(data, MAX_DESCRIPTION, "device description")
    if local_name(root.tag) != "root":
        raise DecodeError(f"device description's root element is {local_name(root.tag)!r}")
    device = child(root, "device")
    if device is None:
        raise DecodeError("device description has no device")
    base = child_text(root, "URLBase") or location
    host = urlsplit(location).hostname
    services = []
    for element in _services(device, 0):
        service_type = child_text(element, "serviceType")
        control = child_text(element, "controlURL")
        if not service_type or not control:
            continue
        url = urljoin(base, control)
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname != host or parts.username is not None:
            continue
        services.append(Service(service_type, url))
    return services


def _services(device: ElementTree.Element, depth: int) -> Iterator[ElementTree.Element]:
    if depth > MAX_DEPTH:
        raise DecodeError(f"devices nest deeper than {MAX_DEPTH} levels")
    service_list = child(device, "serviceList")
    if service_list is not None:
        yield from (s for s in service_list if local_name(s.tag) == "service")
    device_list = child(device, "deviceList")
    if device_list is not None:
        for nested in device_list:
            if local_name(nested.tag) == "device":
                yield from _services(nested, depth + 1)


def rank(service: Service) -> int | None:
    """
    How good C{service} is for mapping ports, 0 best: WANIPConnection:2 (or later, which must
    understand the older requests), then WANIPConnection:1, then WANPPPConnection:1 (or later);
    C{None} for a service that does not map ports.
    """
    if not service.service_type.startswith(_SERVICE_PREFIX) or service.version < 1:
        return None
    if service.name == "WANIPConnection":
        return 0 if service.version >= 2 else 1
    if service.name == "WANPPPConnection":
        return 2
    return None


def choose_service(services: list[Service]) -> Service | None:
    """The best service by L{rank} (the first listed among equals), or C{None} if none maps."""
    ranked = [(r, i, s) for i, s in enumerate(services) if (r := rank(s)) is not None]
    return min(ranked)[2] if ranked else None
