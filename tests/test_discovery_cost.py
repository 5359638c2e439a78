"""
Issue 14's benchmark goal, counted on a fake clock: C{auto} makes its first mapping after at
most one exchange more than a client that already knows the protocol (the PCP ANNOUNCE probe):
a service told the method, and for PCP the bare client too.  (A NAT-PMP service asks for the
external address before its first mapping, whichever way it was chosen, so that the address is
known when the mapping is reported.)
bench/methods.py measures the same against real gateways in the lab.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from txnatpmp import Mapping, MappingService, NATPMPClient, PCPClient
from txnatpmp.testing import GatewayRig, gateway_rig

ROUND_TRIP = 0.01  # the gateway answers each request after 10 ms


def requests_before(rig: GatewayRig, first: Deferred[Mapping]) -> int:
    """Advance the clock until C{first} fires; how many requests the gateway had by then."""
    for _ in range(1000):
        if first.called:
            return len(rig.gateway.received)
        rig.clock.advance(ROUND_TRIP / 4)
    raise AssertionError("no first mapping within 2.5 s")


def auto_first(rig: GatewayRig, **options: object) -> int:
    service = MappingService(rig.gateway_address, reactor=rig.host, announcements=False,
                             **options)  # type: ignore[arg-type]
    first = service.add_mapping("tcp:8080")
    service.startService()
    try:
        return requests_before(rig, first)
    finally:
        service.stopService()
        rig.run_for(5)


def direct_first(rig: GatewayRig, client: NATPMPClient | PCPClient) -> int:
    rig.host.listenUDP(0, client)
    return requests_before(rig, client.map_port("tcp", 8080, 8080, 7200))


def test_P42_auto_on_a_pcp_gateway_pays_one_exchange_more_than_a_pcp_client() -> None:
    rig = gateway_rig(pcp="miniupnpd", announce=False)
    rig.gateway.delay = ROUND_TRIP
    auto = auto_first(rig)
    rig = gateway_rig(pcp="miniupnpd", announce=False)
    rig.gateway.delay = ROUND_TRIP
    client = PCPClient(rig.gateway_address, 5351, rig.host, client_address=rig.host_address)
    assert (auto, direct_first(rig, client)) == (2, 1)


def test_P44_auto_on_a_natpmp_gateway_pays_one_exchange_more_than_a_natpmp_service() -> None:
    rig = gateway_rig(announce=False)
    rig.gateway.delay = ROUND_TRIP
    auto = auto_first(rig)
    rig = gateway_rig(announce=False)
    rig.gateway.delay = ROUND_TRIP
    told = auto_first(rig, methods=("natpmp",))
    assert (auto, told) == (3, 2)  # probe, address, map; address, map
