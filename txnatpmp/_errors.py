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
        text = f"no answer from {gateway[0]}:{gateway[1]} after {attempts} attempts over {waited:.2f} s"
        if send_error is not None:
            text += f"; sending failed: {send_error.strerror or send_error}"
        elif discarded:
            text += f"; {discarded} replies from it were discarded as malformed ({discard_reason})"
        elif last_heard is not None:
            text += f"; it last answered {last_heard:.0f} s ago"
        else:
            text += "; the gateway may not support NAT-PMP"
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

    def __init__(self, code: int | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(f"gateway answered with result {self.code}: {self.meaning}")


class UnsupportedVersion(ResultError):
    """Result 1: the gateway does not speak this protocol version."""

    code = 1
    meaning = "unsupported version"


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
        super().__init__(code)
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
        self.protocol = protocol
        super().__init__(code)


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
        error = NotAuthorized(606)
        setattr(error, "protocol", "upnp")
        setattr(error, "description", description)
    elif code in (718, 729):
        error = PortConflict(code, description)
    elif code == 728:
        error = OutOfResources(728)
        setattr(error, "protocol", "upnp")
        setattr(error, "description", description)
    else:
        error = UPnPFault(code, description)
    return error
