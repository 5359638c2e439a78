"""
The natpmp command's argument parsing and token substitution.
"""

from __future__ import annotations

import pytest

from txnatpmp import MappingSpec
from txnatpmp import __version__
from txnatpmp._cli import build_parser, parse_arguments
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
        (["run", "tcp:1", "--grace", "0", "--", "echo"], "positive number"),
        (["map", "tcp:\u0663\u0660\u0660\u0661\u0660"], "from 1 to 65535"),
        (["map", "\uff18\uff10"], "mapping '\uff18\uff10' is not PROTOCOL:PORT"),
        (["map", "tcp:1", "-l", "\u0663"], "lifetime"),
        (["map", "tcp:1", "--attempts", "\u0663"], "from 1 to 20"),
        (["map", "tcp:1", "-g", "198.51.100.1:\u0665\u0663\u0665\u0661"], "gateway port"),
        (["hold", "tcp:1", "--for", "\u0663"], "positive number"),
        (["map", "70000"], "not '70000'"),
        (["map", "tcp:1:2:3"], "'tcp:1:2:3'"),
        (["hold", "tcp"], "'tcp'"),
        (["address", "-l", "60"], "unrecognized arguments: -l"),
        (["address", "-u"], "unrecognized arguments: -u"),
        (["unmap", "tcp:1", "-l", "60"], "unrecognized arguments: -l"),
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


def test_version() -> None:
    with pytest.raises(SystemExit) as exit:
        parse_arguments(["--version"])
    assert exit.value.code == 0


def test_version_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_arguments(["--version"])
    assert capsys.readouterr().out == f"natpmp (txnatpmp) {__version__}\n"


def _help(name: str) -> str:
    return build_parser().subcommands[name].format_help()


def test_each_subcommands_help_lists_only_what_applies() -> None:
    assert "--lifetime" not in _help("address") and "--udp" not in _help("address")
    assert "--lifetime" not in _help("unmap") and "--udp" in _help("unmap")
    for name in ("map", "hold", "run"):
        assert "--lifetime" in _help(name) and "--gateway" in _help(name)
    assert "--for" in _help("hold") and "--for" not in _help("map")
    assert "--gateway" not in _help("demo")


def test_run_help_explains_tokens_variables_and_signals() -> None:
    text = _help("run")
    for words in ("%p", "%h", "%P", "%H", "%%", "NATPMP_LOCAL_PORT", "NATPMP_LOCAL_ADDRESS",
                  "NATPMP_PUBLIC_PORT", "NATPMP_PUBLIC_ADDRESS", "SIGKILL", "--grace", "127",
                  "126"):
        assert words in text


def test_run_takes_a_protocol_alone_for_a_free_local_port() -> None:
    args = parse_arguments(["run", "tcp", "udp:53", "--", "echo", "%p"])
    assert args.specs == [MappingSpec("tcp", 0), MappingSpec("udp", 53)]
    with pytest.raises(SystemExit):
        parse_arguments(["map", "tcp"])  # map and hold name their ports


def test_map_public_private_zero_means_any() -> None:
    assert parse_arguments(["map", "-g", "198.51.100.1", "0", "0"]).specs == [
        MappingSpec("tcp", 0, 0)]
    assert parse_arguments(["map", "0", "5353"]).specs == [MappingSpec("tcp", 5353, 0)]


# The older tools' forms (py-natpmp's natpmp-client.py, the Ruby gem)


def test_py_natpmp_form_maps_once() -> None:
    args = parse_arguments(["-u", "-l", "1800", "60009", "60010"])
    assert (args.command, args.form, args.lifetime) == ("map", "py-natpmp", 1800)
    assert args.specs == [MappingSpec("udp", 60010, 60009)]
    args = parse_arguments(["-g", "198.51.100.1", "60011", "60022"])
    assert args.gateway == ("198.51.100.1", 5351) and args.command == "map"
    assert args.specs == [MappingSpec("tcp", 60022, 60011)]
    assert parse_arguments(["60009", "0"]).specs == [MappingSpec("tcp", 0, 60009)]


def test_gem_form_with_a_command_holds_while_it_runs_through_sh() -> None:
    args = parse_arguments(["-p", "1234", "echo %p %h %P %H"])
    assert (args.command, args.form, args.shell) == ("run", "gem", True)
    assert args.program == ["echo %p %h %P %H"] and args.specs == [MappingSpec("tcp", 1234)]
    assert args.lifetime == 7200
    args = parse_arguments(["echo %p"])  # no -p: a free local port
    assert args.command == "run" and args.specs == [MappingSpec("tcp", 0)]


def test_gem_form_without_a_command_maps_once_for_ttl() -> None:
    args = parse_arguments(["-p", "1234", "-P", "5555", "-t", "udp", "--ttl", "60"])
    assert (args.command, args.form, args.lifetime) == ("map", "gem", 60)
    assert args.specs == [MappingSpec("udp", 1234, 5555)]
    assert parse_arguments(["-t", "tcp"]).specs == [MappingSpec("tcp", 0)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-u", "70000", "5353"], "PUBLIC port must be a number from 0 to 65535, not '70000'"),
        (["-u", "5353", "x"], "PRIVATE port must be a number from 0 to 65535, not 'x'"),
        (["60009", "\u0663"], "invalid choice"),
        (["-p", "80x", "echo"], "-p must be a number from 1 to 65535, not '80x'"),
        (["-p", "\uff18\uff10"], "not '\uff18\uff10'"),
        (["-t", "sctp"], "-t must be tcp or udp, not 'sctp'"),
        (["--ttl", "soon"], "not 'soon'"),
        (["-l", "60", "--ttl", "60", "-p", "1"], "give the lifetime once"),
        (["-p", "1", "echo", "%p"], "one COMMAND, quoted as one argument"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["-v", "address"], "options go after the command: natpmp address"),
        (["-u", "./server"], "unknown command './server'"),
        (["-u"], "give a command"),
    ],
)
def test_older_forms_errors_quote_what_was_typed(argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parse_arguments(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_the_subcommand_list_is_the_parsers() -> None:
    from txnatpmp._cli._parsing import SUBCOMMANDS

    assert set(SUBCOMMANDS) == set(build_parser().subcommands)


@pytest.mark.parametrize("argv", [["address"], ["map", "tcp:1"], ["unmap", "tcp:1"],
                                  ["hold", "tcp:1"], ["run", "tcp:1", "--", "true"],
                                  ["60009", "60009"], ["-p", "1234", "echo %p"]])
def test_method_on_every_command_defaults_to_auto(argv: list[str]) -> None:
    cut = argv.index("--") if "--" in argv else len(argv)
    assert parse_arguments(argv).method == "auto"
    for method in ("auto", "pcp", "natpmp"):
        with_method = argv[:cut] + ["--method", method] + argv[cut:]
        if argv[0].isdigit() or argv[0].startswith("-"):  # the older forms: options first
            with_method = ["--method", method] + argv
        assert parse_arguments(with_method).method == method


@pytest.mark.parametrize("value", ["igd", "PCP", "", "nat-pmp"])
def test_an_unknown_method_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse_arguments(["map", "tcp:1", "--method", value])
    assert stopped.value.code == 2
    assert "--method" in capsys.readouterr().err
