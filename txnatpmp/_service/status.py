"""
The status file: the current mappings as JSON, rewritten atomically after every event.

It is an observer of the service's events.  Its path is checked once, when it is given, so an
unwritable one is a usage error before anything is sent; a write that fails later (a disk that
filled up) is logged once, and no temporary file is ever left behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable

from twisted.logger import Logger

from .._events import MappingEvent


def check_status_file(path: str) -> str:
    """
    Return C{path} as an absolute path if a status file can be kept there.

    @raise ValueError: saying why not (empty, a directory, a missing or unwritable folder, an
        existing file that is not a regular file).
    """
    if not isinstance(path, str) or not path.strip():
        raise ValueError("status file needs a file name, not an empty string")
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise ValueError(f"status file {path!r} is a directory")
    if os.path.exists(full) and not os.path.isfile(full):
        raise ValueError(f"status file {path!r} exists and is not a regular file")
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise ValueError(f"status file {path!r}: folder {folder!r} does not exist")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".txnatpmp-", suffix=".tmp")
    except OSError as error:
        raise ValueError(f"status file {path!r} cannot be written: {error.strerror}") from None
    os.close(handle)
    os.unlink(probe)
    return full


class StatusFile:
    """
    Writes C{snapshot()} to C{path} as JSON whenever it is called with an event.
    """

    log = Logger(namespace="txnatpmp._service")

    def __init__(self, path: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.path = check_status_file(path)
        self._snapshot = snapshot
        self._failing: str | None = None

    def __call__(self, event: MappingEvent | None = None) -> None:
        self.write()

    def write(self) -> None:
        folder, name = os.path.split(self.path)
        temporary: str | None = None
        try:
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(handle, "w") as stream:
                json.dump(self._snapshot(), stream, indent=2)
            os.replace(temporary, self.path)
            temporary = None
        except OSError as error:
            message = error.strerror or str(error)
            if message != self._failing:  # say it once, not at every change
                self.log.error("Cannot write status file {path}: {error}", path=self.path,
                               error=message)
            self._failing = message
            return
        finally:
            if temporary is not None:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass
        if self._failing is not None:
            self.log.info("Status file {path} written again", path=self.path)
            self._failing = None
