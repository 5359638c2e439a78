"""
One NAT-PMP client, and so one request queue (R08), per gateway per reactor in a process.

Every front end in a process (services, endpoints, C{hold_mapping}, the plugin, the command)
shares it: two C{natpmp:} endpoints never have two requests in flight at one gateway.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet.interfaces import IListeningPort

from .._client import NATPMPClient
from .._schedule import RetransmitSchedule
from .._spec import Gateway


class _Shared:
    __slots__ = ("client", "port", "users")

    def __init__(self, client: NATPMPClient, port: IListeningPort) -> None:
        self.client = client
        self.port = port
        self.users = 0


_shared: WeakKeyDictionary[Any, dict[Gateway, _Shared]] = WeakKeyDictionary()


def acquire_client(reactor: Any, gateway: Gateway, schedule: RetransmitSchedule) -> NATPMPClient:
    """
    The client for C{gateway} on C{reactor}, listening; made on first use.  Each call must be
    matched by one L{release_client}.  C{schedule} is the new client's default; callers that
    need their own pass it with each request.

    @raise OSError: (C{CannotListenError}) if no UDP port can be had; nothing is left open.
    """
    clients = _shared.setdefault(reactor, {})
    shared = clients.get(gateway)
    if shared is None:
        client = NATPMPClient(gateway.host, gateway.port, reactor, schedule)
        shared = clients[gateway] = _Shared(client, reactor.listenUDP(0, client))
    shared.users += 1
    return shared.client


def release_client(reactor: Any, client: NATPMPClient) -> None:
    """Give back a client from L{acquire_client}; the last user's release closes its port."""
    clients = _shared.get(reactor, {})
    gateway = Gateway(*client.gateway)
    shared = clients.get(gateway)
    if shared is None or shared.client is not client:
        return
    shared.users -= 1
    if shared.users <= 0:
        del clients[gateway]
        shared.port.stopListening()


def clients_in_use(reactor: Any) -> int:
    """How many shared clients are open on C{reactor} (for tests and resource checks)."""
    return len(_shared.get(reactor, {}))
