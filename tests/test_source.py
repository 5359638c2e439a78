"""
The client address toward a PCP server (P06) and the global IPv6 address a pinhole is for (P08):
the choices are pure and tested on values; the socket lookups on loopback only.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from txnatpmp import NoGlobalAddress
from txnatpmp._source import (
    InterfaceAddress,
    check_assigned,
    global_address_toward,
    is_global_unicast,
    parse_if_inet6,
    pick_global_address,
    source_address_toward,
)

# /proc/net/if_inet6 of the lab client with a privacy address and a ULA added.
IF_INET6 = """\
fe800000000000001c4f0bfffe79f968 1da 40 20 80  eth0
00000000000000000000000000000001 01 80 10 80       lo
20010db8010000000000000000000010 1da 40 00 80  eth0
20010db801000000a1b2c3d4e5f60708 1da 40 00 01  eth0
fd001234000000000000000000000010 1da 40 00 80  eth0
20010db8020000000000000000000099 1db 40 00 c0  wlan0
garbage row
"""


@pytest.mark.parametrize("address, wanted", [
    ("2001:db8:100::10", True),
    ("2a00:1450:4001:81a::200e", True),
    ("fe80::1", False),
    ("fe80::1%eth0", False),
    ("fd00:1234::10", False),  # ULA
    ("fc00::1", False),
    ("::1", False),
    ("::", False),
    ("ff02::1", False),
    ("::ffff:198.51.100.10", False),
    ("198.51.100.10", False),
    ("nonsense", False),
])
def test_P08_only_a_global_unicast_address_will_do(address: str, wanted: bool) -> None:
    assert is_global_unicast(address) is wanted


def test_if_inet6_rows() -> None:
    rows = parse_if_inet6(IF_INET6)
    assert len(rows) == 6
    assert rows[3] == InterfaceAddress("2001:db8:100:0:a1b2:c3d4:e5f6:708", "eth0", 0, 1)
    assert rows[3].temporary and not rows[2].temporary
    assert not rows[5].usable  # tentative


def test_P08_the_stable_global_address_on_the_interface_is_picked() -> None:
    assert pick_global_address(parse_if_inet6(IF_INET6), "eth0") == "2001:db8:100::10"


def test_P08_a_temporary_address_when_asked_for() -> None:
    assert pick_global_address(parse_if_inet6(IF_INET6), "eth0",
                               prefer_temporary=True) == "2001:db8:100:0:a1b2:c3d4:e5f6:708"


def test_P08_no_global_address_is_a_clear_value_error() -> None:
    only_local = [row for row in parse_if_inet6(IF_INET6) if not is_global_unicast(row.address)]
    with pytest.raises(ValueError, match="no global IPv6 address on eth0"):
        pick_global_address(only_local, "eth0")
    with pytest.raises(NoGlobalAddress):
        pick_global_address(parse_if_inet6(IF_INET6), "wlan0")  # only a tentative one there


def test_P06_source_address_toward_loopback_for_both_families() -> None:
    assert source_address_toward(("127.0.0.1", 5351)) == "127.0.0.1"
    assert source_address_toward(("::1", 5351)) == "::1"


def test_P08_if_inet6_is_the_last_resort(tmp_path: Path) -> None:
    # Toward ::1 the source is ::1 (not global); the probe toward 2001:db8::1 may or may not
    # have a route here, so the file is only read when neither gives a global address.
    listing = tmp_path / "if_inet6"
    listing.write_text(IF_INET6)
    found = global_address_toward(("::1", 5351), "eth0", str(listing))
    assert is_global_unicast(found)


def test_P08_no_global_address_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import txnatpmp._source as source

    monkeypatch.setattr(source, "source_address_toward", lambda server: "fe80::5")
    with pytest.raises(NoGlobalAddress):
        global_address_toward(("fe80::1", 5351, 0, 1), "eth0", str(tmp_path / "missing"))
    listing = tmp_path / "if_inet6"
    listing.write_text(IF_INET6)
    assert global_address_toward(("fe80::1", 5351, 0, 1), "eth0", str(listing)) == (
        "2001:db8:100::10")


def test_check_assigned_passes_for_an_address_this_host_has_and_names_one_it_lacks() -> None:
    check_assigned("127.0.0.1")  # binds a throwaway socket; sends nothing
    with pytest.raises(OSError, match="this host no longer has 203.0.113.254") as caught:
        check_assigned("203.0.113.254")
    assert caught.value.errno == errno.EADDRNOTAVAIL
