"""
The natpmp command's argument parsing and token substitution.
"""

from __future__ import annotations

import pytest

from txnatpmp import MappingSpec
from txnatpmp._cli import parse_arguments
from txnatpmp._results import Mapping
from txnatpmp._cli._tokens import Endpoints, substitute


def test_specs_bare_ports_and_udp_flag() -> None:
    args = parse_arguments(["map", "tcp:8080:80", "udp:5353", "9000"])
    assert args.specs == [MappingSpec("tcp", 8080, 80), MappingSpec("udp", 5353),
                          MappingSpec("tcp", 9000)]
    assert parse_arguments(["map", "-u", "5353"]).specs == [MappingSpec("udp", 5353)]


def test_old_natpmp_client_form_public_then_private() -> None:
    args = parse_arguments(["map", "-u", "-l", "600", "-g", "198.51.100.1", "15353", "5353"])
    assert args.specs == [MappingSpec("udp", 5353, 15353)]
    assert args.lifetime == 600 and args.gateway == ("198.51.100.1", 5351)
    # Only map takes that form: hold keeps two mappings.
    assert len(parse_arguments(["hold", "15353", "5353"]).specs) == 2


def test_run_keeps_the_command_exactly() -> None:
    args = parse_arguments(["run", "tcp:8000", "--shell", "--", "echo", "-l", "--", "%p"])
    assert args.program == ["echo", "-l", "--", "%p"]
    assert args.shell and args.specs == [MappingSpec("tcp", 8000)]


def test_unmap_all_and_hold_duration() -> None:
    assert parse_arguments(["unmap", "--all", "udp"]).all == "udp"
    assert parse_arguments(["hold", "tcp:1", "--for", "2.5"]).duration == 2.5


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "required"),
        (["frobnicate"], "invalid choice"),
        (["map"], "required"),
        (["map", "sctp:1"], "must be tcp or udp"),
        (["map", "tcp:0"], "from 1 to 65535"),
        (["map", "70000"], "from 1 to 65535"),
        (["map", "tcp:1", "-l", "0"], "lifetime"),
        (["map", "tcp:1", "-l", "-5"], "lifetime"),
        (["map", "tcp:1", "-g", "router.lan"], "IPv4 address"),
        (["map", "tcp:1", "-g", "198.51.100.1:99999"], "gateway port"),
        (["map", "tcp:1", "--attempts", "0"], "from 1 to 20"),
        (["map", "tcp:1", "--", "echo"], "unexpected --"),
        (["unmap"], "either mappings to delete or --all"),
        (["unmap", "tcp:1", "--all", "tcp"], "either mappings to delete or --all"),
        (["unmap", "--all", "icmp"], "invalid choice"),
        (["hold", "tcp:1", "--for", "0"], "positive number"),
        (["hold", "tcp:1", "--for", "soon"], "positive number"),
        (["run", "tcp:8000"], "run needs -- COMMAND"),
        (["run", "tcp:8000", "--"], "run needs -- COMMAND"),
        (["run", "--", "echo"], "required"),
    ],
)
def test_usage_errors_exit_2_with_a_usage_line(argv: list[str], message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parse_arguments(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: natpmp") and message in err


ENDPOINTS = Endpoints.of(Mapping("tcp", 8000, 18000, 7200, 0), "198.51.100.10", "80.100.100.1")


@pytest.mark.parametrize(
    "argument, expected",
    [
        ("%p", "8000"),
        ("%h:%p", "198.51.100.10:8000"),
        ("%H:%P", "80.100.100.1:18000"),
        ("%p%P", "800018000"),
        ("--port=%p", "--port=8000"),
        ("%%", "%"),
        ("%%p", "%p"),
        ("100%", "100%"),
        ("%", "%"),
        ("%x %", "%x %"),
        ("a b 'c' \"%p\"", "a b 'c' \"8000\""),
        ("", ""),
    ],
)
def test_token_substitution(argument: str, expected: str) -> None:
    assert substitute(argument, ENDPOINTS) == expected


def test_environment_for_the_command() -> None:
    assert ENDPOINTS.environment() == {
        "NATPMP_LOCAL_PORT": "8000",
        "NATPMP_LOCAL_ADDRESS": "198.51.100.10",
        "NATPMP_PUBLIC_PORT": "18000",
        "NATPMP_PUBLIC_ADDRESS": "80.100.100.1",
    }
