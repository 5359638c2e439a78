"""
--family 4|6|46 against Debian's miniupnpd 2.3.1 (issue 15): the IPv6 lab (global addresses, the
client's IPv6 default route through the gateway's link-local address, inbound IPv6 dropped unless
a pinhole lets it through) and a gateway granting lifetimes as short as 4 s, so that renewals
happen within a test.  No -g anywhere: every front end finds the IPv4 gateway and the IPv6
router from the client namespace's default routes.  Tests are named after
shared/rfc6887-client.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from lab import CLIENT, CLIENT6, EXTERNAL_ADDRESS, GATEWAY_WAN, Lab, eventually, terminate
from lab.agent import GREETING

from txnatpmp._service.link import SOURCE_CHECK_EVERY

from .conftest import DEBUG, running_lab

#: The gateway's shortest lifetime here: a shortened pinhole closes this long after the stop.
MIN_LIFETIME = 4
#: What the daemon asks for: renewed about halfway, and far longer than MIN_LIFETIME.
LIFETIME = 24


@pytest.fixture(scope="module")
def lab46() -> Iterator[Lab]:
    for lab in running_lab(lambda: Lab(debug=DEBUG, ipv6=True, min_lifetime=MIN_LIFETIME)):
        lab.block_inbound_ipv6()
        yield lab


@pytest.fixture
def lab(lab46: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """The module's lab, handed back with nothing on the router; each test its own state
    folder (natpmp map keeps PCP nonces there), never root's."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield lab46
    lab46.stop_processes()
    if not lab46.gateway_alive() or lab46.pinholes() or lab46.mappings():
        lab46.restart_gateway()


def natpmp(lab: Lab, *argv: str) -> Any:
    return lab.run("client", sys.executable, "-m", "txnatpmp", *argv, check=False, timeout=60)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def nothing_left(lab: Lab) -> bool:
    return lab.mappings() == [] and lab.pinholes() == []


def test_P48_natpmp_map_family_46_makes_a_mapping_and_a_pinhole_and_unmap_deletes_both(
        lab: Lab) -> None:
    made = natpmp(lab, "map", "--family", "46", "--json", "-l", "600", "tcp:60300")
    assert made.returncode == 0, made.stderr
    lines = json_lines(made.stdout)
    assert [(m["family"], m["external_address"], m["internal_port"], m["method"])
            for m in lines] == [(4, EXTERNAL_ADDRESS, 60300, "pcp"), (6, CLIENT6, 60300, "pcp")]
    assert lab.mappings() == [("tcp", lines[0]["external_port"], CLIENT, 60300)]
    assert lab.pinholes() == [("tcp", 60300, CLIENT6)]
    deleted = natpmp(lab, "unmap", "--family", "46", "tcp:60300")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.splitlines() == ["deleted tcp:60300 (PCP)",
                                           "deleted tcp:60300 (PCP, IPv6)"]
    assert nothing_left(lab)


def test_P47_natpmp_address_family_46_names_both_public_addresses(lab: Lab) -> None:
    answer = natpmp(lab, "address", "--family", "46")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.splitlines() == [EXTERNAL_ADDRESS, CLIENT6]
    assert nothing_left(lab)


def test_P48_the_daemon_keeps_both_renewed_the_wan_host_reaches_it_over_ipv6_and_a_stop_leaves_nothing(
        lab: Lab, tmp_path: Path) -> None:
    """twist natpmp --family 46: both created and renewed; on SIGTERM the IPv4 mapping is
    deleted and the renewed pinhole, which miniupnpd 2.3.1 refuses to delete, is shortened to
    its shortest lifetime, after which the router closes it."""
    agent = lab.agent()
    agent.call("serve6", protocol="tcp", port=60301)
    assert lab.wan_tcp6(CLIENT6, 60301) is None  # the forward chain drops it
    status_file = tmp_path / "status.json"
    daemon = lab.twist("-m", "tcp:60301", "--family", "46", "--lifetime", str(LIFETIME),
                       "--status-file", str(status_file))
    eventually(lambda: lab.pinholes() == [("tcp", 60301, CLIENT6)]
               and lab.mappings() == [("tcp", 60301, CLIENT, 60301)], timeout=15)
    written = eventually(lambda: len(status(status_file).get("mappings", [])) == 2
                         and status(status_file))
    assert [(m["family"], m["external_address"]) for m in written["mappings"]] == [
        (4, EXTERNAL_ADDRESS), (6, CLIENT6)]
    assert [(link["family"], link["state"]) for link in written["links"]] == [
        (4, "connected"), (6, "connected")]
    assert lab.wan_tcp6(CLIENT6, 60301) == GREETING
    eventually(lambda: f"Renewed tcp 60301 at [{CLIENT6}]:60301" in lab.output(daemon)
               and f"Renewed tcp 60301 at {EXTERNAL_ADDRESS}:60301" in lab.output(daemon),
               timeout=LIFETIME)
    terminate(daemon)
    log = lab.output(daemon)
    assert lab.mappings() == []
    assert "Removed tcp 60301 (IPv4)" in log, log
    assert log.count("refuses to delete renewed pinholes") == 1, log
    assert log.count(f"Let go of tcp 60301 (IPv6): the gateway keeps it {MIN_LIFETIME} s more"
                     ) == 1, log
    assert "Traceback" not in log and "NAT-PMP" not in log, log
    # Shortened: gone after MIN_LIFETIME, where the renewed LIFETIME would have kept it.
    eventually(lambda: lab.pinholes() == [], timeout=MIN_LIFETIME + 3, interval=0.25)
    assert lab.wan_tcp6(CLIENT6, 60301) is None


