import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# One version source: txnatpmp/__init__.py (read, not imported: nothing is installed yet).
VERSION = re.search(r'^__version__ = "([^"]+)"$',
                    (HERE / "txnatpmp" / "__init__.py").read_text(encoding="utf-8"),
                    re.MULTILINE).group(1)

setup(
    name="txnatpmp",
    version=VERSION,
    description="NAT-PMP (RFC 6886) port mapping for Twisted: client, keep-alive service, twistd plugin",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author="The txnatpmp developers",
    # An SPDX license expression (License-Expression: MIT), which supersedes the license
    # classifier (setuptools warns about the classifier and will refuse it).
    license="MIT",
    license_files=["LICENSE"],
    keywords=["nat-pmp", "pcp", "upnp", "port mapping", "nat traversal", "twisted"],
    project_urls={
        "Documentation": "https://pypi.org/project/txnatpmp/",
        "RFC 6886 (NAT-PMP)": "https://www.rfc-editor.org/rfc/rfc6886",
        "Twisted": "https://twisted.org",
    },
    python_requires=">=3.10",
    # Every txnatpmp package, found (txnatpmp._cli and whatever comes next); twisted.plugins has
    # no __init__.py, on purpose, and is named.
    packages=find_packages(include=["txnatpmp", "txnatpmp.*"]) + ["twisted.plugins"],
    package_data={"txnatpmp": ["py.typed"]},
    entry_points={"console_scripts": ["natpmp = txnatpmp._cli:entry_point"]},
    install_requires=["Twisted>=24.7", "attrs>=22.2"],
    extras_require={
        # setuptools and wheel: the plugin and sdist tests build offline (--no-build-isolation);
        # venvs of Python 3.12 and later no longer bring setuptools.
        "test": ["pytest>=7", "pytest-twisted>=1.14", "hypothesis>=6", "setuptools>=61",
                 "wheel"],
        "dev": ["mypy>=1.10", "mypy-zope>=1.0"],
        # bench: nat-pmp is the peer client bench/peers.py measures txnatpmp against (it needs
        # netifaces, which needs a C compiler; bench/peers.py runs without it and says so)
        "bench": ["nat-pmp"],
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: Twisted",
        "Intended Audience :: Developers",
        "Intended Audience :: System Administrators",
        "Operating System :: POSIX :: Linux",
        "Operating System :: MacOS",
        "Operating System :: Microsoft :: Windows",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet",
        "Topic :: System :: Networking",
        "Typing :: Typed",
    ],
)
