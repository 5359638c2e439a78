"""
UPnP-IGD: the texts (L{ssdp}, L{description}, L{soap}: sans-IO, no Twisted), the HTTP edge
(L{http}), the client (L{client}) and its test double (L{fake}).
"""

from .client import UPnPClient

__all__ = ["UPnPClient"]
