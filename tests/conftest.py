"""
Suite-wide rules.

Under CI (the environment variable CI is set) a skipped test fails the run: CI installs everything
the suite needs and runs as root, so a skip there means a test silently did not run.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from txnatpmp.testing import FakeGateway

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") and _skipped and exitstatus in (0, 5):
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if os.environ.get("CI") and _skipped:
        terminalreporter.write_line(
            f"CI: {len(_skipped)} test(s) skipped, which fails the run: " + ", ".join(_skipped),
            red=True,
        )


@pytest.fixture
def loopback_gateway() -> Iterator[tuple[FakeGateway, int]]:
    """A L{FakeGateway} (NAT-PMP only) serving on 127.0.0.1, and its port."""
    fake = FakeGateway(external_address="80.100.100.1")
    port = fake.listen()
    yield fake, port.getHost().port
    port.stopListening()
