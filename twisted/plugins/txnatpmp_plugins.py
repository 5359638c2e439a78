# Twisted plugins of txnatpmp: one-line objects; the code lives in the txnatpmp package.
from twisted.application.service import ServiceMaker

natpmp = ServiceMaker(
    "txnatpmp", "txnatpmp._tap", "Keep NAT-PMP port mappings open on the gateway", "natpmp"
)

from txnatpmp.endpoints import NATPMPServerParser

natpmpServerEndpoint = NATPMPServerParser()
