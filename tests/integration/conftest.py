"""
Fixtures for the real-gateway lab.  Without root and network namespaces the lab tests skip, with
the reason; under CI a skip fails the run (see tests/conftest.py).

Set TXNATPMP_LAB_DEBUG=1 to run miniupnpd with its debug log (kept in the lab's work folder).
"""

from __future__ import annotations

import atexit
import os
from typing import Callable, Iterator, TypeVar

import pytest

from lab import Lab, missing_requirements, remove_stale_labs


L = TypeVar("L", bound=Lab)

DEBUG = bool(os.environ.get("TXNATPMP_LAB_DEBUG"))


def running_lab(make: Callable[[], L]) -> Iterator[L]:
    """
    Build a lab with C{make}, start it, and close it afterwards (also when the run is
    interrupted); skip, with the reason, where labs cannot run.  For fixtures to C{yield from}.
    """
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(f"real-gateway lab unavailable: {reason}")
    remove_stale_labs()
    lab = make()
    atexit.register(lab.close)
    lab.start()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="session")
def lab_session() -> Iterator[Lab]:
    yield from running_lab(lambda: Lab(debug=DEBUG))


@pytest.fixture
def lab(lab_session: Lab) -> Iterator[Lab]:
    """The session's lab, handed back clean: no packet loss, no agents, no mappings."""
    yield lab_session
    lab_session.undrop()
    lab_session.stop_processes()
    if not lab_session.gateway_alive() or lab_session.mappings():
        lab_session.restart_gateway()


@pytest.fixture(scope="module")
def short_lived_lab() -> Iterator[Lab]:
    """A lab whose gateway grants lifetimes as short as 1 s, for watching renewals."""
    yield from running_lab(lambda: Lab(debug=DEBUG, min_lifetime=1))
