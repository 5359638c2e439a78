"""
Map a port through a FakeGateway on loopback: the whole client API in a few lines, with no router.

Against a real router, use NATPMPClient(await find_gateway()) instead of the FakeGateway.
"""

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from txnatpmp import NATPMPClient
from txnatpmp.testing import FakeGateway


async def main(reactor) -> None:
    gateway = FakeGateway(external_address="203.0.113.7")
    gateway_port = gateway.listen(reactor)  # 127.0.0.1, any free port
    client = NATPMPClient("127.0.0.1", gateway_port.getHost().port, reactor=reactor)
    reactor.listenUDP(0, client, interface="127.0.0.1")

    public = await client.get_external_address()
    print(f"external address: {public.address} (gateway up for {public.epoch} s)")

    mapping = await client.map_port("tcp", 8080, external_port=8080, lifetime=3600)
    print(f"tcp 8080 is reachable at {public.address}:{mapping.external_port} "
          f"for {mapping.lifetime} s")

    await client.unmap_port("tcp", 8080)
    print("mapping deleted; the gateway holds", len(gateway.mappings), "mappings")


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor)))
