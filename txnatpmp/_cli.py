"""
The C{natpmp} command (also C{python -m txnatpmp}): argument parsing and the reactor's life.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence, cast

from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogBeginner
from twisted.python.failure import Failure

from ._commands import COMMANDS, Interrupts, Output
from ._errors import NATPMPError
from ._spec import MappingSpec, parse_gateway, parse_lifetime, parse_spec

EXAMPLES = """\
examples:
  natpmp address                         the external address
  natpmp map tcp:8080                    forward tcp 8080 for 2 hours (any external port)
  natpmp map tcp:8080:80 udp:5353        suggest external port 80; and udp 5353
  natpmp map -u 5353                     bare ports: tcp, or udp with -u
  natpmp map -u 5353 5353                the old natpmp-client.py form: PUBLIC PRIVATE
  natpmp unmap tcp:8080                  delete it again;  natpmp unmap --all tcp
  natpmp hold tcp:60010 --for 3600       keep it renewed for an hour, then delete it
  natpmp run tcp:8000 -- python3 -m http.server %p
                                         serve while mapped: %p %h local port/address,
                                         %P %H public port/address, %% a percent sign
  natpmp demo                            see it all against a gateway double, no router needed
"""

USAGE_ERROR = 2
GATEWAY_ERROR = 1


class _Parser(argparse.ArgumentParser):
    """The top-level parser; it keeps its subcommands' parsers in C{subcommands}."""

    subcommands: dict[str, argparse.ArgumentParser]


