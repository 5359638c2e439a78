"""
Keeping mappings alive: the L{MappingService} façade over the link to the gateway (a state
machine), one keeper per mapping, the shared clients, shutdown and the status file.
"""

from .machine import State
from .service import MappingService

__all__ = ["MappingService", "State"]