def test_P48_a_pinhole_never_renewed_is_deleted_at_once(lab: Lab) -> None:
    daemon = lab.twist("-m", "udp:60302", "--family", "6", "--lifetime", "600")
    eventually(lambda: lab.pinholes() == [("udp", 60302, CLIENT6)], timeout=15)
    assert lab.mappings() == []  # family 6: nothing for IPv4
    terminate(daemon)
    assert nothing_left(lab)
    log = lab.output(daemon)
    assert "Removed udp 60302" in log and "refused" not in log, log


def test_P48_natpmp_run_family_46_gives_the_command_both_public_addresses(lab: Lab) -> None:
    ran = natpmp(lab, "run", "--family", "46", "tcp:60303", "--", "sh", "-c",
                 "echo $NATPMP_PUBLIC_ADDRESS:$NATPMP_PUBLIC_PORT "
                 "$NATPMP_PUBLIC_ADDRESS6 $NATPMP_PUBLIC_PORT6 %H %P")
    assert ran.returncode == 0, ran.stderr
    public_port = ran.stdout.split()[0].rpartition(":")[2]
    assert ran.stdout.split() == [f"{EXTERNAL_ADDRESS}:{public_port}", CLIENT6, "60303",
                                  EXTERNAL_ADDRESS, public_port]
    assert nothing_left(lab)


def test_P48_the_endpoint_with_family_46_serves_both_families(lab: Lab) -> None:
    site = Path(lab.workdir) / "site46"
    site.mkdir(exist_ok=True)
    (site / "hello.txt").write_text("hello over both families\n")
    server = lab.spawn("client", sys.executable, "-m", "twisted", "--log-format", "text", "web",
                       "--listen", "natpmp:8080:family=46", "--path", str(site))
    eventually(lambda: lab.pinholes() == [("tcp", 8080, CLIENT6)]
               and lab.mappings() == [("tcp", 8080, CLIENT, 8080)], timeout=15)
    for url in (f"http://{GATEWAY_WAN}:8080/hello.txt", f"http://[{CLIENT6}]:8080/hello.txt"):
        fetch = ("import urllib.request\n"
                 f"print(urllib.request.urlopen({url!r}, timeout=5).read().decode(), end='')\n")
        assert lab.python("wan", fetch).stdout == "hello over both families\n", url
    terminate(server)
    assert nothing_left(lab)
    log = lab.output(server)
    assert f"tcp 8080 is reachable at [{CLIENT6}]:8080" in log, log