def _gateway(text: str) -> tuple[str, int]:
    try:
        return parse_gateway(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _lifetime(text: str) -> int:
    try:
        return parse_lifetime(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _attempts(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 20:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 20, not {text!r}")
    return int(text)


def build_parser() -> _Parser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-g", "--gateway", type=_gateway, metavar="ADDRESS[:PORT]",
                        help="the gateway (default: the default route's gateway)")
    common.add_argument("-l", "--lifetime", type=_lifetime, default=7200, metavar="SECONDS",
                        help="lifetime to request (default 7200)")
    common.add_argument("-u", "--udp", action="store_true",
                        help="bare port numbers mean udp (default tcp)")
    common.add_argument("--attempts", type=_attempts, default=9, metavar="N",
                        help="transmissions before giving up on a silent gateway "
                             "(default 9, about 128 s, as RFC 6886 says)")
    common.add_argument("--json", action="store_true", help="print JSON lines for scripts")
    common.add_argument("-v", "--verbose", action="store_true", help="tell more")

    parser = _Parser(prog="natpmp", description="Port mappings on a NAT-PMP (RFC 6886) gateway.",
                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=argparse.ArgumentParser)
    commands.add_parser("address", parents=[common], help="print the external address")
    for name, text in [("map", "create mappings once and print them"),
                       ("hold", "keep mappings alive until interrupted, then delete them")]:
        sub = commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("specs", nargs="+", metavar="SPEC",
                         help="tcp:PORT, tcp:PORT:EXTERNAL, udp:PORT or a bare PORT")
        if name == "hold":
            sub.add_argument("--for", dest="duration", type=_seconds, metavar="SECONDS",
                             help="stop after this long")
    unmap = commands.add_parser("unmap", parents=[common], help="delete mappings")
    unmap.add_argument("specs", nargs="*", metavar="SPEC")
    unmap.add_argument("--all", choices=["tcp", "udp"], help="delete every mapping of a protocol")
    run = commands.add_parser("run", parents=[common],
                              usage="natpmp run [options] SPEC... -- COMMAND [ARGS...]",
                              help="hold mappings while a command runs")
    run.add_argument("specs", nargs="+", metavar="SPEC")
    run.add_argument("--shell", action="store_true",
                     help="run COMMAND through /bin/sh (it is not, by default)")
    commands.add_parser("demo", help="a tour against a gateway double on loopback")
    parser.subcommands = dict(commands.choices)
    return parser


def parse_cli_specs(values: Sequence[str], udp: bool, old_form: bool) -> list[MappingSpec]:
    """
    Mapping specs as the command takes them: C{tcp:8080[:80]}, or bare ports with the protocol
    from C{-u}.  With C{old_form}, exactly two bare numbers are C{PUBLIC PRIVATE}.
    """
    protocol = "udp" if udp else "tcp"
    if old_form and len(values) == 2 and all(v.isdigit() for v in values):
        return [parse_spec(f"{protocol}:{values[1]}:{values[0]}")]
    return [parse_spec(f"{protocol}:{v}" if v.isdigit() else v) for v in values]


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line; exits 2 with a usage message when it is wrong."""
    parser = build_parser()
    argv = list(argv)
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    if not argv or argv[0] not in parser.subcommands:
        parser.parse_args(argv)  # help, or a usage error about the command: exits
    name = argv[0]
    sub = parser.subcommands[name]
    # Options may come between mappings (natpmp map tcp:80 -u 5353).
    args = sub.parse_intermixed_args(argv[1:])
    args.command = name
    if args.command == "run" and not command:
        sub.error("run needs -- COMMAND [ARGS...] after the mappings")
    if args.command != "run" and command:
        sub.error(f"unexpected -- {' '.join(command)}")
    args.program = command
    if args.command == "unmap" and bool(args.specs) == (args.all is not None):
        sub.error("give either mappings to delete or --all tcp|udp")
    if hasattr(args, "specs"):
        try:
            args.specs = parse_cli_specs(args.specs, args.udp, old_form=args.command == "map")
        except ValueError as error:
            sub.error(str(error))
    return args


def _log_observer(verbose: bool, write: Callable[[str], object]) -> ILogObserver:
    """Library news for a person: warnings and retries always, the rest with -v."""

    def observe(event: LogEvent) -> None:
        ours = event.get("log_namespace", "").startswith("txnatpmp")
        level = event.get("log_level", LogLevel.info)
        if (ours and (verbose or event.get("retransmit") or level >= LogLevel.warn)) or (
            level >= LogLevel.error
        ):
            text = formatEvent(event)
            if event.get("log_failure") is not None and verbose:
                text += "\n" + event["log_failure"].getTraceback()
            write(f"natpmp: {text}\n")

    return cast(ILogObserver, observe)


def _outcome(failure: Failure, write: Callable[[str], object]) -> int:
    if isinstance(failure.value, NATPMPError):
        write(f"natpmp: {failure.getErrorMessage()}\n")
        return GATEWAY_ERROR
    if isinstance(failure.value, ValueError):
        write(f"natpmp: {failure.getErrorMessage()}\n")
        return USAGE_ERROR
    write(f"natpmp: unexpected error\n{failure.getTraceback()}")
    return GATEWAY_ERROR


def main(argv: Sequence[str] | None = None, reactor: Any = None) -> int:
    """Run the command; return its exit status."""
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if reactor is None:
        from twisted.internet import reactor
    def err(text: str) -> None:
        sys.stdout.flush()  # keep the order of what a person reads
        sys.stderr.write(text)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    globalLogBeginner.beginLoggingTo([_log_observer(getattr(args, "verbose", False), err)],
                                     redirectStandardIO=False, discardBuffer=True)
    # run's own news goes to stderr: stdout belongs to the command it runs.
    out = Output(getattr(args, "json", False), err if args.command == "run" else write)
    interrupts = Interrupts(reactor)
    outcome: list[int] = []

    def start() -> None:
        interrupts.install()
        if args.command == "demo":
            from ._demo import demo

            d: Deferred[int] = Deferred.fromCoroutine(demo(reactor, write))
        else:
            d = Deferred.fromCoroutine(COMMANDS[args.command](reactor, args, out, interrupts))
        d.addErrback(_outcome, err)
        d.addCallback(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    sys.stdout.flush()
    return outcome[0] if outcome else GATEWAY_ERROR


def entry_point() -> None:
    """The console script."""
    sys.exit(main())
