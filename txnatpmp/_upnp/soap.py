"""
SOAP 1.1 texts for UPnP control (UDA 1.1 section 3.2): action requests, their responses and
faults.  Sans-IO.
"""

from __future__ import annotations

from typing import Sequence
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from attrs import frozen

from .._errors import DecodeError, ResultError, error_for_fault
from .safexml import child, child_text, local_name, parse_xml

#: The largest action response accepted (GetExternalIPAddress's is about 350 bytes).
MAX_RESPONSE = 16 * 1024

_ENVELOPE = (
    '<?xml version="1.0"?>\r\n'
    '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
    "<s:Body>{body}</s:Body></s:Envelope>\r\n"
)


@frozen
class Action:
    """
    One SOAP action on a service.

    @ivar arguments: C{(name, value)} pairs, in the order the service's SCPD declares them.
    """

    service_type: str
    name: str
    arguments: Sequence[tuple[str, str]] = ()

    @property
    def soap_action(self) -> str:
        """The SOAPAction header's value, quotes included."""
        return f'"{self.service_type}#{self.name}"'

    def encode(self) -> bytes:
        """The request body."""
        arguments = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in self.arguments)
        body = f'<u:{self.name} xmlns:u="{escape(self.service_type)}">{arguments}</u:{self.name}>'
        return _ENVELOPE.format(body=body).encode("utf-8")


def decode_response(status: int, data: bytes, action: Action) -> dict[str, str]:
    """
    The output arguments of C{action}'s response, by name.

    @param status: The HTTP status code (200, or 500 with a fault).
    @raise ResultError: the fault's meaning (see L{txnatpmp._errors.error_for_fault}).
    @raise DecodeError: for an answer that is neither the action's response nor a fault.
    """
    try:
        root = parse_xml(data, MAX_RESPONSE, f"{action.name} response")
    except DecodeError:
        if status != 200:
            raise DecodeError(
                f"{action.name} answered HTTP {status} without a SOAP fault") from None
        raise
    body = child(root, "Body") if local_name(root.tag) == "Envelope" else None
    if body is None:
        raise DecodeError(f"{action.name} answer is not a SOAP envelope")
    fault = child(body, "Fault")
    if fault is not None:
        raise _fault(fault, action)
    if status != 200:
        raise DecodeError(f"{action.name} answered HTTP {status} without a SOAP fault")
    response = child(body, action.name + "Response")
    if response is None:
        raise DecodeError(f"{action.name} answer has no {action.name}Response")
    return {local_name(c.tag): (c.text or "").strip() for c in response}


def _fault(fault: Element, action: Action) -> ResultError:
    detail = child(fault, "detail")
    error = child(detail, "UPnPError") if detail is not None else None
    if error is None:
        raise DecodeError(f"{action.name} fault without a UPnPError")
    code = child_text(error, "errorCode")
    if not (code.isascii() and code.isdigit() and len(code) <= 4):
        raise DecodeError(f"{action.name} fault with error code {code[:10]!r}")
    return error_for_fault(int(code), child_text(error, "errorDescription")[:200])


def encode_fault(code: int, description: str) -> bytes:
    """A fault's body, as a device sends it with HTTP 500 (for test doubles)."""
    body = (
        "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring>"
        '<detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">'
        f"<errorCode>{code}</errorCode><errorDescription>{escape(description)}</errorDescription>"
        "</UPnPError></detail></s:Fault>"
    )
    return _ENVELOPE.format(body=body).encode("utf-8")


def encode_response(service_type: str, name: str, outputs: Sequence[tuple[str, str]]) -> bytes:
    """An action's response body, as a device sends it with HTTP 200 (for test doubles)."""
    arguments = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in outputs)
    body = f'<u:{name}Response xmlns:u="{escape(service_type)}">{arguments}</u:{name}Response>'
    return _ENVELOPE.format(body=body).encode("utf-8")


def decode_request(data: bytes) -> tuple[str, dict[str, str]]:
    """An action request's name and arguments (for test doubles).

    @raise DecodeError: if C{data} is not an action request.
    """
    root = parse_xml(data, MAX_RESPONSE, "action request")
    body = child(root, "Body") if local_name(root.tag) == "Envelope" else None
    if body is None or len(body) != 1:
        raise DecodeError("action request is not a SOAP envelope with one action")
    request = body[0]
    return local_name(request.tag), {local_name(c.tag): (c.text or "").strip() for c in request}


# The IGD actions this client uses (WANIPConnection:1/2, WANPPPConnection:1 share them).


def get_external_ip_address(service_type: str) -> Action:
    return Action(service_type, "GetExternalIPAddress")


def add_port_mapping(service_type: str, protocol: str, external_port: int, internal_port: int,
                     client: str, lease: int, description: str) -> Action:
    return Action(service_type, "AddPortMapping", _mapping_arguments(
        protocol, external_port, internal_port, client, lease, description))


def add_any_port_mapping(service_type: str, protocol: str, external_port: int,
                         internal_port: int, client: str, lease: int,
                         description: str) -> Action:
    """IGD:2 only: the device picks a free external port near C{external_port} (NewReservedPort)."""
    return Action(service_type, "AddAnyPortMapping", _mapping_arguments(
        protocol, external_port, internal_port, client, lease, description))


def delete_port_mapping(service_type: str, protocol: str, external_port: int) -> Action:
    return Action(service_type, "DeletePortMapping", (
        ("NewRemoteHost", ""),
        ("NewExternalPort", str(external_port)),
        ("NewProtocol", protocol.upper()),
    ))


def get_specific_port_mapping_entry(service_type: str, protocol: str,
                                    external_port: int) -> Action:
    return Action(service_type, "GetSpecificPortMappingEntry", (
        ("NewRemoteHost", ""),
        ("NewExternalPort", str(external_port)),
        ("NewProtocol", protocol.upper()),
    ))


def _mapping_arguments(protocol: str, external_port: int, internal_port: int, client: str,
                       lease: int, description: str) -> tuple[tuple[str, str], ...]:
    # Uppercase protocol: some routers refuse "tcp" (tailscale #7377).
    return (
        ("NewRemoteHost", ""),
        ("NewExternalPort", str(external_port)),
        ("NewProtocol", protocol.upper()),
        ("NewInternalPort", str(internal_port)),
        ("NewInternalClient", client),
        ("NewEnabled", "1"),
        ("NewPortMappingDescription", description),
        ("NewLeaseDuration", str(lease)),
    )
