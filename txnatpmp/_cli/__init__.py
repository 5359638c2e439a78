"""
The C{natpmp} command (also C{python -m txnatpmp}): the reactor's life, output streams, stop
signals and exit statuses.  Parsing is in L{_parsing}, the subcommands in L{_commands}.

Exit statuses: 0 done; 1 the gateway refused or did not answer; 2 a usage error; 126/127 the
command of C{natpmp run} cannot be run / was not found; 128 + N stopped by signal N (130 SIGINT,
143 SIGTERM, 129 SIGHUP); otherwise C{natpmp run}'s command's own status.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence, cast

from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogBeginner
from twisted.python.failure import Failure

from .._errors import GatewayNotFound, GatewayTimeout, NATPMPError
from .._reactor import global_reactor
from .._source import NoGlobalAddress
from ._child import CannotRun
from ._commands import COMMANDS, Context
from ._output import Output, Stream, ensure_standard_fds, quiet_about
from ._parsing import USAGE_ERROR, build_parser, parse_arguments, parse_cli_specs
from ._signals import Interrupted, StopSignals

__all__ = ["build_parser", "entry_point", "main", "parse_arguments", "parse_cli_specs"]

GATEWAY_ERROR = 1

#: Where the service's own news is said through events the command renders: the log does not
#: say it again (unless -v).
_EVENT_NAMESPACES = ("txnatpmp._service",)


def log_observer(verbose: bool, write: Callable[[str], object],
                 events_rendered: bool = False) -> ILogObserver:
    """Library news for a person: warnings and retries always, the rest with -v."""

    def observe(event: LogEvent) -> None:
        namespace = event.get("log_namespace", "")
        ours = namespace.startswith("txnatpmp")
        level = event.get("log_level", LogLevel.info)
        if events_rendered and not verbose and namespace.startswith(_EVENT_NAMESPACES) and (
            level < LogLevel.error
        ):
            return
        if (ours and (verbose or event.get("retransmit") or level >= LogLevel.warn)) or (
            level >= LogLevel.error
        ):
            text = formatEvent(event)
            if event.get("log_failure") is not None and verbose:
                text += "\n" + event["log_failure"].getTraceback()
            write(f"natpmp: {text}\n")

    return cast(ILogObserver, observe)


def outcome_of(failure: Failure, write: Callable[[str], object]) -> int:
    """The exit status for how a command failed, after one line saying why."""
    error = failure.value
    if isinstance(error, Interrupted):
        return 128 + error.signum
    if isinstance(error, CannotRun):
        write(f"natpmp: {error}\n")
        return error.status
    if isinstance(error, GatewayNotFound):
        write(f"natpmp: {failure.getErrorMessage()}; give the gateway with -g ADDRESS"
              + (" (the IPv6 router: -g fe80::1%IFACE)" if "IPv6" in str(error) else "") + "\n")
        return GATEWAY_ERROR
    if isinstance(error, GatewayTimeout):
        write(f"natpmp: {failure.getErrorMessage()}; is NAT-PMP (or PCP) enabled on the router, "
              "and is it the gateway? (another one: -g ADDRESS)\n")
        return GATEWAY_ERROR
    if isinstance(error, NATPMPError):
        write(f"natpmp: {failure.getErrorMessage()}\n")
        return GATEWAY_ERROR
    if isinstance(error, NoGlobalAddress):
        write(f"natpmp: {failure.getErrorMessage()} to open a pinhole for "
              "(--family 4 maps IPv4 only)\n")
        return GATEWAY_ERROR
    if isinstance(error, ValueError):
        write(f"natpmp: {failure.getErrorMessage()}\n")
        return USAGE_ERROR
    write(f"natpmp: unexpected error\n{failure.getTraceback()}")
    return GATEWAY_ERROR


def _standard_streams() -> None:
    ensure_standard_fds()
    # Python leaves sys.stdout None when fd 1 was closed at start; argparse still writes there.
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


def main(argv: Sequence[str] | None = None, reactor: Any = None) -> int:
    """Run the command; return its exit status."""
    _standard_streams()
    if reactor is None:
        reactor = global_reactor()
    stop = StopSignals(reactor)
    stop.install()  # from now on a signal is noted, never fatal
    args = parse_arguments(sys.argv[1:] if argv is None else argv)

    err_stream = Stream(2)

    def err(text: str) -> None:
        err_stream.write(text)

    def stdout_broken(error: OSError) -> None:
        if not quiet_about(error):
            err(f"natpmp: cannot write the output ({error.strerror}); going on\n")

    out_stream = Stream(1, stdout_broken)
    events_rendered = args.command in ("hold", "run", "demo")
    globalLogBeginner.beginLoggingTo(
        [log_observer(getattr(args, "verbose", False), err, events_rendered)],
        redirectStandardIO=False, discardBuffer=True,
    )
    # run's own news goes to stderr: stdout belongs to the command it runs.
    out = Output(getattr(args, "json", False), err if args.command == "run" else out_stream.write)
    outcome: list[int] = []

    def start() -> None:
        stop.install()  # again: the reactor put its own SIGINT and SIGTERM handlers in place
        if args.command == "demo":
            from ._demo import demo

            d: Deferred[int] = Deferred.fromCoroutine(demo(reactor, out_stream.write, stop))
        else:
            d = Deferred.fromCoroutine(COMMANDS[args.command](Context(reactor, args, out, stop)))
        d.addErrback(outcome_of, err)
        d.addCallback(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    out_stream.silence()
    err_stream.silence()
    signalled = stop.exit_status
    if signalled is not None:
        return signalled
    if outcome:
        return outcome[0]
    exit_signal = getattr(reactor, "_exitSignal", None)
    return 128 + exit_signal if exit_signal else GATEWAY_ERROR


def entry_point() -> None:
    """The console script."""
    status = main()
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    sys.exit(status)
