"""
The exceptions txnatpmp raises.

Every failure reported by a gateway, or by the lack of one, is a L{NATPMPError}.  A gateway's
result codes (RFC 6886 section 3.5) each have their own subclass carrying the C{code}, so callers
can catch exactly what they can handle.  Bad arguments raise plain C{ValueError} before anything
is sent.
"""

from __future__ import annotations


class NATPMPError(Exception):
    """
    Base class of every txnatpmp error.
    """


class DecodeError(NATPMPError):
    """
    A datagram is not a well-formed NAT-PMP message.
    """


class GatewayTimeout(NATPMPError):
    """
    The gateway did not answer any transmission of a request.

    The message says what is known of why: whether the gateway ever answered (a gateway that
    answered before is more likely cut off than without NAT-PMP), whether replies from it were
    discarded as malformed, and whether sending itself failed (link down, no route).

    @ivar gateway: The gateway's address as C{(host, port)}.
    @ivar attempts: How many times the request was sent.
    @ivar waited: Seconds between the first transmission and giving up.
    @ivar last_heard: Seconds since the gateway last answered anything, or C{None} if never.
    @ivar discarded: Datagrams from the gateway discarded as malformed meanwhile.
    @ivar send_error: The last error sending raised, if sending failed.
    """

    def __init__(
        self,
        gateway: tuple[str, int],
        attempts: int,
        waited: float,
        protocol: str = "NAT-PMP",
        *,
        last_heard: float | None = None,
        discarded: int = 0,
        discard_reason: str | None = None,
        send_error: OSError | None = None,
    ) -> None:
        self.gateway = gateway
        self.attempts = attempts
        self.waited = waited
        self.last_heard = last_heard
        self.discarded = discarded
        self.send_error = send_error
        host, port = gateway
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        text = f"no answer from {where} after {attempts} attempts over {waited:.2f} s"
        if send_error is not None:
            text += f"; sending failed: {send_error.strerror or send_error}"
        elif discarded:
            text += f"; {discarded} replies from it were discarded as malformed ({discard_reason})"
        elif last_heard is not None:
            text += f"; it last answered {last_heard:.0f} s ago"
        else:
            text += f"; the gateway may not support {protocol}"
        super().__init__(text)


class NoLifetimeGranted(NATPMPError):
    """
    A request to create a mapping got only successes with lifetime 0 until it gave up.  Such an
    answer cannot be told from a late answer to a delete, so it is not taken as the answer; this
    error says the gateway did answer, though never with a mapping.
    """


class ClientStopped(NATPMPError):
    """
    The client stopped listening before the request was answered.
    """


class GatewayNotFound(NATPMPError):
    """
    No default IPv4 gateway could be found.
    """


class ResultError(NATPMPError):
    """
    The gateway answered with a non-zero result code.

    @ivar code: The result code from the response.
    """

    code: int = -1
    meaning: str = "undefined result code"
    #: The protocol whose result code this is: C{"natpmp"}, C{"pcp"} or C{"upnp"}.
    protocol: str = "natpmp"
    #: The error's lifetime as the server sent it (PCP), or C{None} where the protocol has none.
    lifetime: int | None = None
    #: Seconds before the same request may be sent again (PCP's lifetime with the client's floor,
    #: RFC 6887 section 8.3), or C{None}.
    retry_after: float | None = None

    def __init__(
        self, code: int | None = None, *, protocol: str = "natpmp", lifetime: int | None = None
    ) -> None:
        if code is not None:
            self.code = code
        self.protocol = protocol
        self.lifetime = lifetime
        who = "gateway"
        if protocol != "natpmp":
            who = f"{_PROTOCOL_NAMES.get(protocol, protocol)} server"
        super().__init__(f"{who} answered with result {self.code}: {self.meaning}")


class UnsupportedVersion(ResultError):
    """
    Result 1: the gateway does not speak this protocol version.

    @ivar server_version: The version the server's reply carried, when known: 0 means a
        NAT-PMP-only server answered a PCP request (RFC 6887 section 9).
    """

    code = 1
    meaning = "unsupported version"
    server_version: int | None = None

    def __init__(
        self, code: int | None = None, *, protocol: str = "natpmp", lifetime: int | None = None,
        server_version: int | None = None,
    ) -> None:
        self.server_version = server_version
        super().__init__(code, protocol=protocol, lifetime=lifetime)
        if server_version is not None:
            self.args = (f"{self.args[0]} (the server speaks version {server_version})",)


class NotAuthorized(ResultError):
    """Result 2: mapping refused (disabled by the user, or outside the allowed ports)."""

    code = 2
    meaning = "not authorized or refused"


class NetworkFailure(ResultError):
    """Result 3: the gateway has no working external connection (no DHCP lease yet, say)."""

    code = 3
    meaning = "network failure"


class OutOfResources(ResultError):
    """Result 4: the gateway cannot create more mappings."""

    code = 4
    meaning = "out of resources"


class UnsupportedOpcode(ResultError):
    """Result 5: the gateway does not know this request."""

    code = 5
    meaning = "unsupported opcode"


_BY_CODE: dict[int, type[ResultError]] = {
    cls.code: cls
    for cls in (UnsupportedVersion, NotAuthorized, NetworkFailure, OutOfResources, UnsupportedOpcode)
}


def error_for_result(code: int) -> ResultError:
    """
    Return the exception for a non-zero result code; codes the RFC does not define give a plain
    L{ResultError}, which is fatal too (R05).
    """
    cls = _BY_CODE.get(code)
    return cls() if cls is not None else ResultError(code)


