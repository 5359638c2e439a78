"""
The natpmp: endpoint with Twisted's own web server, against the real gateway.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lab import CLIENT, GATEWAY_WAN, Lab
from lab import terminate
from lab import eventually


def test_twist_web_listens_through_the_nat(lab: Lab) -> None:
    site = Path(lab.workdir) / "site"
    site.mkdir()
    (site / "hello.txt").write_text("hello from behind the NAT\n")
    server = lab.spawn("client", sys.executable, "-m", "twisted", "--log-format", "text", "web",
                       "--listen", "natpmp:8080", "--path", str(site))
    eventually(lambda: lab.mappings() == [("tcp", 8080, CLIENT, 8080)])
    fetch = (
        "import urllib.request, sys\n"
        f"print(urllib.request.urlopen('http://{GATEWAY_WAN}:8080/hello.txt', timeout=5)"
        ".read().decode(), end='')\n"
    )
    assert lab.python("wan", fetch).stdout == "hello from behind the NAT\n"
    terminate(server)
    assert lab.mappings() == []
    assert "tcp 8080 is reachable at 80.100.100.1:8080" in lab.output(server)
