"""
The C{natpmp} command line: subcommands, and the older tools' forms it also accepts.

Everything a user types is checked here, before anything is sent, and an error quotes what they
typed.  The result is an C{argparse.Namespace} with C{command}, C{specs} (L{MappingSpec}s; an
C{internal_port} of 0 means "pick a free local port") and the options of that command.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn, Sequence

from .. import __version__
from .._spec import (
    DEFAULT_LIFETIME,
    Gateway,
    MappingSpec,
    check_families,
    gateway_family,
    is_ascii_number,
    parse_gateway,
    parse_lifetime,
    parse_seconds,
    parse_spec,
)

EXAMPLES = """\
examples:
  natpmp address                         the external address
  natpmp map tcp:8080                    forward tcp 8080 for 2 hours (any external port)
  natpmp map tcp:8080:80 udp:5353        suggest external port 80; and udp 5353
  natpmp map -u 5353                     bare ports: tcp, or udp with -u
  natpmp map -u 15353 5353               two bare ports: PUBLIC PRIVATE, as natpmp-client.py
  natpmp unmap tcp:8080                  delete it again;  natpmp unmap --all tcp
  natpmp map --method natpmp tcp:8080    NAT-PMP even where the gateway speaks PCP
                                         (--method on every command; default auto: PCP
                                         where the gateway speaks it, else NAT-PMP)
  natpmp hold tcp:60010 --for 3600       keep it renewed for an hour, then delete it
  natpmp run tcp:8000 -- python3 -m http.server %p
                                         serve while mapped (see natpmp run --help)
  natpmp demo                            see it all against a gateway double, no router needed

the older tools' forms, accepted as they were:
  natpmp [-u] [-l LIFETIME] [-g GATEWAY] PUBLIC PRIVATE
                                         py-natpmp's natpmp-client.py: map once
                                         (PUBLIC 0: any external port; PRIVATE 0: a free
                                         local port)
  natpmp [-t tcp|udp] [-p PORT] [-P PUBPORT] [--ttl SECONDS] [-v] ['COMMAND']
                                         the Ruby gem: with COMMAND (run by /bin/sh, with
                                         %p %h %P %H), hold the mapping while it runs;
                                         without, map once for --ttl seconds (default 7200);
                                         no -p: a free local port

SIGINT, SIGTERM and SIGHUP stop any command at any stage and delete what it created.
exit status: 0 done, 1 the gateway refused or did not answer, 2 a usage error, 126/127 run's
command cannot be run / was not found, 128+N stopped by signal N (130, 143, 129), else run's
command's own status.
"""

RUN_HELP = """\
Create the mappings, run COMMAND while keeping them renewed, and delete them when it ends.
Nothing is sent until COMMAND is found: exit 127 when it is not found, 126 when it cannot be
run (as shells do); otherwise natpmp exits with COMMAND's status.

tokens in COMMAND's arguments (from the first mapping):
  %p  the local port            %h  this host's address towards the gateway
  %P  the public port           %H  the gateway's external address
  %%  a percent sign            any other % stays as it is

environment variables for COMMAND:
  NATPMP_LOCAL_PORT  NATPMP_LOCAL_ADDRESS  NATPMP_PUBLIC_PORT  NATPMP_PUBLIC_ADDRESS

signals: SIGINT, SIGTERM and SIGHUP are passed to COMMAND (a Ctrl-C typed at the terminal
reaches it directly, once); if it has not ended after --grace seconds (default 5) it gets
SIGKILL.  The mappings are deleted in every case, and natpmp exits
128 + the signal's number (130, 143, 129).

A SPEC may be a protocol alone (natpmp run tcp -- CMD %p): a free local port is picked.

examples:
  natpmp run tcp:8000 -- python3 -m http.server %p
  natpmp run tcp -- python3 -m http.server %p
  natpmp run tcp:8000 --shell -- 'echo "reach me at $NATPMP_PUBLIC_ADDRESS:%P"; exec ./serve'
"""

USAGE_ERROR = 2

SUBCOMMANDS = ("address", "map", "unmap", "hold", "run", "demo")

#: The values of C{--method}.
METHOD_CHOICES = ("auto", "pcp", "natpmp", "upnp")

#: Seconds a command run by C{natpmp run} has to end after a signal before it gets SIGKILL.
DEFAULT_GRACE = 5.0


class _Parser(argparse.ArgumentParser):
    """The top-level parser; it keeps its subcommands' parsers in C{subcommands}."""

    subcommands: dict[str, argparse.ArgumentParser]


