"""
The natpmp plugin's options, and the plugin as pip installs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.python.usage import UsageError

from txnatpmp import MappingService, MappingSpec
from txnatpmp._tap import Options, StopOnHangup, makeService

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
        (["-m", "tcp:1", "--method", "igd"], "methods must be 'auto' or some of pcp, natpmp, upnp"),
        (["-m", "tcp:1", "--method", "PCP"], "methods must be 'auto' or some of pcp, natpmp, upnp"),
        (["-m", "tcp:\u0663\u0660\u0660\u0661\u0660"], "from 1 to 65535"),
        (["-m", "tcp:\uff18\uff10"], "from 1 to 65535"),
        (["-m", "tcp:1", "-l", "\u0663"], "lifetime"),
        (["-m", "tcp:1", "-g", "198.51.100.1:\u0665\u0663\u0665\u0661"], "gateway port"),
        (["-m", "tcp:1", "--family", "5"], "family must be 4, 6 or 46"),
        (["-m", "tcp:1", "--family", ""], "family must be 4, 6 or 46"),
        (["-m", "tcp:1", "--family", "6", "--method", "natpmp"], "needs PCP"),
        (["-m", "tcp:1", "-g", "fe80::1%eth0"], "is IPv6, but --family is 4"),
        (["-m", "tcp:1", "--family", "6", "-g", "198.51.100.1"], "is IPv4, but --family is 6"),
        (["-m", "tcp:1", "--family", "6", "-g", "fe80::1"], "needs its interface"),
        (["-m", "tcp:1", "-g", "198.51.100.1", "-g", "198.51.100.2"], "given twice for IPv4"),
        (["-m", "tcp:1", "--stop-timeout", "0"], "--stop-timeout must be a positive"),
        (["-m", "tcp:1", "--stop-timeout", "soon"], "--stop-timeout must be a positive"),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(*argv)


def test_make_service_keeps_every_map() -> None:
    top = makeService(parse("-m", "tcp:60010", "-m", "udp:60011", "-g", "198.51.100.1"))
    [service] = [s for s in top if isinstance(s, MappingService)]
    assert service.specs == [MappingSpec("tcp", 60010), MappingSpec("udp", 60011)]
    assert service.gateway == "198.51.100.1" and service.running == 0
    assert [type(s) for s in top if not isinstance(s, MappingService)] == [StopOnHangup]


@pytest.mark.parametrize(
    "path, message",
    [
        ("", "empty string"),
        ("   ", "empty string"),
        ("/nonexistent-folder-txnatpmp/status.json", "does not exist"),
        ("/proc/x.json", "cannot be written"),
        (".", "is a directory"),
    ],
)
def test_a_status_file_that_cannot_be_written_is_a_usage_error(path: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse("-m", "tcp:1", "--status-file", path)


def test_a_writable_status_file_is_accepted_and_the_check_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    path = tmp_path / "status.json"
    assert parse("-m", "tcp:1", "--status-file", str(path))["status-file"] == str(path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match="is a directory"):
        parse("-m", "tcp:1", "--status-file", str(tmp_path))


@pytest.mark.parametrize("argv, methods", [
    ([], ("pcp", "natpmp", "upnp")),
    (["--method", "auto"], ("pcp", "natpmp", "upnp")),
    (["--method", "pcp"], ("pcp",)),
    (["--method", "natpmp"], ("natpmp",)),
])
def test_method_option_reaches_the_service(argv: list[str], methods: tuple[str, ...]) -> None:
    """twist natpmp --method: auto by default; the service tries exactly those methods."""
    top = makeService(parse("-m", "tcp:60010", "-g", "198.51.100.1", *argv))
    [service] = [s for s in top if isinstance(s, MappingService)]
    assert service.methods == methods


def test_family_gateways_and_stop_timeout_reach_the_service() -> None:
    """twist natpmp --family 46 with both gateways: an IPv4 mapping and an IPv6 pinhole each."""
    top = makeService(parse("-m", "tcp:60010", "--family", "46", "-g", "198.51.100.1",
                            "-g", "fe80::1%eth0", "--stop-timeout", "4.5"))
    [service] = [s for s in top if isinstance(s, MappingService)]
    assert service.families == (4, 6)
    assert (service.gateway_for(4), service.gateway_for(6)) == ("198.51.100.1", "fe80::1%eth0")
    assert service.stop_timeout == 4.5
    only6 = makeService(parse("-m", "tcp:60010", "--family", "6", "-g", "fe80::1%eth0"))
    [service] = [s for s in only6 if isinstance(s, MappingService)]
    assert (service.families, service.gateway) == ((6,), "fe80::1%eth0")
    assert parse("-m", "tcp:1")["families"] == (4,)


def test_synopsis_lists_every_option() -> None:
    synopsis = Options.synopsis
    for option in ("--map", "--gateway", "--lifetime", "--status-file", "--method", "--family",
                   "--stop-timeout"):
        assert option in synopsis


class _Reactor:
    def __init__(self) -> None:
        self.stopped_by: list[int] = []

    def sigTerm(self, signum: int, frame: Any = None) -> None:
        self.stopped_by.append(signum)


def test_sighup_stops_the_daemon_as_sigterm_does_while_running() -> None:
    reactor = _Reactor()
    before = signal.getsignal(signal.SIGHUP)
    hangup = StopOnHangup(reactor)
    hangup.startService()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert reactor.stopped_by == [signal.SIGHUP]
    finally:
        hangup.stopService()
    assert signal.getsignal(signal.SIGHUP) == before


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """txnatpmp installed with pip into a folder of its own, the repository out of sight."""
    target = tmp_path_factory.mktemp("site")
    # Offline, with the running environment's setuptools (the test extra brings it: venvs of
    # Python 3.12 and later no longer do).
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}{result.stderr}"
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
    assert "--status-file" in help_text.split("Options:")[0]  # in the synopsis line


def test_installed_command_runs(installed: dict[str, str]) -> None:
    from txnatpmp import __version__

    result = run(installed, "-m", "txnatpmp", "--version")
    assert (result.stdout, result.returncode) == (f"natpmp (txnatpmp) {__version__}\n", 0)


def test_a_mapping_given_twice_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="tcp 60010 is given twice"):
        parse("--map", "tcp:60010", "--map", "tcp:60010:80")
