"""
natpmp --method, against FakeGateway doubles on loopback: a gateway speaking PCP and NAT-PMP
(as miniupnpd does), and a NAT-PMP-only one.  Every run gets -g 127.0.0.1:PORT and its own
XDG_STATE_HOME.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from txnatpmp.testing import FakeGateway

ROOT = Path(__file__).parent.parent


class Command:
    def __init__(self, state: Path) -> None:
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(state)}
        self.state = state / "txnatpmp"

    async def __call__(self, *argv: str) -> tuple[str, str, int]:
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "txnatpmp", *argv], env=self.env, reactor=reactor)
        return out.decode(), err.decode(), code

    def kept(self) -> list[dict[str, object]]:
        path = self.state / "mappings.json"
        return json.loads(path.read_text())["mappings"] if path.exists() else []


@pytest.fixture
def natpmp(tmp_path: Path) -> Command:
    return Command(tmp_path / "state")


def _gateway(**options: object) -> Iterator[tuple[FakeGateway, str]]:
    fake = FakeGateway(external_address="80.100.100.1", **options)  # type: ignore[arg-type]
    port = fake.listen()
    yield fake, f"127.0.0.1:{port.getHost().port}"
    port.stopListening()


@pytest.fixture
def pcp_gateway() -> Iterator[tuple[FakeGateway, str]]:
    yield from _gateway(pcp=True)


@pytest.fixture
def natpmp_gateway() -> Iterator[tuple[FakeGateway, str]]:
    yield from _gateway()


def kinds(fake: FakeGateway) -> list[str]:
    """What reached the gateway: "announce", "map", "delete" (PCP), "address", "natpmp-map"."""
    seen = []
    for received in fake.received:
        data = received.data
        if data[0] == 2:
            opcode = data[1] & 0x7F
            lifetime = int.from_bytes(data[4:8], "big")
            seen.append("announce" if opcode == 0 else "delete" if lifetime == 0 else "map")
        else:
            seen.append("address" if data[1] == 0 else "natpmp-map")
    return seen


@pytest_twisted.ensureDeferred
async def test_map_through_pcp_then_unmap_in_a_later_process_with_the_kept_nonce(
    pcp_gateway: tuple[FakeGateway, str], natpmp: Command,
) -> None:
    """auto on a PCP gateway maps through PCP, says so, and keeps the nonce (0600) so that a
    later natpmp unmap's delete is accepted (P22, P29)."""
    fake, where = pcp_gateway
    out, err, code = await natpmp("map", "tcp:8080", "-l", "600", "-g", where)
    assert (out, code) == ("tcp:8080 -> 80.100.100.1:8080 for 600 s (PCP)\n", 0), err
    assert kinds(fake) == ["announce", "map"]  # no NAT-PMP at all
    [kept] = natpmp.kept()
    assert (kept["protocol"], kept["internal_port"], kept["method"]) == ("tcp", 8080, "pcp")
    assert stat.S_IMODE((natpmp.state / "mappings.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(natpmp.state.stat().st_mode) == 0o700
    assert fake.mapping_for("tcp", 8080) is not None

    out, err, code = await natpmp("unmap", "tcp:8080", "-g", where)
    assert (out, code) == ("deleted tcp:8080 (PCP)\n", 0), err
    assert fake.mapping_for("tcp", 8080) is None
    assert kinds(fake)[-1] == "delete"
    assert natpmp.kept() == []  # removed on a confirmed delete


@pytest_twisted.ensureDeferred
async def test_map_json_names_the_method(
    pcp_gateway: tuple[FakeGateway, str], natpmp: Command,
) -> None:
    fake, where = pcp_gateway
    out, err, code = await natpmp("map", "udp:5353", "-g", where, "--json")
    line = json.loads(out)
    assert (line["method"], line["external_address"], code) == ("pcp", "80.100.100.1", 0), err
    assert "nonce" not in line  # a secret, never printed
    out, err, code = await natpmp("map", "udp:5354", "-g", where, "--json", "--method", "natpmp")
    line = json.loads(out)
    assert (line["method"], line["external_address"], code) == ("natpmp", "80.100.100.1", 0), err


@pytest_twisted.ensureDeferred
async def test_unmap_without_a_kept_nonce_says_it_cannot_and_exits_1(
    pcp_gateway: tuple[FakeGateway, str], natpmp: Command, tmp_path: Path,
) -> None:
    """A PCP mapping made elsewhere (another state folder: another user or host) cannot be
    deleted without its nonce: said plainly, exit 1, the mapping left as it is."""
    fake, where = pcp_gateway
    elsewhere = Command(tmp_path / "other-user")
    assert (await elsewhere("map", "tcp:8080", "-g", where))[2] == 0
    sent = len(fake.received)
    out, err, code = await natpmp("unmap", "tcp:8080", "-g", where)
    assert (out, code) == ("", 1), err
    assert "PCP refuses deletes without its nonce" in err and "tcp:8080" in err
    assert err.count("\n") == 1, err  # one line: the mapper given back once, closed once
    assert fake.mapping_for("tcp", 8080) is not None
    assert kinds(fake)[sent:] == ["announce"]  # no delete sent that could only be refused


@pytest_twisted.ensureDeferred
async def test_unmap_of_a_pcp_mapping_through_natpmp_is_refused_with_its_expiry(
    pcp_gateway: tuple[FakeGateway, str], natpmp: Command,
) -> None:
    """P30: a NAT-PMP delete of a PCP mapping would answer success and delete nothing."""
    fake, where = pcp_gateway
    assert (await natpmp("map", "tcp:8080", "-l", "600", "-g", where))[2] == 0
    sent = len(fake.received)
    out, err, code = await natpmp("unmap", "tcp:8080", "-g", where, "--method", "natpmp")
    assert (out, code) == ("", 1), err
    assert "made through PCP" in err and "--method pcp or auto" in err
    assert "expires at" in err and "in 59" in err  # 600 s, a moment ago
    assert len(fake.received) == sent and fake.mapping_for("tcp", 8080) is not None
    out, err, code = await natpmp("unmap", "tcp:8080", "-g", where, "--method", "pcp")
    assert (out, code) == ("deleted tcp:8080 (PCP)\n", 0), err


@pytest_twisted.ensureDeferred
async def test_a_natpmp_mapping_is_deleted_through_natpmp_on_a_pcp_gateway(
    pcp_gateway: tuple[FakeGateway, str], natpmp: Command,
) -> None:
    """unmap deletes with the method that made the mapping, whatever auto would pick."""
    fake, where = pcp_gateway
    out, err, code = await natpmp("map", "tcp:7000", "-g", where, "--method", "natpmp")
    assert (out, code) == ("tcp:7000 -> 80.100.100.1:7000 for 7200 s (NAT-PMP)\n", 0), err
    assert "announce" not in kinds(fake)
    out, err, code = await natpmp("unmap", "tcp:7000", "-g", where)
    assert (out, code) == ("deleted tcp:7000 (NAT-PMP)\n", 0), err
    assert fake.mappings == [] and natpmp.kept() == []


@pytest_twisted.ensureDeferred
async def test_unmap_all_on_a_pcp_gateway_deletes_what_map_kept(
    pcp_gateway: tuple[FakeGateway, str], natpmp: Command,
) -> None:
    fake, where = pcp_gateway
    assert (await natpmp("map", "udp:5353", "udp:5354", "tcp:80", "-g", where))[2] == 0
    out, err, code = await natpmp("unmap", "--all", "udp", "-g", where)
    assert code == 0, err
    assert out.splitlines()[:2] == ["deleted udp:5353 (PCP)", "deleted udp:5354 (PCP)"]
    assert [(m.protocol, m.internal_port) for m in fake.mappings] == [("tcp", 80)]
    assert [k["internal_port"] for k in natpmp.kept()] == [80]


@pytest_twisted.ensureDeferred
async def test_address_on_a_pcp_gateway_asks_natpmp_first(
    pcp_gateway: tuple[FakeGateway, str], natpmp: Command,
) -> None:
    """P31: PCP has no address request; a gateway that also speaks NAT-PMP answers its one."""
    fake, where = pcp_gateway
    out, err, code = await natpmp("address", "-g", where, "--json")
    assert code == 0, err
    assert json.loads(out) | {"epoch": 0} == {"address": "80.100.100.1", "method": "natpmp",
                                              "epoch": 0, "family": 4}
    assert kinds(fake) == ["announce", "address"]
    assert natpmp.kept() == []


@pytest_twisted.ensureDeferred
async def test_address_with_method_pcp_reads_a_short_mapping_and_deletes_it(
    pcp_gateway: tuple[FakeGateway, str], natpmp: Command,
) -> None:
    """P31: --method pcp maps a UDP port the command owns, reads the address, deletes it."""
    fake, where = pcp_gateway
    out, err, code = await natpmp("address", "-g", where, "--method", "pcp", "-v")
    assert code == 0, err
    assert out.startswith("80.100.100.1 (gateway up ") and out.endswith(
        "asked through PCP)\n")
    assert kinds(fake) == ["map", "delete"]
    assert fake.mappings == [] and natpmp.kept() == []


@pytest_twisted.ensureDeferred
async def test_address_falls_back_to_a_short_mapping_when_natpmp_is_not_answered(
    pcp_gateway: tuple[FakeGateway, str], natpmp: Command,
) -> None:
    """A PCP gateway that leaves NAT-PMP unanswered: auto tries it briefly, then maps."""
    fake, where = pcp_gateway
    fake.rewrite_reply = lambda reply: None if reply[0] == 0 else reply  # no NAT-PMP answers
    out, err, code = await natpmp("address", "-g", where)
    assert (out, code) == ("80.100.100.1\n", 0), err
    assert kinds(fake)[0] == "announce" and "address" in kinds(fake)
    assert kinds(fake)[-2:] == ["map", "delete"]
    assert fake.mappings == []


@pytest_twisted.ensureDeferred
async def test_auto_on_a_natpmp_only_gateway_uses_natpmp_after_one_probe(
    natpmp_gateway: tuple[FakeGateway, str], natpmp: Command,
) -> None:
    fake, where = natpmp_gateway
    out, err, code = await natpmp("map", "tcp:8080", "-g", where)
    assert (out, code) == ("tcp:8080 -> 80.100.100.1:8080 for 7200 s (NAT-PMP)\n", 0), err
    assert kinds(fake) == ["announce", "address", "natpmp-map"]
    out, err, code = await natpmp("unmap", "tcp:8080", "-g", where)
    assert (out, code) == ("deleted tcp:8080 (NAT-PMP)\n", 0), err
    assert fake.mappings == []


@pytest_twisted.ensureDeferred
async def test_method_pcp_on_a_natpmp_only_gateway_fails_clearly(
    natpmp_gateway: tuple[FakeGateway, str], natpmp: Command,
) -> None:
    fake, where = natpmp_gateway
    out, err, code = await natpmp("map", "tcp:8080", "-g", where, "--method", "pcp")
    assert (out, code) == ("", 1), err
    assert "version" in err.lower(), err
    assert fake.mappings == []


@pytest_twisted.ensureDeferred
async def test_hold_names_the_method_and_deletes_with_it(
    pcp_gateway: tuple[FakeGateway, str], natpmp: Command,
) -> None:
    fake, where = pcp_gateway
    out, err, code = await natpmp("hold", "tcp:8080", "-g", where, "--for", "1")
    assert code == 0, err
    assert out.splitlines() == ["tcp:8080 -> 80.100.100.1:8080 for 7200 s (PCP)",
                                "deleted tcp:8080 (PCP)"]
    assert fake.mappings == [] and set(kinds(fake)) == {"announce", "map", "delete"}
    out, err, code = await natpmp("hold", "tcp:8080", "-g", where, "--for", "1",
                                  "--method", "natpmp")
    assert code == 0, err
    assert out.splitlines()[0] == "tcp:8080 -> 80.100.100.1:8080 for 7200 s (NAT-PMP)"
    assert fake.mappings == []


@pytest_twisted.ensureDeferred
async def test_method_is_checked_before_anything_is_sent(
    pcp_gateway: tuple[FakeGateway, str], natpmp: Command,
) -> None:
    fake, where = pcp_gateway
    out, err, code = await natpmp("map", "tcp:8080", "-g", where, "--method", "igd")
    assert code == 2 and "invalid choice: 'igd'" in err
    assert fake.received == []


@pytest_twisted.ensureDeferred
async def test_a_state_file_that_cannot_be_written_is_said_and_the_mapping_stands(
    pcp_gateway: tuple[FakeGateway, str], tmp_path: Path,
) -> None:
    """The mapping was made: exit 0, with a warning that unmap will not be able to delete it."""
    fake, where = pcp_gateway
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    natpmp = Command(blocked)  # XDG_STATE_HOME is a file: the folder cannot be made
    out, err, code = await natpmp("map", "tcp:8080", "-l", "600", "-g", where)
    assert (out, code) == ("tcp:8080 -> 80.100.100.1:8080 for 600 s (PCP)\n", 0), err
    assert "Cannot keep tcp:8080 in" in err and "will not be able to delete it" in err
    assert "expires in 600 s" in err and "Traceback" not in err
    assert fake.mapping_for("tcp", 8080) is not None