def _gateway(text: str) -> Gateway:
    try:
        return parse_gateway(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class _GatewayAction(argparse.Action):
    """C{-g ADDRESS}, once per family: an IPv4 gateway goes to C{gateway}, an IPv6 router
    (C{fe80::1%eth0}) to C{gateway6}."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        gateway: Gateway = values
        name = "gateway6" if gateway_family(gateway.host) == 6 else "gateway"
        if getattr(namespace, name, None) is not None:
            parser.error(f"-g given twice for IPv{gateway_family(gateway.host)}: "
                         f"{getattr(namespace, name).host} and {gateway.host}")
        setattr(namespace, name, gateway)


def _family(text: str) -> tuple[int, ...]:
    try:
        return check_families(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def check_family_options(args: argparse.Namespace) -> str | None:
    """What is wrong with C{--family}, C{-g} and C{--method} together, if anything."""
    families = args.family
    for name, family in (("gateway", 4), ("gateway6", 6)):
        given = getattr(args, name, None)
        if given is not None and family not in families:
            return (f"-g {given.host} is an IPv{family} gateway, but --family is "
                    f"{''.join(map(str, families))} (--family {family} or 46)")
    if 6 in families and args.method not in ("auto", "pcp"):
        return (f"--family {''.join(map(str, families))} needs PCP: IPv6 pinholes are made "
                f"with PCP only, not --method {args.method}")
    return None


def _lifetime(text: str) -> int:
    try:
        return parse_lifetime(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seconds(text: str) -> float:
    try:
        return parse_seconds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _attempts(text: str) -> int:
    if not is_ascii_number(text) or not 1 <= int(text) <= 20:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 20, not {text!r}")
    return int(text)


def _talking_options() -> argparse.ArgumentParser:
    """Options of every subcommand that talks to a gateway."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-g", "--gateway", type=_gateway, action=_GatewayAction,
                         metavar="ADDRESS[:PORT]",
                         help="the gateway (default: the default route's gateway); with "
                              "--family 6 or 46 the IPv6 router (fe80::1%%eth0) may be given "
                              "too, with a second -g")
    options.add_argument("--family", type=_family, default=(4,), metavar="4|6|46",
                         help="4: an IPv4 mapping (the default); 6: an IPv6 pinhole in the "
                              "router's firewall (PCP); 46: both")
    options.add_argument("--attempts", type=_attempts, default=9, metavar="N",
                         help="transmissions before giving up on a silent gateway "
                              "(default 9, about 128 s, as RFC 6886 says)")
    options.add_argument("--method", choices=METHOD_CHOICES, default="auto",
                         help="the protocol: auto (PCP where the gateway speaks it, else "
                              "NAT-PMP; the default), pcp or natpmp")
    options.add_argument("--json", action="store_true", help="print JSON lines for scripts")
    options.add_argument("-v", "--verbose", action="store_true", help="tell more")
    return options


def _udp_option() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-u", "--udp", action="store_true",
                         help="bare port numbers mean udp (default tcp)")
    return options


def _lifetime_option() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-l", "--lifetime", type=_lifetime, default=DEFAULT_LIFETIME,
                         metavar="SECONDS",
                         help=f"lifetime to request (default {DEFAULT_LIFETIME})")
    return options