def status(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def test_P48_a_pinhole_an_earlier_process_left_is_taken_over_with_its_port_and_closed(
        lab: Lab) -> None:
    """A pinhole left with another nonce (a process killed, or natpmp map): miniupnpd answers
    the suggested port, so the daemon suggests the internal port; its delete is refused, so it
    is shortened."""
    left = natpmp(lab, "map", "--family", "6", "-l", "600", "tcp:60310")
    assert left.returncode == 0, left.stderr
    daemon = lab.twist("-m", "tcp:60310", "--family", "6", "--lifetime", str(LIFETIME))
    eventually(lambda: f"tcp 60310 is reachable at [{CLIENT6}]:60310" in lab.output(daemon),
               timeout=15)
    terminate(daemon)
    log = lab.output(daemon)
    assert ":0 " not in log and "Could not delete" not in log, log
    eventually(lambda: lab.pinholes() == [], timeout=MIN_LIFETIME + 3, interval=0.25)


def test_P22_mapping_again_renews_with_the_kept_nonce_and_unmap_deletes_every_spec(
        lab: Lab) -> None:
    """natpmp map twice: the second is a renewal with the nonce natpmp keeps (P22); miniupnpd
    then refuses the pinhole's delete, so unmap shortens it, and still deletes the other."""
    assert natpmp(lab, "map", "--family", "6", "-l", "600", "tcp:60320", "udp:60321"
                  ).returncode == 0
    again = natpmp(lab, "map", "--family", "6", "--json", "-l", "600", "tcp:60320")
    assert again.returncode == 0, again.stderr
    [line] = json_lines(again.stdout)
    assert (line["external_address"], line["external_port"]) == (CLIENT6, 60320)
    gone = natpmp(lab, "unmap", "--family", "6", "tcp:60320", "udp:60321")
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.splitlines() == [
        f"tcp:60320: the gateway keeps it {MIN_LIFETIME} s more",
        "deleted udp:60321 (PCP, IPv6)"]
    assert lab.pinholes() == [("tcp", 60320, CLIENT6)]
    eventually(lambda: lab.pinholes() == [], timeout=MIN_LIFETIME + 3, interval=0.25)


def test_P08_the_daemons_pinholes_move_to_a_new_global_address_and_the_old_ones_close(
        lab: Lab) -> None:
    """A privacy address rotates: the new one comes, the old one is deprecated (still
    assigned).  Within the link's 30 s look, the pinhole is opened for the new address and
    closed for the old one, from it."""
    new_address = "2001:db8:100::30"
    device = lab.veth["client"]
    daemon = lab.twist("-m", "tcp:60340", "--family", "6", "--lifetime", "600")
    eventually(lambda: lab.pinholes() == [("tcp", 60340, CLIENT6)], timeout=15)
    try:
        lab.run("client", "ip", "addr", "add", f"{new_address}/64", "dev", device, "nodad")
        lab.run("client", "ip", "addr", "change", f"{CLIENT6}/64", "dev", device,
                "preferred_lft", "0", "valid_lft", "forever")
        eventually(lambda: lab.pinholes() == [("tcp", 60340, new_address)],
                   timeout=SOURCE_CHECK_EVERY + 10, interval=0.5)
        terminate(daemon)
        assert lab.pinholes() == []
        log = lab.output(daemon)
        assert log.count(f"This host's IPv6 address changed from {CLIENT6} to {new_address}"
                         ) == 1, log
        assert f"Closed 1 pinhole for {CLIENT6}" in log, log
    finally:
        lab.run("client", "ip", "addr", "change", f"{CLIENT6}/64", "dev", device,
                "preferred_lft", "forever", "valid_lft", "forever", check=False)
        lab.run("client", "ip", "addr", "del", f"{new_address}/64", "dev", device, check=False)


def test_P08_while_the_link_lost_the_address_nothing_is_sent_from_it_and_it_renews_after(
        lab: Lab) -> None:
    """The link goes down and up: Linux drops the client's static IPv6 addresses, yet a
    socket bound to one may still send from it, and the router would answer an address nobody
    has.  Nothing is sent until the address is back (as SLAAC brings it), then the pinhole is
    renewed."""
    device = lab.veth["client"]
    daemon = lab.twist("-m", "tcp:60350", "--family", "6", "--lifetime", "8")
    eventually(lambda: lab.pinholes() == [("tcp", 60350, CLIENT6)], timeout=15)
    try:
        lab.set_client_link(False)
        lab.set_client_link(True)
        assert CLIENT6 not in lab.run("client", "ip", "-6", "addr", "show", "dev", device).stdout
        lab.count_requests()
        # The renewal is due within 4 s of the last grant: it is either held back or sent.
        eventually(lambda: "this host no longer has" in lab.output(daemon)
                   or lab.requests_counted() > 0, timeout=15)
        assert lab.requests_counted() == 0
    finally:  # the address comes back, and the default route with it, as a Router Advertisement
        lab.run("client", "ip", "addr", "add", f"{CLIENT6}/64", "dev", device, "nodad",
                check=False)
        lab.run("client", "ip", "-6", "route", "replace", "default", "via",
                str(lab.gateway_link_local()), "dev", device, check=False)
    # Renewed at the request's next retransmission (PCP's 3 s doubling, P39).
    eventually(lambda: "Renewed tcp 60350" in lab.output(daemon).partition("no longer has")[2],
               timeout=40, interval=0.5)
    assert lab.pinholes() == [("tcp", 60350, CLIENT6)]
    terminate(daemon)
    log = lab.output(daemon)
    assert log.count("this host no longer has") == 1, log
    assert "works again" in log, log
    assert "Traceback" not in log, log
