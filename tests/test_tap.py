"""
The natpmp plugin's options, and the plugin as pip installs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from twisted.python.usage import UsageError

from txnatpmp import MappingService, MappingSpec
from txnatpmp._tap import Options, makeService

ROOT = Path(__file__).parent.parent


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_repeatable_maps_and_defaults() -> None:
    options = parse("--map", "tcp:60010", "-m", "udp:5353:15353")
    assert options["map"] == [MappingSpec("tcp", 60010), MappingSpec("udp", 5353, 15353)]
    assert options["lifetime"] == 7200 and options["gateway"] is None


def test_gateway_lifetime_and_status_file() -> None:
    options = parse("-m", "tcp:1", "-g", "198.51.100.1:15351", "-l", "600", "--status-file", "s")
    assert options["gateway"] == ("198.51.100.1", 15351)
    assert options["lifetime"] == 600 and options["status-file"] == "s"
    assert parse("-m", "tcp:1", "-g", "198.51.100.1")["gateway"] == ("198.51.100.1", 5351)


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "at least one --map"),
        (["-m", "sctp:80"], "must be tcp or udp"),
        (["-m", "tcp:0"], "from 1 to 65535"),
        (["-m", "tcp:65536"], "from 1 to 65535"),
        (["-m", "tcp:http"], "from 1 to 65535"),
        (["-m", "tcp:80:0"], "external port"),
        (["-m", "tcp"], "PROTOCOL:PORT"),
        (["-m", "tcp:1:2:3"], "PROTOCOL:PORT"),
        (["-m", "tcp:1", "-l", "0"], "lifetime"),
        (["-m", "tcp:1", "-l", "soon"], "lifetime"),
        (["-m", "tcp:1", "-g", "gateway.lan"], "IPv4 address"),
        (["-m", "tcp:1", "-g", "198.51.100.1:x"], "gateway port"),
        (["-m", "tcp:1", "-g", "198.51.100.1:0"], "gateway port"),
        (["-m", "tcp:1", "--colour"], "colour"),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(*argv)


def test_make_service_keeps_every_map() -> None:
    service = makeService(parse("-m", "tcp:60010", "-m", "udp:60011", "-g", "198.51.100.1"))
    assert isinstance(service, MappingService)
    assert service.specs == [MappingSpec("tcp", 60010), MappingSpec("udp", 60011)]
    assert service.gateway == "198.51.100.1" and service.running == 0


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """txnatpmp installed with pip into a folder of its own, the repository out of sight."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    yield {**os.environ, "PYTHONPATH": str(target)}


def run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], env=env, cwd="/", capture_output=True,
                          text=True, timeout=60)


def test_installed_plugin_is_listed_by_twist_and_twistd(installed: dict[str, str]) -> None:
    where = run(installed, "-c", "import txnatpmp; print(txnatpmp.__file__)")
    assert where.stdout.startswith(installed["PYTHONPATH"])
    assert "natpmp" in run(installed, "-m", "twisted", "--help").stdout
    twistd = "import sys; sys.argv = ['twistd', '--help']; from twisted.scripts.twistd import run; run()"
    assert "natpmp" in run(installed, "-c", twistd).stdout


def test_installed_plugin_rejects_a_missing_map(installed: dict[str, str]) -> None:
    result = run(installed, "-m", "twisted", "natpmp")
    assert result.returncode != 0
    assert "at least one --map" in result.stdout + result.stderr
    help_text = run(installed, "-m", "twisted", "natpmp", "--help").stdout
    assert "--map" in help_text and "--gateway" in help_text