def build_parser() -> _Parser:
    talking, udp, lifetime = _talking_options(), _udp_option(), _lifetime_option()
    parser = _Parser(prog="natpmp", description="Port mappings on a PCP (RFC 6887) or NAT-PMP (RFC 6886) gateway.",
                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"natpmp (txnatpmp) {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=argparse.ArgumentParser)
    commands.add_parser("address", parents=[talking], help="print the external address",
                        description="Print the gateway's external address.")
    spec_help = "tcp:PORT, tcp:PORT:EXTERNAL, udp:PORT or a bare PORT"
    map_ = commands.add_parser("map", parents=[talking, udp, lifetime],
                               help="create mappings once and print them",
                               description="Create mappings once and print them; they last "
                                           "their lifetime unless deleted with unmap.")
    map_.add_argument("specs", nargs="+", metavar="SPEC", help=spec_help)
    hold = commands.add_parser("hold", parents=[talking, udp, lifetime],
                               help="keep mappings alive until interrupted, then delete them",
                               description="Keep mappings renewed (also through gateway "
                                           "reboots) until SIGINT, SIGTERM, SIGHUP or --for "
                                           "runs out, then delete them.")
    hold.add_argument("specs", nargs="+", metavar="SPEC", help=spec_help)
    hold.add_argument("--for", dest="duration", type=_seconds, metavar="SECONDS",
                      help="stop after this long")
    unmap = commands.add_parser("unmap", parents=[talking, udp], help="delete mappings",
                                description="Delete mappings this host made.  A PCP mapping can only be "
                                            "deleted with the nonce that made it: natpmp map "
                                            "keeps it in $XDG_STATE_HOME/txnatpmp/ (or "
                                            "~/.local/state/txnatpmp/) for this command.")
    unmap.add_argument("specs", nargs="*", metavar="SPEC", help=spec_help)
    unmap.add_argument("--all", choices=["tcp", "udp"], help="delete every mapping of a protocol")
    run = commands.add_parser("run", parents=[talking, udp, lifetime],
                              usage="natpmp run [options] SPEC... -- COMMAND [ARGS...]",
                              help="hold mappings while a command runs",
                              description=RUN_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("specs", nargs="+", metavar="SPEC",
                     help=spec_help + ", or tcp / udp alone for a free local port")
    run.add_argument("--shell", action="store_true",
                     help="run COMMAND through /bin/sh: one argument is a shell script as it "
                          "is; several are quoted, each stays one word")
    run.add_argument("--grace", type=_seconds, default=DEFAULT_GRACE, metavar="SECONDS",
                     help=f"after a signal, how long COMMAND may take to end before SIGKILL "
                          f"(default {DEFAULT_GRACE:g})")
    commands.add_parser("demo", help="a tour against a gateway double on loopback",
                        description="Map, renew, survive a simulated reboot and an address "
                                    "change, clean up: against a gateway double on loopback, "
                                    "never the real router.")
    parser.subcommands = dict(commands.choices)
    return parser


def _bare_port(value: str, what: str = "port", low: int = 1) -> int:
    if not is_ascii_number(value) or not low <= int(value) <= 0xFFFF:
        raise ValueError(f"{what} must be a number from {low} to 65535, not {value!r}")
    return int(value)


def public_private(public: str, private: str, protocol: str) -> MappingSpec:
    """py-natpmp's C{PUBLIC PRIVATE}: 0 for PUBLIC is any external port, for PRIVATE a free
    local port."""
    return MappingSpec(
        protocol,  # type: ignore[arg-type]
        _bare_port(private, "PRIVATE port", low=0),
        _bare_port(public, "PUBLIC port", low=0),
    )


def parse_cli_specs(values: Sequence[str], udp: bool, protocol_alone: bool = False,
                    old_form: bool = False) -> list[MappingSpec]:
    """
    Mapping specs as the command takes them: C{tcp:8080[:80]}, or bare ports with the protocol
    from C{-u}; with C{protocol_alone}, C{tcp} or C{udp} for a free local port (port 0 here).
    With C{old_form}, exactly two bare numbers are py-natpmp's C{PUBLIC PRIVATE}.
    """
    protocol = "udp" if udp else "tcp"
    if old_form and len(values) == 2 and all(is_ascii_number(v) for v in values):
        return [public_private(values[0], values[1], protocol)]
    specs = []
    for value in values:
        if is_ascii_number(value):
            specs.append(MappingSpec(protocol, _bare_port(value)))  # type: ignore[arg-type]
        elif protocol_alone and value.strip().lower() in ("tcp", "udp"):
            specs.append(MappingSpec(value.strip().lower(), 0))  # type: ignore[arg-type]
        else:
            specs.append(parse_spec(value))
    return specs


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line; exits 2 with a usage message when it is wrong."""
    parser = build_parser()
    argv = list(argv)
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    if argv and argv[0] not in parser.subcommands and argv[0] not in ("-h", "--help",
                                                                       "--version"):
        if not command and _looks_like_an_older_form(argv):
            return parse_older_form(argv)
    if not argv or argv[0] not in parser.subcommands:
        parser.parse_args(argv)  # help, version, or a usage error about the command: exits
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
            args.specs = parse_cli_specs(args.specs, args.udp,
                                         protocol_alone=args.command == "run",
                                         old_form=args.command == "map")
        except ValueError as error:
            sub.error(str(error))
    problem = check_family_options(args) if hasattr(args, "family") else None
    if problem is not None:
        sub.error(problem)
    args.form = "natpmp"
    return args


# The older tools' forms

_OLDER_USAGE = ("natpmp [-u] [-l LIFETIME] [-g GATEWAY] PUBLIC PRIVATE\n"
                "       natpmp [-t tcp|udp] [-p PORT] [-P PUBPORT] [--ttl SECONDS] [-v] "
                "['COMMAND']\n"
                "       natpmp COMMAND ...  (natpmp --help lists the commands)")


class _OlderParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"usage: {_OLDER_USAGE}\nnatpmp: error: {message}\n")


def _older_parser() -> _OlderParser:
    parser = _OlderParser(prog="natpmp", add_help=False, allow_abbrev=False)
    parser.add_argument("-u", "--udp", action="store_true")
    parser.add_argument("-l", "--lifetime", metavar="SECONDS")
    parser.add_argument("--ttl", metavar="SECONDS")
    parser.add_argument("-g", "--gateway", type=_gateway, action=_GatewayAction,
                        metavar="ADDRESS[:PORT]")
    parser.add_argument("--family", type=_family, default=(4,))
    parser.add_argument("-t", "--type", dest="protocol", metavar="tcp|udp")
    parser.add_argument("-p", "--port", dest="private", metavar="PORT")
    parser.add_argument("-P", "--public-port", dest="public", metavar="PUBPORT")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--attempts", type=_attempts, default=9)
    parser.add_argument("--method", choices=METHOD_CHOICES, default="auto")
    parser.add_argument("words", nargs="*")
    return parser


def _looks_like_an_older_form(argv: list[str]) -> bool:
    """
    Options first (C{natpmp -u 5353 5353}, C{natpmp -p 1234 ...}), two bare numbers
    (C{natpmp 60009 60009}), or a single command string (C{natpmp 'echo %p'}).  A mistyped
    command name is none of these: it gets argparse's "invalid choice".
    """
    first = argv[0]
    if first.startswith("-"):
        return True
    if len(argv) == 2 and all(is_ascii_number(word) for word in argv):
        return True
    return len(argv) == 1 and _looks_like_a_command_string(first)


def _looks_like_a_command_string(word: str) -> bool:
    return any(c.isspace() or c == "%" for c in word)


def parse_older_form(argv: Sequence[str]) -> argparse.Namespace:
    """py-natpmp's C{natpmp-client.py} form and the Ruby gem's, as C{map} or C{run}."""
    parser = _older_parser()
    given = parser.parse_intermixed_args(list(argv))
    gem = any(getattr(given, name) is not None for name in ("ttl", "protocol", "private",
                                                               "public"))
    args = argparse.Namespace(gateway=given.gateway, attempts=given.attempts, json=given.json,
                              method=given.method, family=given.family,
                              gateway6=getattr(given, "gateway6", None),
                              verbose=given.verbose, program=[], shell=False,
                              grace=DEFAULT_GRACE, duration=None, all=None)
    try:
        problem = check_family_options(args)
        if problem is not None:
            raise ValueError(problem)
        if given.lifetime is not None and given.ttl is not None:
            raise ValueError("give the lifetime once: -l or --ttl")
        lifetime_text = given.ttl if given.ttl is not None else given.lifetime
        args.lifetime = (DEFAULT_LIFETIME if lifetime_text is None
                         else parse_lifetime(lifetime_text))
        if not gem and len(given.words) == 2:
            args.form = "py-natpmp"
            args.command = "map"
            public, private = given.words
            args.specs = [public_private(public, private, "udp" if given.udp else "tcp")]
            return args
        for word in given.words:
            if word in SUBCOMMANDS:
                raise ValueError(f"options go after the command: natpmp {word} [options] "
                                 f"(natpmp {word} --help)")
        if not gem and not (given.words and _looks_like_a_command_string(given.words[0])):
            if given.words:
                raise ValueError(f"unknown command {given.words[0]!r} (natpmp --help lists "
                                 "the commands)")
            raise ValueError("give a command (natpmp --help), PUBLIC PRIVATE ports, or -p PORT")
        if len(given.words) > 1:
            raise ValueError("the Ruby gem's form takes one COMMAND, quoted as one argument "
                             f"(natpmp -p PORT 'COMMAND'); got {len(given.words)}: "
                             + " ".join(repr(w) for w in given.words))
        args.form = "gem"
        protocol = (given.protocol or ("udp" if given.udp else "tcp")).lower()
        if protocol not in ("tcp", "udp"):
            raise ValueError(f"-t must be tcp or udp, not {given.protocol!r}")
        private = 0 if given.private is None else _bare_port(given.private, "-p")
        public = 0 if given.public is None else _bare_port(given.public, "-P")
        args.specs = [MappingSpec(protocol, private, public)]  # type: ignore[arg-type]
        if given.words:
            args.command = "run"
            args.shell = True
            args.program = [given.words[0]]
        else:
            args.command = "map"
        return args
    except ValueError as error:
        parser.error(str(error))
