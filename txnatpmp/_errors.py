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

    @ivar gateway: The gateway's address as C{(host, port)}.
    @ivar attempts: How many times the request was sent.
    @ivar waited: Seconds between the first transmission and giving up.
    """

    def __init__(self, gateway: tuple[str, int], attempts: int, waited: float) -> None:
        self.gateway = gateway
        self.attempts = attempts
        self.waited = waited
        super().__init__(
            f"no answer from {gateway[0]}:{gateway[1]} after {attempts} attempts "
            f"over {waited:.2f} s; the gateway may not support NAT-PMP"
        )


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
