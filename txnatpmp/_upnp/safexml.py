"""
Parsing XML that a LAN device sent: capped in size, refused outright if it declares a DOCTYPE or
an entity (UPnP documents never need one, and both are the doors to entity expansion and external
fetches), and only in an ASCII-compatible encoding so the check sees what the parser sees.
"""

from __future__ import annotations

import re
from xml.etree import ElementTree

from .._errors import DecodeError

_DECLARATIONS = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_xml(data: bytes, limit: int, what: str) -> ElementTree.Element:
    """
    The root element of C{data}.

    @param limit: The largest size accepted, in bytes.
    @param what: Names the document in errors (C{"device description"}).
    @raise DecodeError: if C{data} is too large, declares a DOCTYPE or entity, is not in an
        ASCII-compatible encoding, or is not well-formed XML.
    """
    if len(data) > limit:
        raise DecodeError(f"{what} is {len(data)} bytes, more than the {limit} accepted")
    if data[:2] in (b"\xfe\xff", b"\xff\xfe") or b"\x00" in data:
        raise DecodeError(f"{what} is not in an ASCII-compatible encoding")
    if _DECLARATIONS.search(data):
        raise DecodeError(f"{what} declares a DOCTYPE or an entity, which UPnP never needs")
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise DecodeError(f"{what} is not well-formed XML: {error}") from None


def local_name(tag: str) -> str:
    """C{tag} without its namespace: routers vary in prefixes, so elements match by local name."""
    return tag.rpartition("}")[2]


def child(element: ElementTree.Element, name: str) -> ElementTree.Element | None:
    """The first direct child of C{element} whose local name is C{name}."""
    return next((c for c in element if local_name(c.tag) == name), None)


def child_text(element: ElementTree.Element, name: str) -> str:
    """The stripped text of the first child named C{name}, or C{""}."""
    found = child(element, name)
    return (found.text or "").strip() if found is not None else ""
