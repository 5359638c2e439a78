"""
One HTTP request to a LAN device over C{twisted.web.client.Agent}, with the two limits untrusted
peers need: a deadline on the injected clock for the whole exchange, and a cap on the body read.
(C{readBody} has neither, and warns on Twisted 26.10 for transports without C{abortConnection}.)
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from .._errors import IGDUnreachable


@implementer(IBodyProducer)
class _Bytes:
    """A request body written at once, with its length known (routers mishandle chunking)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _CappedBody(Protocol):
    """Collects a response body of at most C{limit} bytes; beyond it, stops the transfer."""

    def __init__(self, limit: int, url: str, finished: Deferred[bytes]) -> None:
        self._limit = limit
        self._url = url
        self._finished = finished
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._finished.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._finished.errback(IGDUnreachable(self._url, f"body over {self._limit} bytes"))
            _stop(self.transport)
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = ResponseDone()) -> None:  # type: ignore[assignment]
        if self._finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):  # type: ignore[no-untyped-call]
            self._finished.callback(b"".join(self._parts))
        else:
            self._finished.errback(IGDUnreachable(self._url, reason.getErrorMessage()))


async def fetch(agent: IAgent, clock: IReactorTime, method: bytes, url: str, *,
                limit: int, timeout: float, headers: dict[bytes, bytes] | None = None,
                body: bytes | None = None) -> tuple[int, bytes]:
    """
    Make one request and read the whole answer.

    @return: The status code and the body.
    @raise IGDUnreachable: if the request fails, the answer takes longer than C{timeout} seconds
        in all, or its body is longer than C{limit} bytes.
    """
    outcome: Deferred[tuple[int, bytes]] = Deferred()
    request = agent.request(
        method, url.encode("ascii"),
        Headers({k: [v] for k, v in (headers or {}).items()}),
        _Bytes(body) if body is not None else None,
    )
    reading: list[_CappedBody] = []

    def answered(response: IResponse) -> Deferred[bytes] | None:
        if isinstance(response.length, int) and response.length > limit:
            raise IGDUnreachable(url, f"body of {response.length} bytes is over {limit}")
        finished: Deferred[bytes] = Deferred()
        reader = _CappedBody(limit, url, finished)
        reading.append(reader)
        response.deliverBody(reader)  # type: ignore[no-untyped-call]
        finished.addCallback(lambda data: outcome.callback((response.code, data))
                             if not outcome.called else None)
        finished.addErrback(failed)
        return None

    def failed(failure: Failure) -> None:
        if not outcome.called:
            error = failure.value
            if not isinstance(error, IGDUnreachable):
                error = IGDUnreachable(url, _reason(failure))
            outcome.errback(error)

    def expire() -> None:
        if not outcome.called:
            outcome.errback(IGDUnreachable(url, f"no complete answer within {timeout} s"))
            request.cancel()
            for reader in reading:
                _stop(reader.transport)

    timer = clock.callLater(timeout, expire)
    request.addCallback(answered)
    request.addErrback(failed)
    try:
        return await outcome
    finally:
        if timer.active():
            timer.cancel()


def _stop(transport: object) -> None:
    """Stop a body's transfer, which closes its connection."""
    stop = getattr(transport, "stopProducing", None)
    if stop is not None:
        stop()


def _reason(failure: Failure) -> str:
    value: Any = failure.value
    reasons = getattr(value, "reasons", None)  # ResponseFailed, RequestTransmissionFailed
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return failure.getErrorMessage() or type(value).__name__