# PCP (RFC 6887 section 7.4): the codes whose meaning NAT-PMP shares raise the classes above
# (with the PCP code); these are PCP's own.

_PROTOCOL_NAMES = {"pcp": "PCP", "upnp": "UPnP"}


class MalformedRequest(ResultError):
    """PCP result 3: the server could not parse the request."""

    code = 3
    meaning = "malformed request"


class UnsupportedOption(ResultError):
    """PCP result 5: a mandatory option was unknown, disabled or not authorized."""

    code = 5
    meaning = "unsupported option"


class MalformedOption(ResultError):
    """PCP result 6: an option was malformed, repeated or made no sense."""

    code = 6
    meaning = "malformed option"


class UnsupportedProtocol(ResultError):
    """PCP result 9: the server does not map this transport protocol."""

    code = 9
    meaning = "unsupported protocol"


class UserQuotaExceeded(ResultError):
    """PCP result 10: this host holds as many mappings as the server allows it."""

    code = 10
    meaning = "user quota exceeded"


class CannotProvideExternal(ResultError):
    """PCP result 11: the server cannot provide the suggested (or any) external port or address."""

    code = 11
    meaning = "cannot provide the external port or address"


class AddressMismatch(ResultError):
    """
    PCP result 12: the address in the request is not the one the server saw it come from, so
    another NAT sits between you and the gateway, and the gateway cannot map through it.
    """

    code = 12
    meaning = "address mismatch: another NAT sits between you and the gateway"


class ExcessiveRemotePeers(ResultError):
    """PCP result 13: too many remote peers (FILTER options)."""

    code = 13
    meaning = "excessive remote peers"


#: PCP result codes and the exception each raises.
PCP_ERRORS: dict[int, type[ResultError]] = {
    1: UnsupportedVersion,
    2: NotAuthorized,
    3: MalformedRequest,
    4: UnsupportedOpcode,
    5: UnsupportedOption,
    6: MalformedOption,
    7: NetworkFailure,
    8: OutOfResources,
    9: UnsupportedProtocol,
    10: UserQuotaExceeded,
    11: CannotProvideExternal,
    12: AddressMismatch,
    13: ExcessiveRemotePeers,
}


def pcp_error_for_result(code: int, lifetime: int | None = None) -> ResultError:
    """
    Return the exception for a non-zero PCP result code (RFC 6887 section 7.4), carrying the
    code, C{protocol="pcp"} and the error's lifetime; unknown codes give a plain L{ResultError}.
    """
    cls = PCP_ERRORS.get(code, ResultError)
    return cls(code, protocol="pcp", lifetime=lifetime)


# UPnP-IGD (txnatpmp._upnp) ---------------------------------------------------------------------


class UPnPFault(ResultError):
    """
    A UPnP device answered a SOAP action with a fault (UPnP Device Architecture 1.1 section 3.2.2,
    IGD WANIPConnection error codes).

    @ivar code: The UPnP C{errorCode} (401 invalid action, 402 invalid args, 714 no such entry...).
    @ivar description: The device's C{errorDescription}.
    """

    meaning = "UPnP fault"
    protocol = "upnp"

    def __init__(self, code: int | None = None, description: str = "") -> None:
        self.description = description
        super().__init__(code, protocol="upnp")
        if description:
            self.args = (f"{self.args[0]} ({description})",)


class PortConflict(ResultError):
    """
    The external port is held by another mapping (UPnP 718 ConflictInMappingEntry, 729
    ConflictWithOtherMechanisms).  A secure-mode UPnP router also says 718 when the internal
    client is not the requesting host.
    """

    code = 718
    meaning = "the external port conflicts with another mapping"

    def __init__(self, code: int | None = None, description: str = "",
                 protocol: str = "upnp") -> None:
        self.description = description
        super().__init__(code, protocol=protocol)


class IGDNotFound(GatewayTimeout):
    """No UPnP Internet Gateway Device at the gateway's address answered an SSDP search."""

    def __init__(self, gateway: tuple[str, int], attempts: int, waited: float) -> None:
        super().__init__(gateway, attempts, waited)
        self.args = (
            f"no UPnP-IGD at {gateway[0]} answered {attempts} SSDP searches over {waited:.2f} s",
        )


class IGDUnreachable(NATPMPError):
    """
    An HTTP request to the IGD failed: refused, timed out, cut, or an answer over the size cap.
    After a router restart the old description URL is refused: discover again.

    @ivar url: The URL requested.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(f"HTTP request to {url} failed: {reason}")


def error_for_fault(code: int, description: str = "") -> ResultError:
    """
    The exception for a UPnP fault: 606 is L{NotAuthorized} (the meaning NAT-PMP's result 2 and
    PCP's NOT_AUTHORIZED share), 718 and 729 are L{PortConflict}, 728 NoPortMapsAvailable is
    L{OutOfResources}, every other code a L{UPnPFault}.  Each carries C{protocol = "upnp"}.
    """
    error: ResultError
    if code == 606:
        error = NotAuthorized(606, protocol="upnp")
        setattr(error, "description", description)
    elif code in (718, 729):
        error = PortConflict(code, description)
    elif code == 728:
        error = OutOfResources(728, protocol="upnp")
        setattr(error, "description", description)
    else:
        error = UPnPFault(code, description)
    return error
