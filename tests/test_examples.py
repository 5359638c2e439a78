"""
The examples the README shows run as documented.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_quickstart_maps_and_deletes() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True, text=True, timeout=60, env=ENV,
    )
    assert result.returncode == 0, result.stderr
    assert "tcp 8080 is reachable at 203.0.113.7:8080 for 3600 s" in result.stdout
    assert "the gateway holds 0 mappings" in result.stdout


def test_readme_fake_gateway_snippet_runs_as_shown() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Testing your code"):]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    check = (
        "\nfrom twisted.internet.defer import ensureDeferred\n"
        "async def check():\n"
        "    try:\n"
        "        print((await client.map_port('tcp', 8080)).external_port)\n"
        "    finally:\n"
        "        reactor.stop()\n"
        "reactor.callWhenRunning(lambda: ensureDeferred(check()))\n"
        "reactor.run()\n"
    )
    result = subprocess.run([sys.executable, "-c", snippet + check], capture_output=True,
                            text=True, timeout=60, env=ENV)
    assert (result.stdout, result.returncode) == ("8080\n", 0), result.stderr


def test_readme_gateway_rig_snippet_runs_as_shown() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("`gateway_rig()` builds"):]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", snippet + "print('held')\n"],
                            capture_output=True, text=True, timeout=60, env=ENV)
    assert (result.stdout, result.returncode) == ("held\n", 0), result.stderr
