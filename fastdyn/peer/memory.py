"""A replica handler backed by dicts: serves the peer requests for transport tests, the
one-process simulation and bench/bench_peer.py, where no storage engine is wanted."""
from __future__ import annotations

from fastdyn.peer import messages as m

__all__ = ["MemoryReplica"]


class MemoryReplica:
    """Objects by key, and hinted objects by (intended owner, key)."""

    def __init__(self):
        self.objects: dict[bytes, bytes] = {}
        self.hints: dict[tuple[str, bytes], bytes] = {}

    def handle(self, conn, frame) -> None:
        kind = frame.kind
        if kind == m.REPLICA_PUT:
            _, items = m.unpack_puts(frame.payload)
            objects = self.objects
            for key, obj in items:
                objects[key] = bytes(obj)
            conn.reply(frame, m.pack_results([(m.OK, b"")] * len(items)))
        elif kind == m.REPLICA_GET:
            get = self.objects.get
            results = []
            for key in m.unpack_keys(frame.payload):
                obj = get(key)
                results.append((m.NOT_FOUND, b"") if obj is None else (m.OK, obj))
            conn.reply(frame, m.pack_results(results))
        elif kind == m.HINT:
            items = m.unpack_hints(frame.payload)
            for owner, key, obj in items:
                self.hints[owner, key] = bytes(obj)
            conn.reply(frame, m.pack_results([(m.OK, b"")] * len(items)))
        else:
            conn.reply_error(frame, f"unknown message kind {kind}")
