"""
A real NAT-PMP gateway (Debian's miniupnpd) in network namespaces, for integration tests.

Topology (see ../shared/lab.md of the project notes)::

    client ns                 gateway ns                        wan ns
    198.51.100.10 --veth-- 198.51.100.1 | 203.0.113.2 --veth-- 203.0.113.1
    default via .1            miniupnpd, nftables NAT           (the internet)

Everything created carries a tag with this process's pid, so a later run can remove what a killed
run left behind.  Nothing here sends traffic outside these namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AGENT = Path(__file__).with_name("agent.py")

GATEWAY_LAN = "198.51.100.1"
CLIENT = "198.51.100.10"
GATEWAY_WAN = "203.0.113.2"
WAN_HOST = "203.0.113.1"
EXTERNAL_ADDRESS = "80.100.100.1"  # what miniupnpd reports; nothing is ever sent to it
ALLOWED_PORTS = (1024, 65535)

PREFIX = "txnatpmp-"

NFT_CHAINS = """
table inet filter {
  chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
"""

_RULE = re.compile(
    r"(?:@nh,72,8 (?P<proto_num>0x[0-9a-f]+) th|(?P<proto>tcp|udp)) dport (?P<external>\d+)"
    r" dnat ip to (?P<address>[\d.]+):(?P<internal>\d+)"
)
_PROTOCOL_NUMBERS = {"0x6": "tcp", "0x11": "udp"}


def missing_requirements() -> str | None:
    """Why the lab cannot run here, or C{None} if it can."""
    if sys.platform != "linux":
        return "the lab needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, nftables)"
    for tool in ("ip", "nft", "miniupnpd"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 nftables miniupnpd-nftables)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns does not work here: {probe.stderr.strip()}"
    return None


def remove_stale_labs() -> None:
    """Delete namespaces left by lab runs whose process is gone."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.match(rf"{PREFIX}(\d+)-", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _kill_namespace_processes(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _kill_namespace_processes(namespace: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    for pid in pids.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


class Lab:
    """
    One lab: three namespaces and a miniupnpd.  Use as a context manager, or call L{start} and
    L{close} (which is safe to call twice, and after a failed start).

    @param debug: Run miniupnpd in the foreground with its debug log (about 30 times slower per
        request; for diagnosing, never for measuring).  The log is C{self.workdir / "miniupnpd.log"}.
    """

    _count = 0

    def __init__(self, debug: bool = False, min_lifetime: int = 120, *,
                 ipv6: bool = False) -> None:
        Lab._count += 1
        self.ipv6 = ipv6  # the IPv6 step (see _build_ipv6): global addresses, PCP pinholes
        self.tag = f"{os.getpid()}-{Lab._count}"
        short = f"{os.getpid() % 100000}{Lab._count}"
        self.ns = {role: f"{PREFIX}{self.tag}-{role}" for role in ("gw", "client", "wan")}
        self.veth = {
            "client": f"tc{short}",
            "gw_lan": f"tl{short}",
            "gw_wan": f"tw{short}",
            "wan": f"tx{short}",
        }
        self.debug = debug
        self.min_lifetime = min_lifetime
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.tag}-"))
        self._gateway: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._agents: list[Agent] = []
        self._processes: list[tuple[subprocess.Popen[bytes], Any]] = []

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Building and tearing down

    def start(self) -> None:
        try:
            self._build()
            self.start_gateway()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        ns, veth = self.ns, self.veth
        for name in ns.values():
            _sh("ip", "netns", "add", name)
        _sh("ip", "link", "add", veth["client"], "type", "veth", "peer", "name", veth["gw_lan"])
        _sh("ip", "link", "add", veth["gw_wan"], "type", "veth", "peer", "name", veth["wan"])
        placement = [("client", "client"), ("gw_lan", "gw"), ("gw_wan", "gw"), ("wan", "wan")]
        for link, role in placement:
            _sh("ip", "link", "set", veth[link], "netns", ns[role])
        for link, role, address in [
            ("client", "client", f"{CLIENT}/24"),
            ("gw_lan", "gw", f"{GATEWAY_LAN}/24"),
            ("gw_wan", "gw", f"{GATEWAY_WAN}/24"),
            ("wan", "wan", f"{WAN_HOST}/24"),
        ]:
            _sh("ip", "-n", ns[role], "addr", "add", address, "dev", veth[link])
            _sh("ip", "-n", ns[role], "link", "set", veth[link], "up")
        for name in ns.values():
            _sh("ip", "-n", name, "link", "set", "lo", "up")
        _sh("ip", "-n", ns["client"], "route", "add", "default", "via", GATEWAY_LAN)
        _sh("ip", "-n", ns["gw"], "route", "add", "default", "via", WAN_HOST)
        self.gw("sysctl", "-qw", "net.ipv4.ip_forward=1")
        rules = self.workdir / "chains.nft"
        rules.write_text(NFT_CHAINS)
        self.gw("nft", "-f", str(rules))
        self.config = self.workdir / "miniupnpd.conf"
        self.config.write_text(
            "\n".join(
                [
                    f"ext_ifname={veth['gw_wan']}",
                    f"ext_ip={EXTERNAL_ADDRESS}",
                    f"listening_ip={veth['gw_lan']}",
                    "enable_natpmp=yes",
                    "enable_upnp=no",
                    "system_uptime=no",
                    f"min_lifetime={self.min_lifetime}",
                    "max_lifetime=86400",
                    f"allow {ALLOWED_PORTS[0]}-{ALLOWED_PORTS[1]} 198.51.100.0/24 "
                    f"{ALLOWED_PORTS[0]}-{ALLOWED_PORTS[1]}",
                    "deny 0-65535 0.0.0.0/0 0-65535",
                    "",
                ]
            )
        )
        if self.ipv6:
            self._build_ipv6()

    def close(self) -> None:
        """Stop everything and delete the namespaces (their veths go with them)."""
        try:
            self.stop_processes()
            self.stop_gateway()
        finally:  # a gateway that would not stop was killed: the namespaces go all the same
            for name in self.ns.values():
                _kill_namespace_processes(name)
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            if not self.debug:  # keep the debug log for reading
                shutil.rmtree(self.workdir, ignore_errors=True)

    def stop_processes(self) -> None:
        """Kill the agents and spawned processes that are still running."""
        for agent in self._agents:
            agent.close()
        self._agents.clear()
        for process, log in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait()
            log.close()
        self._processes.clear()

    # The gateway

    def start_gateway(self) -> None:
        """Start miniupnpd as a router does (daemonized), or in debug mode in the foreground."""
        pidfile = self.workdir / "miniupnpd.pid"
        pidfile.unlink(missing_ok=True)
        argv = ["ip", "netns", "exec", self.ns["gw"], "miniupnpd", "-f", str(self.config)]
        if self.debug:
            log = open(self.workdir / "miniupnpd.log", "ab")
            self._gateway = subprocess.Popen(argv + ["-d"], stdout=log, stderr=log)
            self._pid = self._gateway.pid
        else:
            _sh(*argv, "-P", str(pidfile))
            _wait_for(pidfile.exists, 5, "miniupnpd did not write its pid file")
            _wait_for(lambda: pidfile.read_text().strip().isdigit(), 5, "empty miniupnpd pid file")
            self._pid = int(pidfile.read_text())
        _wait_for(self._gateway_listening, 5, "miniupnpd is not listening on udp 5351")

    def _gateway_listening(self) -> bool:
        sockets = self.gw("ss", "-Hlun", "sport", "=", ":5351").stdout
        return GATEWAY_LAN in sockets and (not self.ipv6 or "[::]:5351" in sockets)

    def stop_gateway(self) -> None:
        if self._pid is None:
            return
        pid, self._pid = self._pid, None
        if _running(pid):  # else it died earlier: its pid may be another program's by now
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            _stop_daemon(pid)
        if self._gateway is not None:  # our child in debug mode: reaped here
            self._gateway.wait(1)
            self._gateway = None

    def restart_gateway(self) -> None:
        """A router reboot: miniupnpd restarts with an empty rule set, so its epoch restarts at
        0 and its mappings are gone.  (Stopping miniupnpd alone leaves its rules in nftables.)"""
        self.stop_gateway()
        for chain in ("miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"):
            self.gw("nft", "flush", "chain", "inet", "filter", chain)
        self.start_gateway()

    def signal_address_change(self) -> None:
        """SIGUSR1: miniupnpd announces its external address (NAT-PMP and PCP formats)."""
        assert self._pid is not None
        os.kill(self._pid, signal.SIGUSR1)

    def gateway_alive(self) -> bool:
        return self._pid is not None and _running(self._pid)

    def mappings(self) -> list[tuple[str, int, str, int]]:
        """The gateway's live mappings, from its nftables rules: (protocol, external port,
        internal address, internal port)."""
        listing = self.gw("nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd").stdout
        found = []
        for match in _RULE.finditer(listing):
            protocol = match["proto"] or _PROTOCOL_NUMBERS.get(match["proto_num"], "?")
            found.append(
                (protocol, int(match["external"]), match["address"], int(match["internal"]))
            )
        return sorted(found)

    def drop(self, percent: int) -> None:
        """Drop C{percent}% of the NAT-PMP datagrams reaching the gateway (no netem here)."""
        self.undrop()
        self.gw("nft", "add", "table", "inet", "lossy")
        self.gw("nft", "add", "chain", "inet", "lossy", "input",
                "{ type filter hook input priority -10; }")
        chance = [] if percent >= 100 else ["numgen", "random", "mod", "100", "<", str(percent)]
        self.gw("nft", "add", "rule", "inet", "lossy", "input", "udp", "dport", "5351",
                *chance, "counter", "drop")

    def undrop(self) -> None:
        self.gw("nft", "delete", "table", "inet", "lossy", check=False)

    def count_requests(self) -> None:
        """Start counting NAT-PMP datagrams reaching the gateway (see L{requests_counted})."""
        self.gw("nft", "delete", "table", "inet", "counting", check=False)
        self.gw("nft", "add", "table", "inet", "counting")
        self.gw("nft", "add", "chain", "inet", "counting", "input",
                "{ type filter hook input priority -20; }")
        self.gw("nft", "add", "rule", "inet", "counting", "input", "udp", "dport", "5351",
                "counter")

    def requests_counted(self) -> int:
        """NAT-PMP datagrams that reached the gateway since L{count_requests}."""
        listing = self.gw("nft", "list", "table", "inet", "counting").stdout
        match = re.search(r"counter packets (\d+)", listing)
        return int(match.group(1)) if match else 0

    # Running things in the namespaces

    def run(self, role: str, *argv: str, timeout: float = 30, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside namespace C{role} (C{"gw"}, C{"client"} or C{"wan"})."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.ns[role], *argv],
            capture_output=True, text=True, timeout=timeout, input=input, env=_child_env(),
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} in {role} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def gw(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("gw", *argv, check=check)

    def python(self, role: str, code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run Python code (with txnatpmp importable) inside a namespace."""
        return self.run(role, sys.executable, "-c", code, timeout=timeout)

    def spawn(self, role: str, *argv: str) -> subprocess.Popen[bytes]:
        """Start a long-running command inside a namespace; its output goes to a log file in
        the lab's work folder, and the lab kills it on close if it is still running."""
        log = open(self.workdir / f"{role}-{len(self._processes)}.log", "wb")
        process = subprocess.Popen(["ip", "netns", "exec", self.ns[role], *argv],
                                   stdout=log, stderr=subprocess.STDOUT, env=_child_env())
        self._processes.append((process, log))
        return process

    def output(self, process: subprocess.Popen[bytes]) -> str:
        """What a process started with L{spawn} printed so far."""
        for candidate, log in self._processes:
            if candidate is process:
                log.flush()
                return Path(log.name).read_text(errors="replace")
        raise KeyError(process)

    def connected_agent(self) -> Agent:
        """An agent whose client talks to the lab gateway (found from the default route)."""
        agent = self.agent()
        answer = agent.call("connect")
        assert answer == {"gateway": GATEWAY_LAN}, answer
        return agent

    def twist(self, *options: str) -> subprocess.Popen[bytes]:
        """C{twist natpmp OPTIONS} as a daemon in the client namespace, logging plain text."""
        return self.spawn("client", sys.executable, "-m", "twisted", "--log-format", "text",
                          "natpmp", *options)

    def set_client_link(self, up: bool) -> None:
        """Take the client's LAN link down (sends fail: network unreachable) or up again,
        restoring its default route as DHCP would."""
        self.run("client", "ip", "link", "set", self.veth["client"], "up" if up else "down")
        if up:
            self.run("client", "ip", "route", "replace", "default", "via", GATEWAY_LAN)

    @staticmethod
    def open_files(process: subprocess.Popen[bytes]) -> int:
        """How many file descriptors C{process} has open."""
        return len(os.listdir(f"/proc/{process.pid}/fd"))

    def agent(self) -> Agent:
        """A txnatpmp process in the client namespace, driven line by line (see agent.py)."""
        agent = Agent(self.ns["client"])
        self._agents.append(agent)
        return agent

    def forge_from_lan(self, source: tuple[str, int], destination: tuple[str, int],
                       data: bytes) -> None:
        """Send a datagram to the client from another address on the LAN (added to the
        gateway's LAN interface for the purpose), as a hostile host would."""
        self.gw("ip", "addr", "replace", f"{source[0]}/24", "dev", self.veth["gw_lan"])
        code = (
            "import socket\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind({source!r})\n"
            f"s.sendto(bytes.fromhex({data.hex()!r}),{destination!r})\n"
        )
        self.python("gw", code)

    def wan_tcp(self, port: int, timeout: float = 10) -> bytes:
        """Connect from the wan host to the gateway's WAN address and read until closed."""
        code = (
            "import socket,sys\n"
            f"s=socket.create_connection(({GATEWAY_WAN!r},{port}),timeout={timeout})\n"
            "data=b''\n"
            "while chunk:=s.recv(4096): data+=chunk\n"
            "sys.stdout.write(data.hex())\n"
        )
        return bytes.fromhex(self.python("wan", code, timeout=timeout + 5).stdout)

    def wan_udp(self, port: int, payload: bytes, timeout: float = 5) -> bytes:
        """Send a datagram from the wan host to the gateway's WAN address; return the reply."""
        code = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout"
            f"({timeout})\n"
            f"s.sendto(bytes.fromhex({payload.hex()!r}),({GATEWAY_WAN!r},{port}))\n"
            "sys.stdout.write(s.recvfrom(2048)[0].hex())\n"
        )
        return bytes.fromhex(self.python("wan", code, timeout=timeout + 5).stdout)

    # PCP (RFC 6887) and a NAT-PMP-only gateway beside miniupnpd

    def start_natpmp_only_gateway(self, port: int = 5352) -> subprocess.Popen[bytes]:
        """
        Run txnatpmp's FakeGateway (NAT-PMP only: it answers PCP with the 8-byte version-0
        "unsupported version" reply) on the gateway's LAN address, port C{port}, beside
        miniupnpd.  The lab stops it on close.
        """
        code = (
            "from twisted.internet import reactor\n"
            "from txnatpmp.testing import FakeGateway\n"
            f"FakeGateway().listen(reactor, {port}, {GATEWAY_LAN!r})\n"
            "reactor.run()\n"
        )
        process = self.spawn("gw", sys.executable, "-c", code)
        _wait_for(lambda: GATEWAY_LAN in self.gw("ss", "-Hlun", "sport", "=", f":{port}").stdout,
                  10, f"the NAT-PMP-only gateway is not listening on udp {port}")
        return process

    # IPv6 (issue 15): see GATEWAY_LAN6 and the addresses below the class

    def _build_ipv6(self) -> None:
        """
        Global addresses on both links (without duplicate address detection), the client's
        default route through the gateway's link-local address as a Router Advertisement would
        set it, and forwarding in the gateway: miniupnpd serves IPv6 PCP only when its LAN
        interface has a global address at start (lab-pcp-upnp.md).
        """
        ns, veth = self.ns, self.veth
        for link, role, address in [
            ("gw_lan", "gw", f"{GATEWAY_LAN6}/64"),
            ("client", "client", f"{CLIENT6}/64"),
            ("gw_wan", "gw", f"{GATEWAY_WAN6}/64"),
            ("wan", "wan", f"{WAN_HOST6}/64"),
        ]:
            _sh("ip", "-n", ns[role], "addr", "add", address, "dev", veth[link], "nodad")
        _wait_for(lambda: self.gateway_link_local() is not None and self._link_local_ready(
            "client", veth["client"]), 10, "the LAN link has no usable link-local addresses")
        _sh("ip", "-n", ns["client"], "-6", "route", "add", "default",
            "via", str(self.gateway_link_local()), "dev", veth["client"])
        _sh("ip", "-n", ns["gw"], "-6", "route", "add", "default", "via", WAN_HOST6)
        _sh("ip", "-n", ns["wan"], "-6", "route", "add", "2001:db8:100::/64", "via", GATEWAY_WAN6)
        self.gw("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")

    def gateway_link_local(self) -> str | None:
        """The gateway's link-local address on the LAN, once usable (not tentative)."""
        shown = self.gw("ip", "-6", "-o", "addr", "show", "dev", self.veth["gw_lan"],
                        "scope", "link").stdout
        match = re.search(r"inet6 (fe80:[0-9a-f:]+)/64", shown)
        return match.group(1) if match and "tentative" not in shown else None

    def _link_local_ready(self, role: str, device: str) -> bool:
        shown = self.run(role, "ip", "-6", "-o", "addr", "show", "dev", device,
                         "scope", "link").stdout
        return "inet6 fe80:" in shown and "tentative" not in shown

    def block_inbound_ipv6(self) -> None:
        """
        Give the gateway's forward chain a drop policy for new IPv6 connections from the WAN, so
        the wan host reaches the client only through a pinhole (miniupnpd's chain accepts the
        pinholes before these rules run).
        """
        self.gw("nft", "add", "rule", "inet", "filter", "forward", "meta", "nfproto", "ipv6",
                "ct", "state", "established,related", "accept")
        self.gw("nft", "add", "rule", "inet", "filter", "forward", "meta", "nfproto", "ipv6",
                "iifname", self.veth["gw_wan"], "drop")

    def pinholes(self) -> list[tuple[str, int, str]]:
        """The gateway's IPv6 pinholes, from C{nft list chain inet filter miniupnpd}:
        (protocol, port, the client address it opens)."""
        import ipaddress

        listing = self.gw("nft", "list", "chain", "inet", "filter", "miniupnpd").stdout
        found = []
        for line in listing.splitlines():
            match = _PINHOLE.search(line)
            if match is None:
                continue
            protocol = _PROTOCOL_NUMBERS.get(match["proto"] or "", "?")
            address = str(ipaddress.IPv6Address(int(match["address"], 16)))
            found.append((protocol, int(match["port"]), address))
        return sorted(found)

    def wan_tcp6(self, address: str, port: int, timeout: float = 3) -> bytes | None:
        """Connect from the wan host to C{address} over IPv6 and read until closed; C{None}
        when the connection is refused, dropped or times out."""
        code = (
            "import socket,sys\n"
            "try:\n"
            f"    s=socket.create_connection(({address!r},{port}),timeout={timeout})\n"
            "    data=b''\n"
            "    while chunk:=s.recv(4096): data+=chunk\n"
            "    sys.stdout.write(data.hex())\n"
            "except OSError as e:\n"
            "    sys.stdout.write('failed '+type(e).__name__)\n"
        )
        out = self.python("wan", code, timeout=timeout + 10).stdout
        return None if out.startswith("failed") else bytes.fromhex(out)

    # Issue 14: which protocol reaches the gateway, and a NAT-PMP-only gateway that announces

    def count_versions(self, port: int = 5351) -> None:
        """Start counting the datagrams reaching the gateway's udp C{port}, PCP (version 2)
        and NAT-PMP (version 0) apart, by their first payload byte, and among them PCP
        ANNOUNCE requests and NAT-PMP address requests (opcode 0) (see L{versions_counted})."""
        self.gw("nft", "delete", "table", "inet", "versions", check=False)
        self.gw("nft", "add", "table", "inet", "versions")
        self.gw("nft", "add", "chain", "inet", "versions", "input",
                "{ type filter hook input priority -20; }")
        for match, name in (("@th,64,8 2", "pcp"), ("@th,64,8 0", "natpmp"),
                            ("@th,64,16 0x0200", "announce"), ("@th,64,16 0x0000", "address")):
            self.gw("nft", "add", "rule", "inet", "versions", "input", "udp", "dport", str(port),
                    *match.split(), "counter", "comment", f'"{name}"')

    def versions_counted(self) -> dict[str, int]:
        """C{{"pcp": n, "natpmp": m, "announce": a, "address": e}}: datagrams counted since
        L{count_versions} (C{announce} among C{pcp}, C{address} among C{natpmp})."""
        listing = self.gw("nft", "list", "table", "inet", "versions", check=False).stdout
        counted = {}
        for name in ("pcp", "natpmp", "announce", "address"):
            match = re.search(rf'counter packets (\d+) bytes \d+ comment "{name}"', listing)
            counted[name] = int(match.group(1)) if match else 0
        return counted

    def start_announcing_natpmp_only_gateway(self, port: int = 5352) -> subprocess.Popen[bytes]:
        """
        As L{start_natpmp_only_gateway}, and on SIGUSR1 (see L{announce_pcp_from}) the double
        sends a PCP ANNOUNCE (its own epoch) from its port to 224.0.0.1:5350 on the LAN, as a
        router does when it learns PCP, say after a firmware update (RFC 6887 section 14.1.3).
        """
        code = (
            "import signal, socket\n"
            "from twisted.internet import reactor\n"
            "from txnatpmp.testing import FakeGateway\n"
            "gateway = FakeGateway()\n"
            "gateway.announce_to = [('224.0.0.1', 5350)]\n"
            f"port = gateway.listen(reactor, {port}, {GATEWAY_LAN!r})\n"
            "port.socket.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,\n"
            f"                       socket.inet_aton({GATEWAY_LAN!r}))\n"
            "def announce(*_):\n"
            "    reactor.callFromThread(gateway.announce, pcp=True)\n"
            "    reactor.callFromThread(print, 'announced', gateway.epoch, flush=True)\n"
            "signal.signal(signal.SIGUSR1, announce)\n"
            "reactor.run(installSignalHandlers=True)\n"
        )
        process = self.spawn("gw", sys.executable, "-c", code)
        _wait_for(lambda: GATEWAY_LAN in self.gw("ss", "-Hlun", "sport", "=", f":{port}").stdout,
                  10, f"the NAT-PMP-only gateway is not listening on udp {port}")
        return process

    def announce_pcp_from(self, double: subprocess.Popen[bytes]) -> None:
        """Make a double from L{start_announcing_natpmp_only_gateway} send a PCP ANNOUNCE, and
        wait until it has."""
        sent = self.output(double).count("announced")
        double.send_signal(signal.SIGUSR1)
        _wait_for(lambda: self.output(double).count("announced") > sent, 5,
                  "the double did not announce")


class Agent:
    """
    A txnatpmp process in a namespace that takes one JSON command per line and answers one JSON
    line each (see agent.py for the commands).
    """

    def __init__(self, namespace: str) -> None:
        # Its stderr goes to a file, never a pipe nobody reads (a full pipe would stall it),
        # and is shown when a call fails.
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, str(AGENT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            env=_child_env(),
        )

    def stderr(self) -> str:
        """What the agent wrote to stderr so far (the end of it)."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def call(self, op: str, timeout: float = 30, **arguments: Any) -> dict[str, Any]:
        """Send a command and wait for its answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps({"op": op, **arguments}) + "\n").encode())
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"agent gave no answer to {op} within {timeout} s; its "
                                 f"stderr: {self.stderr()!r}")
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"agent exited during {op}: {self.stderr()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()


