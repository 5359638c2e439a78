"""
What C{natpmp map} made, for a later C{natpmp unmap}: a PCP mapping can only be deleted with the
nonce that made it (RFC 6887 section 11.1), and the process that made it is gone by then.

Each mapping is kept, keyed by gateway, protocol and internal port, with the method that made
it, its nonce (PCP), its external port and address and its expiry, in a user-private JSON file:
C{$XDG_STATE_HOME/txnatpmp/mappings.json} or C{~/.local/state/txnatpmp/mappings.json} (folder
0700, file 0600).  It is rewritten atomically (a temporary file in the same folder, renamed over
it); expired entries are dropped on every read.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping as Fields

from attrs import frozen

from .._results import Mapping
from .._spec import Gateway

try:
    import fcntl
except ImportError:  # pragma: no cover (not on Windows)
    fcntl = None  # type: ignore[assignment]

#: The file's name in the state folder.
FILE_NAME = "mappings.json"
#: A larger file is not read (it is not ours, or it is damaged).
MAX_FILE_SIZE = 1 << 20
#: Entries kept at most (the soonest to expire are dropped first).
MAX_ENTRIES = 4096
_METHODS = ("natpmp", "pcp", "upnp")


def state_folder(environ: Fields[str, str] | None = None) -> Path:
    """C{$XDG_STATE_HOME/txnatpmp} (an absolute XDG_STATE_HOME only, as the XDG spec says),
    else C{~/.local/state/txnatpmp}."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "txnatpmp"


@frozen
class StoredMapping:
    """A mapping C{natpmp map} made, as kept for C{natpmp unmap}."""

    gateway: Gateway
    protocol: str
    internal_port: int
    method: str
    external_port: int
    external_address: str | None
    expires: float  #: wall-clock time (seconds since the epoch)
    nonce: bytes | None = None

    @classmethod
    def of(cls, gateway: Gateway, mapping: Mapping, now: float) -> StoredMapping:
        return cls(gateway, mapping.protocol, mapping.internal_port, mapping.method,
                   mapping.external_port, mapping.external_address, now + mapping.lifetime,
                   mapping.nonce)

    def mapping(self) -> Mapping:
        """The L{Mapping} again, good for a PCP delete (its nonce) or a NAT-PMP one."""
        return Mapping(self.protocol, self.internal_port,  # type: ignore[arg-type]
                       self.external_port, 0, 0, self.method,  # type: ignore[arg-type]
                       external_address=self.external_address, nonce=self.nonce)

    @property
    def key(self) -> str:
        return _key(self.gateway, self.protocol, self.internal_port)

    def to_json(self) -> dict[str, Any]:
        return {"gateway": list(self.gateway), "protocol": self.protocol,
                "internal_port": self.internal_port, "method": self.method,
                "external_port": self.external_port, "external_address": self.external_address,
                "expires": self.expires,
                "nonce": self.nonce.hex() if self.nonce is not None else None}

    @classmethod
    def from_json(cls, data: Any) -> StoredMapping | None:
        """An entry as read back, or C{None} if anything in it is not as written."""
        try:
            host, port = data["gateway"]
            nonce = data["nonce"]
            entry = cls(Gateway(str(host), int(port)), str(data["protocol"]),
                        int(data["internal_port"]), str(data["method"]),
                        int(data["external_port"]),
                        None if data["external_address"] is None else str(data["external_address"]),
                        float(data["expires"]),
                        None if nonce is None else bytes.fromhex(str(nonce)))
        except (KeyError, TypeError, ValueError):
            return None
        if (entry.protocol not in ("tcp", "udp") or entry.method not in _METHODS
                or not 1 <= entry.internal_port <= 0xFFFF
                or (entry.nonce is not None and len(entry.nonce) != 12)):
            return None
        return entry


def _key(gateway: Gateway, protocol: str, internal_port: int) -> str:
    return f"{gateway.host} {gateway.port} {protocol} {internal_port}"


class NonceStore:
    """
    The state file.  Every call reads it afresh, so several C{natpmp} processes can share it;
    changes are made under an exclusive lock on the folder's lock file.
    """

    def __init__(self, folder: Path | None = None, now: Callable[[], float] = time.time) -> None:
        self.folder = folder if folder is not None else state_folder()
        self.path = self.folder / FILE_NAME
        self._now = now

    def get(self, gateway: Gateway, protocol: str, internal_port: int) -> StoredMapping | None:
        """The live entry for a mapping, if one is kept."""
        return self._read().get(_key(gateway, protocol, internal_port))

    def entries(self, gateway: Gateway, protocol: str | None = None) -> list[StoredMapping]:
        """The live entries for C{gateway} (and C{protocol}), by internal port."""
        found = [e for e in self._read().values()
                 if e.gateway == gateway and protocol in (None, e.protocol)]
        return sorted(found, key=lambda e: (e.protocol, e.internal_port))

    def remember(self, gateway: Gateway, mapping: Mapping) -> StoredMapping:
        """Keep C{mapping} (made at C{gateway}) until it expires.

        @raise OSError: when the file cannot be written."""
        entry = StoredMapping.of(gateway, mapping, self._now())
        with self._changing() as entries:
            entries[entry.key] = entry
        return entry

    def forget(self, gateway: Gateway, protocol: str, internal_port: int) -> None:
        """Drop the entry for a mapping (it was deleted).

        @raise OSError: when the file cannot be written."""
        key = _key(gateway, protocol, internal_port)
        if not self.path.exists():
            return
        with self._changing() as entries:
            entries.pop(key, None)

    # The file

    def _read(self) -> dict[str, StoredMapping]:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return {}
        try:
            status = os.fstat(fd)
            if (status.st_size > MAX_FILE_SIZE
                    or (hasattr(os, "geteuid") and status.st_uid != os.geteuid())):
                return {}  # not ours: never trust it
            with os.fdopen(fd, "rb", closefd=False) as stream:
                data = json.loads(stream.read(MAX_FILE_SIZE))
        except (OSError, ValueError):
            return {}
        finally:
            os.close(fd)
        if not isinstance(data, dict) or not isinstance(data.get("mappings"), list):
            return {}
        now = self._now()
        live: dict[str, StoredMapping] = {}
        for item in data["mappings"][:MAX_ENTRIES]:
            entry = StoredMapping.from_json(item)
            if entry is not None and entry.expires > now:
                live[entry.key] = entry
        return live

    @contextmanager
    def _changing(self) -> Iterator[dict[str, StoredMapping]]:
        self._make_folder()
        lock = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()  # expired ones are left out: pruned on every write
            yield entries
            self._write(entries)
        finally:
            os.close(lock)  # releases the lock

    def _make_folder(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = self.folder.stat()
        if status.st_mode & 0o077 and (not hasattr(os, "geteuid")
                                       or status.st_uid == os.geteuid()):
            os.chmod(self.folder, 0o700)

    def _write(self, entries: dict[str, StoredMapping]) -> None:
        kept = sorted(entries.values(), key=lambda e: e.expires, reverse=True)[:MAX_ENTRIES]
        text = json.dumps({"version": 1, "mappings": [e.to_json() for e in kept]}, indent=1)
        fd, temporary = tempfile.mkstemp(prefix=".mappings.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w") as stream:  # mkstemp made it 0600
                stream.write(text + "\n")
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
