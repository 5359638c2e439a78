"""
The global reactor, imported only when a caller did not pass one.
"""

from __future__ import annotations

from typing import Any


def global_reactor() -> Any:
    """
    Return the global reactor.  Importing it at module level would install the default reactor
    before an application (or a test runner) could choose another.
    """
    from twisted.internet import reactor

    return reactor
