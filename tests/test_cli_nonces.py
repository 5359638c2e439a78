"""
The state file that lets C{natpmp unmap} delete a PCP mapping C{natpmp map} made in another
process (its nonce), in a temporary C{XDG_STATE_HOME}.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from txnatpmp import Mapping
from txnatpmp._cli import _nonces
from txnatpmp._cli._nonces import NonceStore, state_folder
from txnatpmp._spec import Gateway

GATEWAY = Gateway("198.51.100.1", 5351)
NONCE = bytes(range(12))
PCP = Mapping("tcp", 8080, 18080, 600, 5, "pcp", external_address="80.100.100.1", nonce=NONCE)


class _Now:
    def __init__(self) -> None:
        self.value = 1_000_000.0

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "txnatpmp"


def test_the_folder_is_under_xdg_state_home_or_local_state(tmp_path: Path) -> None:
    assert state_folder({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "txnatpmp"
    home = Path(os.path.expanduser("~"))
    assert state_folder({}) == home / ".local" / "state" / "txnatpmp"
    # A relative XDG_STATE_HOME is invalid (XDG spec): ignored.
    assert state_folder({"XDG_STATE_HOME": "relative/dir"}) == home / ".local/state/txnatpmp"


def test_a_kept_nonce_comes_back_in_a_new_store(state: Path) -> None:
    """What one process kept, another finds: the mapping rebuilt with its nonce."""
    NonceStore().remember(GATEWAY, PCP)
    entry = NonceStore().get(GATEWAY, "tcp", 8080)
    assert entry is not None
    assert entry.mapping() == Mapping("tcp", 8080, 18080, 0, 0, "pcp",
                                      external_address="80.100.100.1", nonce=NONCE)
    assert entry.mapping().nonce == NONCE and entry.method == "pcp"
    # Keyed by gateway, protocol and internal port.
    assert NonceStore().get(GATEWAY, "udp", 8080) is None
    assert NonceStore().get(Gateway("198.51.100.1", 5352), "tcp", 8080) is None
    assert NonceStore().get(Gateway("198.51.100.2", 5351), "tcp", 8080) is None


def test_the_file_is_user_private_and_written_without_leftovers(state: Path) -> None:
    NonceStore().remember(GATEWAY, PCP)
    NonceStore().remember(GATEWAY, Mapping("udp", 5353, 5353, 60, 5))
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "mappings.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in state.iterdir()) == [".lock", "mappings.json"]
    assert stat.S_IMODE((state / ".lock").stat().st_mode) == 0o600


def test_an_existing_open_folder_is_made_private(state: Path) -> None:
    state.mkdir(parents=True, mode=0o755)
    os.chmod(state, 0o755)
    NonceStore().remember(GATEWAY, PCP)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_a_failed_write_leaves_no_temporary_file_and_the_old_file_intact(
    state: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    NonceStore().remember(GATEWAY, PCP)
    before = (state / "mappings.json").read_text()

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_nonces.os, "replace", full_disk)
    with pytest.raises(OSError):
        NonceStore().remember(GATEWAY, Mapping("udp", 5353, 5353, 60, 5))
    assert sorted(p.name for p in state.iterdir()) == [".lock", "mappings.json"]
    assert (state / "mappings.json").read_text() == before


def test_forget_removes_the_entry_and_expired_ones_are_pruned(state: Path) -> None:
    now = _Now()
    store = NonceStore(now=now)
    store.remember(GATEWAY, PCP)  # 600 s
    store.remember(GATEWAY, Mapping("udp", 5353, 5353, 60, 5))  # 60 s
    store.forget(GATEWAY, "tcp", 8080)
    assert store.get(GATEWAY, "tcp", 8080) is None
    assert [e.internal_port for e in store.entries(GATEWAY)] == [5353]
    now.value += 61
    assert store.entries(GATEWAY) == []  # expired: not returned
    store.remember(GATEWAY, Mapping("tcp", 9000, 9000, 600, 5, "pcp", nonce=NONCE))
    written = json.loads((state / "mappings.json").read_text())
    assert [m["internal_port"] for m in written["mappings"]] == [9000]  # pruned on write


def test_expiry_and_method_are_kept(state: Path) -> None:
    now = _Now()
    NonceStore(now=now).remember(GATEWAY, PCP)
    entry = NonceStore(now=now).get(GATEWAY, "tcp", 8080)
    assert entry is not None and entry.expires == now.value + 600
    natpmp = NonceStore(now=now).remember(GATEWAY, Mapping("udp", 5353, 5353, 60, 5))
    assert (natpmp.method, natpmp.nonce) == ("natpmp", None)


@pytest.mark.parametrize("text", [
    "", "not json", "[]", '{"mappings": {}}', '{"mappings": [1, "x", null]}',
    '{"mappings": [{"gateway": ["198.51.100.1", 5351], "protocol": "tcp", "internal_port": 8080,'
    ' "method": "pcp", "external_port": 1, "external_address": null, "expires": 9e99,'
    ' "nonce": "zz"}]}',
    '{"mappings": [{"gateway": ["198.51.100.1", 5351], "protocol": "tcp", "internal_port": 8080,'
    ' "method": "pcp", "external_port": 1, "external_address": null, "expires": 9e99,'
    ' "nonce": "0011"}]}',
    '{"mappings": [{"gateway": ["198.51.100.1", 5351], "protocol": "sctp", "internal_port": 1,'
    ' "method": "pcp", "external_port": 1, "external_address": null, "expires": 9e99,'
    ' "nonce": null}]}',
])
def test_a_damaged_file_is_read_as_empty_and_replaced(state: Path, text: str) -> None:
    state.mkdir(parents=True, mode=0o700)
    (state / "mappings.json").write_text(text)
    assert NonceStore().get(GATEWAY, "tcp", 8080) is None
    NonceStore().remember(GATEWAY, PCP)
    assert NonceStore().get(GATEWAY, "tcp", 8080) is not None


def test_an_oversized_file_is_not_read(state: Path) -> None:
    NonceStore().remember(GATEWAY, PCP)
    with open(state / "mappings.json", "a") as stream:
        stream.write(" " * (_nonces.MAX_FILE_SIZE + 1))
    assert NonceStore().get(GATEWAY, "tcp", 8080) is None


def test_a_symlinked_file_is_not_followed(state: Path, tmp_path: Path) -> None:
    NonceStore().remember(GATEWAY, PCP)
    elsewhere = tmp_path / "elsewhere.json"
    os.replace(state / "mappings.json", elsewhere)
    os.symlink(elsewhere, state / "mappings.json")
    assert NonceStore().get(GATEWAY, "tcp", 8080) is None
