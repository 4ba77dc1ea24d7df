"""Small state files of a cluster member (members, handoff progress, flush epoch, format),
replaced atomically: written to a temporary file, fsynced, renamed over the old one.

An fsync on a busy disk can take a second (ext4 commits the whole journal, data of other files
included), so a file saved while the node serves is written by a background thread
(`StateFile(background=True)`): the event loop never waits for it, and the last content saved
wins. What such a file records is also known to the other members (gossip), so a crash that
loses its last save costs nothing they cannot tell the node again.
"""
from __future__ import annotations

import os
import threading


def write_atomically(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class StateFile:
    def __init__(self, path: str, background: bool = False):
        self.path = path
        self.background = background
        self._pending = None
        self._writing = False
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()

    def save(self, data: bytes) -> None:
        if not self.background:
            write_atomically(self.path, data)
            return
        with self._lock:
            self._pending = data
            if self._writing:
                return
            self._writing = True
            self._idle.clear()
        threading.Thread(target=self._drain, name="statefile", daemon=True).start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                data, self._pending = self._pending, None
                if data is None:
                    self._writing = False
                    self._idle.set()
                    return
            try:
                write_atomically(self.path, data)
            except OSError:
                pass    # the next save tries again; the other members still know the state

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything saved is on disk; False on timeout."""
        return self._idle.wait(timeout)
