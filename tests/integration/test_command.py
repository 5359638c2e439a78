"""
The natpmp command in the client namespace, against the real gateway.  No -g: the command finds
the lab's gateway from the namespace's default route.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from lab import CLIENT, EXTERNAL_ADDRESS, Lab
from lab import eventually

SERVER = """\
import socket, sys
port, forever = int(sys.argv[1]), len(sys.argv) > 2
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", port))
listener.listen()
while True:
    connection, _ = listener.accept()
    connection.sendall(b"served on port %d\\n" % port)
    connection.close()
    if not forever:
        sys.exit(7)
"""


def natpmp(lab: Lab, *argv: str):  # type: ignore[no-untyped-def]
    return lab.run("client", sys.executable, "-m", "txnatpmp", *argv, check=False, timeout=60)


def server_script(lab: Lab) -> str:
    path = Path(lab.workdir) / "server.py"
    path.write_text(SERVER)
    return str(path)


def reach(lab: Lab, port: int) -> bytes:
    """Connect from the wan host once the server behind the mapping listens."""
    def attempt() -> bytes:
        try:
            return lab.wan_tcp(port, timeout=2)
        except AssertionError:  # refused: not listening yet
            return b""
    return eventually(attempt, timeout=10, interval=0.1)  # type: ignore[no-any-return]


def test_natpmp_address(lab: Lab) -> None:
    result = natpmp(lab, "address")
    assert (result.stdout, result.returncode) == (f"{EXTERNAL_ADDRESS}\n", 0), result.stderr


def test_natpmp_map_then_unmap(lab: Lab) -> None:
    result = natpmp(lab, "map", "tcp:60010", "-l", "600")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"tcp {EXTERNAL_ADDRESS}:60010 -> local port 60010 for 600 s\n"
    assert lab.mappings() == [("tcp", 60010, CLIENT, 60010)]
    assert natpmp(lab, "unmap", "tcp:60010").returncode == 0
    assert lab.mappings() == []


def test_natpmp_run_serves_returns_the_status_and_cleans_up(lab: Lab) -> None:
    process = lab.spawn("client", sys.executable, "-m", "txnatpmp", "run", "tcp:60020", "--",
                        sys.executable, server_script(lab), "%p")
    assert reach(lab, 60020) == b"served on port 60020\n"
    assert process.wait(20) == 7
    assert lab.mappings() == []
    assert "deleted tcp:60020" in lab.output(process)


def test_natpmp_run_interrupted_with_sigint_cleans_up(lab: Lab) -> None:
    process = lab.spawn("client", sys.executable, "-m", "txnatpmp", "run", "tcp:60021", "--",
                        sys.executable, server_script(lab), "%p", "forever")
    assert reach(lab, 60021) == b"served on port 60021\n"
    assert lab.mappings() == [("tcp", 60021, CLIENT, 60021)]
    process.send_signal(signal.SIGINT)
    assert process.wait(20) == 128 + signal.SIGINT  # the server died of the forwarded SIGINT
    assert lab.mappings() == []
