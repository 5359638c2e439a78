from setuptools import setup

setup(
    name="txnatpmp",
    version="0.1.0",
    description="NAT-PMP (RFC 6886) port mapping for Twisted: client, keep-alive service, twistd plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=["txnatpmp", "txnatpmp._cli", "twisted.plugins"],
    package_data={"txnatpmp": ["py.typed"]},
    entry_points={"console_scripts": ["natpmp = txnatpmp._cli:entry_point"]},
    install_requires=["Twisted>=24.7", "attrs>=22.2"],
    extras_require={
        # wheel: the plugin test builds an installed copy offline (--no-build-isolation)
        "test": ["pytest>=7", "pytest-twisted>=1.14", "hypothesis>=6", "wheel"],
        "dev": ["mypy>=1.10", "mypy-zope>=1.0"],
        # bench: nat-pmp is the peer client bench/peers.py measures txnatpmp against
        "bench": ["nat-pmp"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Networking",
    ],
)
