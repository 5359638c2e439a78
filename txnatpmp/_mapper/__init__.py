"""
The mapper layer: one interface (L{IPortMapper}) over the protocol clients, and discovery that
picks the best protocol a gateway speaks, shared by every front end in a process.
"""

from .interface import IPortMapper
from .natpmp import NATPMPMapper
from .pcp import PCPMapper
from .shared import METHODS, acquire_mapper, check_methods, forget_verdict, release_mapper
from .upnp import UPnPMapper

__all__ = ["IPortMapper", "METHODS", "NATPMPMapper", "PCPMapper", "UPnPMapper", "acquire_mapper",
           "check_methods", "forget_verdict", "release_mapper"]
