"""
L{NATPMPClient}: a NAT-PMP client as a Twisted C{DatagramProtocol}.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ._epoch import EpochTracker
from ._exchanges import Exchange, ExchangeQueue
from ._reactor import global_reactor
from ._errors import (
    DecodeError,
    GatewayTimeout,
    NoLifetimeGranted,
    error_for_result,
)
from ._results import ExternalAddress, Mapping
from ._schedule import DELETE_SCHEDULE, RFC_SCHEDULE, RetransmitSchedule
from ._spec import DEFAULT_LIFETIME, check_gateway
from ._wire import (
    SERVER_PORT,
    ExternalAddressRequest,
    ExternalAddressResponse,
    MappingRequest,
    MappingResponse,
    Request,
    Response,
    answers,
    check_protocol,
    decode_response,
    encode,
    is_delete,
)

T = TypeVar("T")


class _Exchange(Exchange):
    """One NAT-PMP request and its transmissions, from queueing to its answer."""

    __slots__ = ("request", "data", "schedule", "convert", "attempt", "granted_nothing",
                 "discarded", "discard_reason")

    def __init__(
        self,
        request: Request,
        schedule: RetransmitSchedule,
        convert: Callable[[Response], Any],
        withdraw: Callable[[_Exchange], None],
    ) -> None:
        super().__init__(withdraw)
        self.request = request
        self.data = encode(request)
        self.schedule = schedule
        self.convert = convert  # the response into what the caller gets
        self.attempt = 0
        self.granted_nothing = False  # saw a success with lifetime 0 (not an answer, see R06)
        self.discarded = 0  # malformed datagrams from the gateway while in flight
        self.discard_reason: str | None = None


class NATPMPClient(ExchangeQueue[_Exchange]):
    """
    Talks NAT-PMP to one gateway.

    Start it with C{reactor.listenUDP(0, client)}.  Requests made before it listens wait in the
    queue.  Requests go out one at a time in the order they were made (R08), each retransmitted on
    C{schedule} until answered (R07).  Every request method returns a C{Deferred}; cancelling it
    withdraws the request.

    A transmission that cannot be sent (C{OSError}: network unreachable, link down) counts as
    lost: the request is retransmitted on its schedule like any other.

    @ivar epoch: The gateway's L{EpochTracker}: add an observer to learn when it lost state (R18).
    @ivar last_heard: The clock's time of the last well-formed datagram from the gateway, or
        C{None}.
    """

    log = Logger()

    def __init__(
        self,
        gateway: str,
        gateway_port: int = SERVER_PORT,
        reactor: IReactorTime | None = None,
        schedule: RetransmitSchedule = RFC_SCHEDULE,
        delete_schedule: RetransmitSchedule = DELETE_SCHEDULE,
    ) -> None:
        """
        @param gateway: The gateway's IPv4 address (see L{txnatpmp.find_gateway}).
        @param gateway_port: Its NAT-PMP port; tests use a FakeGateway's.
        @param reactor: Provides the clock; the global reactor by default.
        @param schedule: Retransmissions for requests that read or create.
        @param delete_schedule: Retransmissions for deletes, which give up sooner (R17).
        """
        self.gateway = check_gateway(gateway, gateway_port)
        if reactor is None:
            reactor = global_reactor()
        super().__init__(reactor, "host", self.gateway[0])  # one request in flight (R08)
        self.schedule = schedule
        self.delete_schedule = delete_schedule
        self.epoch = EpochTracker(reactor.seconds)

    def __repr__(self) -> str:
        return f"<NATPMPClient for {self.gateway[0]}:{self.gateway[1]}>"

    @property
    def _current(self) -> _Exchange | None:
        """The request in flight: one at a time (R08)."""
        return self._inflight[0] if self._inflight else None

    # Public requests

    def get_external_address(
        self, *, schedule: RetransmitSchedule | None = None
    ) -> Deferred[ExternalAddress]:
        """
        Ask for the gateway's external IPv4 address.

        @param schedule: Retransmissions for this request instead of the client's.
        """
        return self._submit(ExternalAddressRequest(), _external_address, schedule)

    def map_port(
        self, protocol: str, internal_port: int, external_port: int = 0,
        lifetime: int = DEFAULT_LIFETIME,
        *,
        schedule: RetransmitSchedule | None = None,
    ) -> Deferred[Mapping]:
        """
        Create or renew a mapping.  The gateway decides the external port (C{external_port} is
        only a suggestion, 0 for any) and the lifetime: use the returned L{Mapping}'s (R13, R14).

        A lifetime of 0 deletes instead.  Internal port 0 with a lifetime is sent as given, as
        some VPN providers document.

        @raise ValueError: for a protocol other than C{"tcp"}/C{"udp"}, a port outside 0-65535
            or a lifetime outside 0-4294967295; nothing is sent.
        """
        request = MappingRequest(check_protocol(protocol), internal_port, external_port, lifetime)
        return self._submit(request, _mapping, schedule)

    def unmap_port(
        self, protocol: str, internal_port: int, *, schedule: RetransmitSchedule | None = None
    ) -> Deferred[Mapping]:
        """
        Delete a mapping (R16); deleting one that does not exist succeeds too.  Gives up after
        C{delete_schedule} (R17), or C{schedule} if given.
        """
        if internal_port == 0:
            raise ValueError("internal port 0 deletes every mapping: use unmap_all()")
        request = MappingRequest(check_protocol(protocol), internal_port, 0, 0)
        return self._submit(request, _mapping, schedule)

    def unmap_all(self, protocol: str) -> Deferred[Mapping]:
        """
        Delete every mapping of one protocol that this host holds (R16).  Some gateways
        (miniupnpd 2.3.1 and older) delete those of both protocols.
        """
        return self._submit(MappingRequest(check_protocol(protocol), 0, 0, 0), _mapping)

    # The queue

    def _submit(
        self,
        request: Request,
        convert: Callable[[Response], T],
        schedule: RetransmitSchedule | None = None,
    ) -> Deferred[T]:
        if schedule is None:
            schedule = self.delete_schedule if is_delete(request) else self.schedule
        return self._enqueue(_Exchange(request, schedule, convert, self._withdraw))

    def _transmit(self, exchange: _Exchange) -> None:
        wait = exchange.schedule.wait_after(exchange.attempt)
        exchange.attempt += 1
        # The timer first: a transport may deliver the answer before write() returns.
        exchange.timer = self._clock.callLater(wait, self._no_answer, exchange)
        # No log event per transmission: Twisted builds and publishes every event, even at debug
        # level, and that was an eighth of a request's cost.  Retransmissions are logged.
        self._send(exchange)

    def _write(self, exchange: _Exchange) -> None:
        assert self.transport is not None
        self.transport.write(exchange.data, self.gateway)

    def _no_answer(self, exchange: _Exchange) -> None:
        exchange.timer = None
        if exchange.attempt < exchange.schedule.attempts:
            self.log.info(
                "no answer from {host} yet, retrying, attempt {attempt} of {attempts}",
                host=self.gateway[0],
                attempt=exchange.attempt + 1,
                attempts=exchange.schedule.attempts,
                request=exchange.request,
                retransmit=True,
            )
            self._transmit(exchange)
            return
        waited = self._clock.seconds() - exchange.started
        if exchange.granted_nothing:
            self._finish(exchange, NoLifetimeGranted(
                f"{self.gateway[0]} answered {exchange.request} only with lifetime 0"))
        else:
            self._finish(exchange, GatewayTimeout(
                self.gateway, exchange.attempt, waited, last_heard=self._silence(),
                discarded=exchange.discarded, discard_reason=exchange.discard_reason,
                send_error=exchange.send_error,
            ))

    def _receive(self, data: bytes, source: Any) -> None:
        if tuple(source) != self.gateway:
            self.log.debug("Ignored {size} bytes from {source}: not the gateway", size=len(data),
                           source=source)
            return
        try:
            response = decode_response(data)
        except DecodeError as error:
            self.log.debug("Ignored a malformed datagram from the gateway: {error}", error=error)
            if self._current is not None:
                self._current.discarded += 1
                self._current.discard_reason = str(error)
            return
        self.last_heard = self._clock.seconds()
        exchange = self._current
        if exchange is not None and _grants_nothing(exchange.request, response):
            exchange.granted_nothing = True
        if exchange is None or not answers(exchange.request, response):
            self.log.debug("Ignored {response}: it answers no request in flight", response=response)
            return
        self.epoch.observe(response.epoch)
        if exchange not in self._inflight:  # an epoch observer withdrew it
            return
        self._finish(exchange, error_for_result(response.result) if response.result
                     else exchange.convert(response))


def _grants_nothing(request: Request, response: Response) -> bool:
    """A success with lifetime 0 for a create: a late delete answer, or a gateway granting 0."""
    return (
        isinstance(request, MappingRequest)
        and isinstance(response, MappingResponse)
        and not is_delete(request)
        and response.result == 0
        and response.lifetime == 0
        and (response.protocol, response.internal_port) == (request.protocol, request.internal_port)
    )


def _external_address(response: Response) -> ExternalAddress:
    assert isinstance(response, ExternalAddressResponse)
    return ExternalAddress(response.address, response.epoch)


def _mapping(response: Response) -> Mapping:
    assert isinstance(response, MappingResponse)
    return Mapping(
        response.protocol,
        response.internal_port,
        response.external_port,
        response.lifetime,
        response.epoch,
    )
