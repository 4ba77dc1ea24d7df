"""Hinted handoff's store: writes a fallback keeps for an unreachable primary (Dynamo §4.6).

A fallback that stands in for a primary keeps the write here, under a hint naming that primary,
in its own log-structured store (the data directory's `hints/`), so hints survive restarts and
never mix with the node's own data. When the primary is reachable again the node delivers each
hint (a replica write the primary syncs in) and drops it once the primary has acknowledged the
exact object that was sent.

Hints for the same (owner, key) are merged with the object model's sync on arrival, so a key
written many times while its owner is down costs one hint.

Bound: `max_bytes` of hinted objects. A hint that would pass it is refused, and the fallback
does not acknowledge that write (the coordinator counts it as a failed replica): a refused hint
can cost availability, never an acknowledged write. Anti-entropy repairs what hints miss.
"""
import struct
import time

from fastdyn.errors import HintStoreFull
from fastdyn.storage import Store

_STAMP = struct.Struct("<Q")    # value = u64 ms when first hinted | object bytes
_OWNER = struct.Struct("<H")    # key = u16 owner length | owner | key


def _hint_key(owner: str, key: bytes) -> bytes:
    o = owner.encode()
    return _OWNER.pack(len(o)) + o + key


def _split_key(hint_key: bytes) -> tuple[str, bytes]:
    (n,) = _OWNER.unpack_from(hint_key)
    return hint_key[2:2 + n].decode(), hint_key[2 + n:]


class HintStore:
    def __init__(self, path: str, merge, max_bytes: int = 1 << 30, sync: str = "interval",
                 clock=time.time):
        """merge(a_bytes, b_bytes) -> bytes: the object model's sync of two encodings."""
        self.store = Store(path, sync=sync)
        self.merge = merge
        self.max_bytes = max_bytes
        self.clock = clock
        self.refused = 0
        self.delivered = 0
        self._owners = {}      # owner -> [count, bytes, oldest first-hinted ms]
        for hint_key, value, _ in self.store.items():
            self._count(_split_key(hint_key)[0], len(value) - _STAMP.size,
                        _STAMP.unpack_from(value)[0])

    def _count(self, owner: str, nbytes: int, stamp: int, sign: int = 1) -> None:
        entry = self._owners.setdefault(owner, [0, 0, stamp])
        entry[0] += sign
        entry[1] += sign * nbytes
        if sign > 0:
            entry[2] = min(entry[2], stamp)
        if entry[0] <= 0:
            del self._owners[owner]

    @property
    def bytes(self) -> int:
        return sum(e[1] for e in self._owners.values())

    def add(self, owner: str, key: bytes, obj: bytes) -> None:
        """Keep obj for owner, merged with any hint already held for that key; raises
        HintStoreFull (nothing kept) when the bound would be passed."""
        hint_key = _hint_key(owner, key)
        old = self.store.get(hint_key)
        now = int(self.clock() * 1000)
        if old is not None:
            stamp = _STAMP.unpack_from(old)[0]
            old_obj = old[_STAMP.size:]
            new_obj = self.merge(old_obj, obj)
            grow = len(new_obj) - len(old_obj)
        else:
            stamp, new_obj, grow = now, obj, len(obj)
        if grow > 0 and self.bytes + grow > self.max_bytes:
            self.refused += 1
            raise HintStoreFull(f"hint store full ({self.bytes} of {self.max_bytes} bytes)")
        self.store.put(hint_key, _STAMP.pack(stamp) + new_obj)
        # the write this hint stands for may be acknowledged as soon as add() returns: the
        # hint must survive a kill -9 of this process from then on
        self.store.flush_buffer()
        if old is not None:
            self._count(owner, len(old) - _STAMP.size, stamp, -1)
        self._count(owner, len(new_obj), stamp)

    def get(self, owner: str, key: bytes):
        """The object hinted for owner at key, or None."""
        value = self.store.get(_hint_key(owner, key))
        return None if value is None else value[_STAMP.size:]

    def owners(self) -> list[str]:
        """Members this node holds hints for."""
        return list(self._owners)

    def pending(self, owner: str, limit: int = 1000) -> list[tuple[bytes, bytes]]:
        """Up to limit (key, object) hints held for owner. Walks the keys only and reads the
        values of the ones it returns: other owners' hints cost no disk reads."""
        prefix = _hint_key(owner, b"")
        out = []
        for hint_key in self.store:
            if hint_key.startswith(prefix):
                value = self.store.get(hint_key)
                if value is not None:
                    out.append((hint_key[len(prefix):], value[_STAMP.size:]))
                    if len(out) >= limit:
                        break
        return out

    def acknowledged(self, owner: str, key: bytes, obj: bytes) -> bool:
        """The owner has synced obj in: drop the hint unless it changed since it was sent."""
        hint_key = _hint_key(owner, key)
        value = self.store.get(hint_key)
        if value is None or value[_STAMP.size:] != obj:
            return False
        self.store.delete(hint_key)
        self._count(owner, len(obj), 0, -1)
        self.delivered += 1
        return True

    def drop_all(self) -> None:
        """FLUSHDB: hinted writes are all older than the new flush epoch."""
        self.store.clear()
        self._owners.clear()

    def stats(self) -> dict:
        now = int(self.clock() * 1000)
        oldest = min((e[2] for e in self._owners.values()), default=None)
        return {
            "hints_pending": sum(e[0] for e in self._owners.values()),
            "hints_bytes": self.bytes,
            "hints_oldest_age_s": 0.0 if oldest is None else (now - oldest) / 1000,
            "hints_delivered": self.delivered,
            "hints_refused": self.refused,
            "hints_by_owner": {o: e[0] for o, e in self._owners.items()},
        }

    def close(self) -> None:
        self.store.close()