def eventually(probe: Any, timeout: float = 10, interval: float = 0.05) -> Any:
    """Poll C{probe} until it returns something true, or fail after C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return value


def let_epoch_advance(agent: Agent, seconds: int = 4) -> None:
    """
    Wait until the gateway's epoch is C{seconds} past what it is now, asking through C{agent}
    (connected), so that a client whose last exchange was before this call sees a restart for
    sure.  A restart's epoch is 0 or 1; with 2 s of slack (R18: below the old epoch plus 7/8 of
    the time passed, less 2 s; P36: the server's delta plus 2 s below 15/16 of the client's),
    that takes about 3.5 s since the client's last answer when the gateway was young then, as
    in a fresh lab (an old gateway's restart is plain at once).  The gateway's age alone was
    not enough: a client that last heard it 0.9 s into its life (epoch 0), then a restart at
    3.0 s whose ANNOUNCE said epoch 1 half a second later, is within P36's slack.
    """
    start = agent.call("address")["epoch"]
    eventually(lambda: agent.call("address")["epoch"] >= start + seconds,
               timeout=seconds + 3, interval=0.25)


def terminate(daemon: subprocess.Popen[bytes], signum: int = signal.SIGTERM,
              within: float = 10) -> float:
    """
    Signal a daemon and wait for it to end; return how long it took.  C{twist} stops its
    services, then ends itself with the same signal, so that its parent sees how it ended.
    """
    started = time.monotonic()
    daemon.send_signal(signum)
    assert daemon.wait(within) in (0, -signum)
    return time.monotonic() - started


def _child_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), path]))}


def _sh(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


def _stop_daemon(pid: int, timeout: float = 10) -> None:
    """Wait for a daemon sent SIGTERM to exit, sending it again every half second.

    miniupnpd's handler only sets a flag its main loop reads before select(): a signal that
    lands just before select() is seen only when select() returns, up to notify_interval (60 s)
    later.  A second SIGTERM interrupts that select().  (A CI run saw it miss the 10 s wait.)"""
    deadline = time.monotonic() + timeout
    next_signal = time.monotonic() + 0.5
    while _running(pid):
        now = time.monotonic()
        if now > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # so that the next test finds no stale gateway
            _wait_for(lambda: not _running(pid), 5, f"miniupnpd (pid {pid}) survived SIGKILL")
            raise RuntimeError(f"miniupnpd (pid {pid}) did not stop within {timeout:g} s of SIGTERM")
        if now >= next_signal:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            next_signal = now + 0.5
        time.sleep(0.02)


def _running(pid: int) -> bool:
    """Whether C{pid} is a miniupnpd that has not exited (a zombie waiting to be reaped has; a
    pid reused by another program is not ours to signal)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    command, _, rest = stat.partition("(")[2].rpartition(")")
    return command == "miniupnpd" and rest.split()[0] != "Z"


def _wait_for(condition: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.02)


# IPv6 (issue 15) ---------------------------------------------------------------------------------

GATEWAY_LAN6 = "2001:db8:100::1"
CLIENT6 = "2001:db8:100::10"
GATEWAY_WAN6 = "2001:db8:200::2"
WAN_HOST6 = "2001:db8:200::1"

# miniupnpd 2.3.1: iif "tw1" th dport 60210 @nh,192,128 0x20010db8...10 @nh,48,8 0x6 accept
_PINHOLE = re.compile(
    r'iif "(?P<iif>[^"]+)" (?:tcp|udp|th) dport (?P<port>\d+) '
    r"@nh,192,128 (?P<address>0x[0-9a-f]+)(?: @nh,48,8 (?P<proto>0x[0-9a-f]+))? accept"
)


# UPnP-IGD ----------------------------------------------------------------------------------------


class UPnPLab(Lab):
    """
    A lab whose miniupnpd serves UPnP-IGD (SSDP on 1900, HTTP on a port that changes on every
    start, C{http_port=0}), by default with NAT-PMP and PCP switched off: a UPnP-only router.

    @param natpmp: Keep NAT-PMP and PCP on as well.
    @param igd_v1: Describe the device as IGD:1 with WANIPConnection:1 (C{force_igd_desc_v1}).
    """

    def __init__(self, debug: bool = False, min_lifetime: int = 120, *, natpmp: bool = False,
                 igd_v1: bool = False) -> None:
        super().__init__(debug=debug, min_lifetime=min_lifetime)
        self.natpmp = natpmp
        self.igd_v1 = igd_v1

    def _build(self) -> None:
        super()._build()
        lines = [line for line in self.config.read_text().splitlines()
                 if not line.startswith(("enable_natpmp=", "enable_upnp="))]
        lines += [f"enable_natpmp={'yes' if self.natpmp else 'no'}", "enable_upnp=yes",
                  "http_port=0", "secure_mode=yes", "notify_interval=60",
                  "uuid=00000000-0000-0000-0000-0000000000a1"]
        if self.igd_v1:
            lines.append("force_igd_desc_v1=yes")
        self.config.write_text("\n".join(lines) + "\n")

    def _gateway_listening(self) -> bool:
        udp = self.gw("ss", "-Hlun", "sport", "=", ":1900").stdout
        return bool(udp.strip()) and self.http_port() is not None

    def http_port(self) -> int | None:
        """The port miniupnpd's HTTP server listens on now (it changes on every start)."""
        assert self._pid is not None or self._gateway is not None
        listing = self.gw("ss", "-Hltnp").stdout
        for line in listing.splitlines():
            fields = line.split()
            if "miniupnpd" in line and len(fields) > 3:  # local address: *%tl123:41507
                return int(fields[3].rpartition(":")[2])
        return None

    def upnpc(self, *argv: str, timeout: float = 30) -> str:
        """Run Debian's miniupnpc C{upnpc} in the client namespace; return what it printed."""
        result = self.run("client", "upnpc", *argv, timeout=timeout, check=False)
        return result.stdout + result.stderr

    def count_http(self) -> None:
        """Start counting TCP connections (SYNs) to the gateway's LAN address and SSDP datagrams
        to port 1900 (see L{http_counted}, L{ssdp_counted})."""
        self.gw("nft", "delete", "table", "inet", "upnpcounting", check=False)
        self.gw("nft", "add", "table", "inet", "upnpcounting")
        self.gw("nft", "add", "chain", "inet", "upnpcounting", "input",
                "{ type filter hook input priority -20; }")
        self.gw("nft", "add", "rule", "inet", "upnpcounting", "input", "ip", "daddr",
                GATEWAY_LAN, "tcp", "flags", "&", "(syn|ack)", "==", "syn", "counter",
                "comment", '"http"')
        self.gw("nft", "add", "rule", "inet", "upnpcounting", "input", "udp", "dport", "1900",
                "counter", "comment", '"ssdp"')

    def _counted(self, what: str) -> int:
        listing = self.gw("nft", "list", "table", "inet", "upnpcounting").stdout
        match = re.search(rf'counter packets (\d+) bytes \d+ comment "{what}"', listing)
        return int(match.group(1)) if match else 0

    def http_counted(self) -> int:
        """HTTP connections opened to the gateway since L{count_http}: one per UPnP request."""
        return self._counted("http")

    def ssdp_counted(self) -> int:
        """SSDP datagrams that reached the gateway since L{count_http}."""
        return self._counted("ssdp")
