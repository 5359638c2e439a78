"""
The real-gateway lab: Debian's miniupnpd in network namespaces, for the integration tests
(tests/integration/) and the benchmarks (bench/).  See netns.py for the topology.
"""

from .netns import (
    ALLOWED_PORTS,
    CLIENT,
    EXTERNAL_ADDRESS,
    GATEWAY_LAN,
    GATEWAY_WAN,
    WAN_HOST,
    Agent,
    Lab,
    UPnPLab,
    eventually,
    let_epoch_advance,
    missing_requirements,
    remove_stale_labs,
    terminate,
)
from .netns import CLIENT6, GATEWAY_LAN6, GATEWAY_WAN6, WAN_HOST6  # IPv6 (issue 15)

__all__ = [
    "ALLOWED_PORTS",
    "Agent",
    "CLIENT",
    "EXTERNAL_ADDRESS",
    "GATEWAY_LAN",
    "GATEWAY_WAN",
    "Lab",
    "UPnPLab",
    "WAN_HOST",
    "eventually",
    "let_epoch_advance",
    "missing_requirements",
    "remove_stale_labs",
    "terminate",
]
__all__ += ["CLIENT6", "GATEWAY_LAN6", "GATEWAY_WAN6", "WAN_HOST6"]
