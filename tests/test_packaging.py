"""
What pip and PyPI get: one version, full metadata, and an sdist whose own tests run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from email.parser import Parser
from pathlib import Path
from typing import Iterator

import pytest

import txnatpmp

ROOT = Path(__file__).parent.parent
_JUNK = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                               ".mypy_cache", ".hypothesis", ".benchmarks", ".pytest_cache",
                               "_trial_temp*", "dropin.cache")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The sdist, built offline from a copy of the tree (the tree itself stays untouched)."""
    work = tmp_path_factory.mktemp("sdist")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=_JUNK)
    result = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(work / "dist")],
                            cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"setup.py sdist failed:\n{result.stdout}{result.stderr}"
    [archive] = (work / "dist").glob("txnatpmp-*.tar.gz")
    yield archive


def _members(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def test_the_sdist_has_everything_the_tests_and_examples_need(sdist: Path) -> None:
    members = _members(sdist)
    wanted = set()
    for folder in ("tests", "examples", "bench", "twisted", "txnatpmp"):
        for path in (ROOT / folder).rglob("*"):
            relative = path.relative_to(ROOT)
            if path.is_file() and not _JUNK(str(path.parent), [path.name]) and not any(
                part in ("__pycache__", "_trial_temp") or part.startswith("_trial_temp")
                for part in relative.parts
            ):
                wanted.add(str(relative))
    assert wanted - members == set()
    assert {"README.md", "LICENSE", "setup.py", "pyproject.toml", "tests/__init__.py",
            "tests/conftest.py", "txnatpmp/py.typed"} <= members


def test_one_version_and_full_metadata(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        [info] = [m for m in tar.getmembers() if m.name.endswith("/PKG-INFO")
                  and m.name.count("/") == 1]
        handle = tar.extractfile(info)
        assert handle is not None
        metadata = Parser().parsestr(handle.read().decode())
    assert metadata["Version"] == txnatpmp.__version__
    assert sdist.name == f"txnatpmp-{txnatpmp.__version__}.tar.gz"
    assert metadata["Author"] and metadata["Requires-Python"] == ">=3.10"
    assert metadata.get_all("Project-URL")
    classifiers = set(metadata.get_all("Classifier") or [])
    assert {"Typing :: Typed", "Framework :: Twisted"} <= classifiers
    # The license as an SPDX expression (setuptools 77 and later), or the older License field.
    assert "MIT" in (metadata["License-Expression"], metadata["License"])
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    # The version is written once: setup.py reads it from the package.
    assert not re.search(r"version\s*=\s*[\"']", (ROOT / "setup.py").read_text())


def test_tests_pass_in_an_unpacked_sdist(sdist: Path, tmp_path: Path) -> None:
    """The tests that need the sdist's extra files (fixtures, examples, the package layout)."""
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data") if sys.version_info >= (3, 12) else (
            tar.extractall(tmp_path))
    [unpacked] = tmp_path.glob("txnatpmp-*")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_gateway.py", "tests/test_examples.py", "tests/test_cli_parsing.py",
         "tests/test_wire.py"],
        cwd=unpacked, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout
