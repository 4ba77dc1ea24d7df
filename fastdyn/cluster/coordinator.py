"""The coordinator: the one door through which client commands reach the data.

The RESP command layer never touches a store; it asks a coordinator. A single node uses the
`LocalCoordinator` below (a direct call into the storage engine); the cluster replaces it with a
coordinator that runs quorums over the preference list, without changing the command layer.

The interface
-------------
Every operation returns its result directly **or** a `Pending` when the result arrives later
(a quorum in progress). The command layer gives each command a reply slot: a direct result is
encoded at once, a `Pending` keeps its slot open and later replies queue behind it, so replies
leave in request order however they complete. No asyncio Task or Future is made per request:
a `Pending` is a small object completed by a callback. An operation that fails raises an
exception (or completes its `Pending` with one): `CommandError` with Redis' text, or the
store's `ValueError` for an argument it refuses (an empty or oversized key or value); the
command layer's dispatcher turns either into the error reply. A write the storage cannot
persist (full disk, failed fsync) fails with Redis' `MISCONF` error and changes nothing.

Reads:  get(key) -> value | None;  get_entry(key) -> (value, expiry_ms) | None;
        get_many(keys) -> [value | None];  expiry(key) -> expiry_ms (0 = none) | None;
        exists(keys) -> count;  scan(cursor, count) -> (cursor, keys);  keys() -> iterator;
        size() -> int;  expires() -> number of keys with a TTL.
Writes (last-writer-wins): put(key, value, expiry_ms=0);  put_many(pairs);
        delete(keys) -> count;  flush().
Read-modify-write: update(key, fn) -> reply, where fn(value, expiry_ms, now_ms) is called with
        the current state (value None when absent) and returns (new_state, reply): new_state is
        KEEP, DELETE or (value, expiry_ms). The cluster runs it as read quorum -> fn -> write
        quorum; fn must be a pure function of its arguments.
Counters: incr(key, delta) -> new value (a PN-counter operation in the cluster).
Compound commands: compound(keys, fn) -> fn(coordinator): a command made of several of the
        operations above (MSETNX, RENAME, COPY: a read, a decision, writes) runs them on the
        coordinator fn is given, as one unit on keys (None: the whole keyspace): after every
        earlier operation on them and before every later one, as Redis runs one command.
Time: clock() -> now in Unix ms (the base of relative expiries).
Expiry times are absolute Unix times in milliseconds; 0 means "no expiry".
"""
import time

from fastdyn._resp import parse_int
from fastdyn.errors import CommandError, PersistFailed
from fastdyn.pending import Pending  # noqa: F401  (the interface's deferred result)

KEEP = None
DELETE = object()

_LLONG_MAX = (1 << 63) - 1
_LLONG_MIN = -(1 << 63)
MAX_KEY_BYTES = 65536  # the storage engine's key limit


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_counter(value: bytes) -> int:
    """A stored counter's integer value under Redis' rules (strict decimal, fits in 64 bits)."""
    n = parse_int(value)
    if n is None:
        raise CommandError("ERR value is not an integer or out of range")
    return n


def misconf(exc: PersistFailed) -> CommandError:
    """The reply to a write the store refuses because it cannot persist (Redis' MISCONF)."""
    return CommandError(f"MISCONF Errors writing to the data directory: {exc}")


def check_keys(keys) -> None:
    """Refuse a multi-key write before its first key is written if any key is out of range,
    so an error reply means nothing happened."""
    for key in keys:
        if not 0 < len(key) <= MAX_KEY_BYTES:
            raise CommandError(f"ERR key must be 1 to {MAX_KEY_BYTES} bytes long, got {len(key)}")


class LocalCoordinator:
    """A single node: min(N, 1) = 1 replica, every operation a direct call into the Store.

    Results are always direct (never Pending). `write_seq` counts mutations so the server can
    tell whether a reply depends on data not yet fsynced (group commit)."""

    def __init__(self, store, n=3, r=2, w=2, name="fastdyn", clock=now_ms):
        self.store = store
        self.name = name
        self.n, self.r, self.w = n, r, w
        self.clock = clock
        self.write_seq = 0
        # get(key) -> value | None is the store's own method: the hottest read path has no
        # Python frame in between (a bad key raises ValueError, which the command layer reports)
        self.get = store.get

    # -- cluster shape -------------------------------------------------------------------
    def replication(self) -> dict:
        """Configured and effective replication: one member keeps min(N, S) = 1 replica."""
        members = 1
        n_eff = min(self.n, members)
        return {"n": self.n, "r": self.r, "w": self.w, "members": [self.name],
                "n_effective": n_eff, "r_effective": min(self.r, n_eff),
                "w_effective": min(self.w, n_eff)}

    # -- reads ---------------------------------------------------------------------------
    def get_entry(self, key):
        return self.store.get_entry(key)

    def get_many(self, keys):
        get = self.store.get
        return [get(k) for k in keys]

    def expiry(self, key):
        return self.store.expiry_ms(key)

    def exists(self, keys) -> int:
        expiry = self.store.expiry_ms
        return sum(1 for k in keys if expiry(k) is not None)

    def scan(self, cursor: int, count: int):
        return self.store.scan(cursor, count)

    def keys(self):
        return iter(self.store)

    def size(self) -> int:
        return len(self.store)

    def expires(self) -> int:
        """Keys that carry a TTL (INFO's keyspace line), counted by the keydir."""
        len(self.store)  # sweeps the expired keys first, so they are not counted
        return self.store.stats()["keys_with_expiry"]

    # -- writes --------------------------------------------------------------------------
    def put(self, key, value, expiry_ms=0) -> None:
        try:
            if not expiry_ms or expiry_ms > self.clock():
                self.store.put(key, value, expiry_ms)
            else:
                # already in the past: the write is a delete (as Redis does for SET ... PXAT)
                self.store.delete(key)
        except PersistFailed as exc:
            raise misconf(exc) from None
        self.write_seq += 1

    def put_many(self, pairs) -> None:
        check_keys([k for k, _ in pairs])
        put = self.store.put
        written = 0
        try:
            for key, value in pairs:
                put(key, value, 0)
                written += 1
        except PersistFailed as exc:
            raise misconf(exc) from None
        finally:
            if written:
                self.write_seq += 1

    def delete(self, keys) -> int:
        check_keys(keys)
        delete = self.store.delete
        removed = 0
        try:
            for k in keys:
                removed += delete(k)
        except PersistFailed as exc:
            raise misconf(exc) from None
        finally:
            if removed:
                self.write_seq += 1
        return removed

    def flush(self) -> None:
        try:
            self.store.clear()
        except PersistFailed as exc:
            raise misconf(exc) from None
        self.write_seq += 1

    def sweep_expired(self, max_keys: int) -> int:
        """Active expiry: drop up to max_keys expired keys from the index."""
        return self.store.sweep_expired(max_keys)

    # -- read-modify-write ---------------------------------------------------------------
    def update(self, key, fn):
        now = self.clock()
        entry = self.store.get_entry(key)
        value, expiry = entry if entry is not None else (None, 0)
        state, reply = fn(value, expiry, now)
        if state is KEEP:
            return reply
        remove = state is DELETE
        if not remove:
            new_value, new_expiry = state
            remove = new_expiry and new_expiry <= now
        if remove and value is None:
            return reply
        try:
            if remove:
                self.store.delete(key)
            elif new_value is value:
                # only the TTL changes: no need to copy the value through the log again
                self.store.set_expiry(key, new_expiry)
            else:
                self.store.put(key, new_value, new_expiry)
        except PersistFailed as exc:
            raise misconf(exc) from None
        self.write_seq += 1
        return reply

    def compound(self, keys, fn):
        """One command's steps: every operation here is already direct and in order."""
        return fn(self)

    def incr(self, key, delta: int) -> int:
        """Add delta to the counter at key (absent = 0), keeping its TTL; Redis' overflow rule."""
        entry = self.store.get_entry(key)
        if entry is None:
            current, expiry = 0, 0
        else:
            current, expiry = parse_counter(entry[0]), entry[1]
        result = current + delta
        if not _LLONG_MIN <= result <= _LLONG_MAX:
            raise CommandError("ERR increment or decrement would overflow")
        try:
            self.store.put(key, b"%d" % result, expiry)
        except PersistFailed as exc:
            raise misconf(exc) from None
        self.write_seq += 1
        return result
