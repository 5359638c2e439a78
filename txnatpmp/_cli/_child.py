"""
The command that C{natpmp run} runs: found before anything is sent, started, signalled, and
killed when it outstays its grace period.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
from typing import Any, Mapping as Env, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

#: Exit statuses as shells give them.
NOT_EXECUTABLE = 126
NOT_FOUND = 127


class CannotRun(Exception):
    """The command cannot be run; C{status} is the shell's exit status for the reason."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def resolve(program: str, environ: Env[str, str] | None = None) -> str:
    """
    The file C{program} names, as a shell would find it (on C{PATH} unless it has a slash).

    @raise CannotRun: with status 127 when nothing is found, 126 when what is found cannot be
        run (not executable, a directory, or a script whose C{#!} interpreter is missing).
    """
    environ = os.environ if environ is None else environ
    if not program:
        raise CannotRun("command not found: ''", NOT_FOUND)
    if "/" in program:
        if not os.path.lexists(program):
            raise CannotRun(f"{program}: no such file", NOT_FOUND)
        found = program
    else:
        candidates = [os.path.join(folder or ".", program)
                      for folder in environ.get("PATH", os.defpath).split(os.pathsep)]
        runnable = [c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)]
        if runnable:
            found = runnable[0]
        elif any(os.path.isfile(c) for c in candidates):
            found = next(c for c in candidates if os.path.isfile(c))
        else:
            raise CannotRun(f"command not found: {program}", NOT_FOUND)
    if os.path.isdir(found):
        raise CannotRun(f"{program}: is a directory", NOT_EXECUTABLE)
    if not os.access(found, os.X_OK):
        raise CannotRun(f"{program}: permission denied (not executable)", NOT_EXECUTABLE)
    _check_interpreter(program, found)
    return found


def _check_interpreter(program: str, path: str) -> None:
    try:
        with open(path, "rb") as script:
            start = script.read(256)
    except OSError as error:
        raise CannotRun(f"{program}: {error.strerror}", NOT_EXECUTABLE) from None
    if not start.startswith(b"#!"):
        return
    words = start[2:].split(b"\n", 1)[0].split()
    if not words:
        return
    interpreter = os.fsdecode(words[0])
    if not (os.path.isfile(interpreter) and os.access(interpreter, os.X_OK)):
        raise CannotRun(f"{program}: bad interpreter {interpreter}: no such program",
                        NOT_EXECUTABLE)


def shell_command(arguments: Sequence[str]) -> list[str]:
    """
    C{/bin/sh -c SCRIPT}: one argument is the script as it is; several are quoted, so that each
    stays one word (C{printf '[%s]' 'a b'} prints C{[a b]}).
    """
    script = arguments[0] if len(arguments) == 1 else shlex.join(arguments)
    return ["/bin/sh", "-c", script]


def free_port(protocol: str) -> int:
    """A local port of C{protocol} that nothing uses right now (bound, then released)."""
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


def local_address_towards(host: str) -> str:
    """The address this host uses to reach C{host} (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))
        return str(probe.getsockname()[0])


def terminal_signals_our_group() -> bool:
    """Whether this process group is the foreground of its controlling terminal, so that the
    terminal's Ctrl-C goes to every process in it."""
    try:
        tty = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(tty) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(tty)


class Child(ProcessProtocol):
    """
    The running command; C{ended} fires with its exit status (128 + N when signal N killed it).
    """

    def __init__(self, reactor: Any, grace: float) -> None:
        self._reactor = reactor
        self.grace = grace
        self.ended: Deferred[int] = Deferred()
        self.process: Any = None
        self._kill_timer: Any = None

    def start(self, executable: str, argv: list[str], env: dict[str, str]) -> None:
        """
        @raise CannotRun: if the system refuses to start it (status 126).
        """
        try:
            self.process = self._reactor.spawnProcess(
                self, executable, argv, env=env, childFDs={0: 0, 1: 1, 2: 2}
            )
        except OSError as error:
            raise CannotRun(f"cannot start {argv[0]}: {error.strerror or error}",
                            NOT_EXECUTABLE) from None

    def stop(self, signum: int) -> None:
        """
        Pass a stop signal on; SIGKILL follows after the grace period if it is still there.

        A Ctrl-C typed at the terminal reaches the command already (it is in natpmp's process
        group, the terminal's foreground): it is not sent a second time, which would cut the
        command's own clean-up short.
        """
        if self.ended.called or self.process is None:
            return
        if not (signum == signal.SIGINT and terminal_signals_our_group()):
            try:
                self.process.signalProcess(signum)
            except Exception:  # it ended a moment ago (ProcessExitedAlready)
                return
        if self._kill_timer is None:
            self._kill_timer = self._reactor.callLater(self.grace, self._kill)

    def _kill(self) -> None:
        if not self.ended.called and self.process is not None:
            try:
                self.process.signalProcess(signal.SIGKILL)
            except Exception:
                pass

    def processEnded(self, reason: Failure) -> None:
        if self._kill_timer is not None and self._kill_timer.active():
            self._kill_timer.cancel()
        if isinstance(reason.value, ProcessDone):
            status = 0
        elif isinstance(reason.value, ProcessTerminated):
            code = reason.value.exitCode
            status = 128 + (reason.value.signal or 0) if code is None else code
        else:  # pragma: no cover - Twisted reports only those two
            status = 1
        self.ended.callback(status)
