"""
Listening for gateway announcements (RFC 6886 section 3.2.1, RFC 6887 section 14.1; R21-R23).

A gateway multicasts to 224.0.0.1:5350 when it starts and when its external address changes: a
NAT-PMP external-address response (12 bytes), a PCP ANNOUNCE (24 bytes), or both.  Only listening
happens here; nothing is ever sent.
"""

from __future__ import annotations

from typing import Any, Callable, Union, cast

from twisted.internet.interfaces import IListeningPort, IReactorMulticast
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from ._errors import DecodeError
from ._reactor import global_reactor
from ._wire import (
    ANNOUNCE_GROUP,
    ANNOUNCE_PORT,
    ExternalAddressResponse,
    SERVER_PORT,
    PCPAnnounce,
    decode_announcement,
)

Announcement = Union[ExternalAddressResponse, PCPAnnounce]


class AnnouncementListener(DatagramProtocol):
    """
    Passes each well-formed announcement from C{gateway} to C{received}; ignores everything else
    (other senders, other source ports, malformed packets) and never raises (R21, R23).

    @param gateway: The gateway's address, with the port it sends from (5351 when only the
        address is given): a gateway announces from its server port.
    """

    log = Logger()

    def __init__(
        self, gateway: str | tuple[str, int], received: Callable[[Announcement], object]
    ) -> None:
        self.gateway = (gateway, SERVER_PORT) if isinstance(gateway, str) else tuple(gateway)
        self._received = received

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            if (addr[0], addr[1]) != self.gateway:
                self.log.debug("Ignored an announcement from {source}: not the gateway",
                               source=addr)
                return
            try:
                announcement = decode_announcement(data)
            except DecodeError as error:
                self.log.debug("Ignored a malformed announcement: {error}", error=error)
                return
            self._received(announcement)
        except Exception:
            self.log.failure("Unexpected error handling an announcement from {source}", source=addr)


def listen_for_announcements(
    listener: AnnouncementListener,
    reactor: IReactorMulticast | None = None,
    port: int = ANNOUNCE_PORT,
    group: str | None = ANNOUNCE_GROUP,
    interface: str = "",
) -> IListeningPort:
    """
    Bind C{listener} to C{port} with address reuse, so several programs on one host can listen
    (R21), and join the multicast C{group}.  With C{group=None} it binds C{interface}:C{port}
    without joining anything: how tests receive FakeGateway's unicast announcements.
    """
    if reactor is None:
        reactor = global_reactor()
    assert reactor is not None
    listening = reactor.listenMulticast(
        port, listener, interface=group or interface, listenMultiple=True
    )
    if group is not None:
        listening.joinGroup(group, interface or "").addErrback(
            lambda failure: listener.log.warn(
                "Could not join {group} ({error}): announcements may not be heard until the "
                "link is up", group=group, error=failure.getErrorMessage()
            )
        )
    return cast(IListeningPort, listening)
