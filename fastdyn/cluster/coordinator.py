"""The coordinator: the one door through which client commands reach the data.

The RESP command layer never touches a store; it asks a coordinator. A single node uses the
`LocalCoordinator` below (a direct call into the storage engine); the cluster replaces it with a
coordinator that runs quorums over the preference list, without changing the command layer.

The interface every coordinator implements is the `Coordinator` Protocol below.
"""
import time
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

from fastdyn._resp import parse_int
from fastdyn.errors import BadKey, CounterOverflow, NotAnInteger, PersistFailed, misconf
from fastdyn.pending import Pending

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
        raise NotAnInteger()
    return n


def check_keys(keys) -> None:
    """Refuse a multi-key write before its first key is written if any key is out of range,
    so an error reply means nothing happened."""
    for key in keys:
        if not 0 < len(key) <= MAX_KEY_BYTES:
            raise BadKey(f"key must be 1 to {MAX_KEY_BYTES} bytes long, got {len(key)}")


# update's fn(value | None, expiry_ms, now_ms) -> (KEEP | DELETE | (value, expiry_ms), reply)
UpdateFn = Callable[[bytes | None, int, int], tuple[Any, Any]]


@runtime_checkable
class Coordinator(Protocol):
    """What the command layer asks of every coordinator (and nothing else).

    Every operation returns its result directly **or** a `Pending` when the result arrives
    later (a quorum in progress). The command layer gives each command a reply slot: a direct
    result is encoded at once, a `Pending` keeps its slot open and later replies queue behind
    it, so replies leave in request order however they complete. No asyncio Task or Future is
    made per request: a `Pending` is a small object completed by a callback.

    An operation that fails raises an exception (or completes its `Pending` with one):
    `CommandError` (or a subclass: `NotAnInteger`, `CounterOverflow`) with Redis' text,
    `BadKey` (a `ValueError`) for an empty or oversized key, or the store's `ValueError` for a
    value it refuses; the command layer's dispatcher turns either into the error reply. A
    write the storage cannot persist (full disk, failed fsync) fails with Redis' `MISCONF`
    error and changes nothing.

    Writes are last-writer-wins. `update(key, fn)` is a read-modify-write: fn(value,
    expiry_ms, now_ms) is called with the current state (value None when absent) and returns
    (new_state, reply), new_state being KEEP, DELETE or (value, expiry_ms); the cluster runs it
    as read quorum -> fn -> write quorum, so fn must be a pure function of its arguments.
    Expiry times are absolute Unix times in milliseconds; 0 means "no expiry".
    """

    write_seq: int
    """Mutations so far: replies after a write wait until it is persisted (group commit)."""

    direct_store: Any
    """The Store a plain GET or SET is exactly one call into (a single node's coordinator):
    the command loop then runs those straight from its receive buffer. None otherwise."""

    def replication(self) -> dict:
        """Configured and effective n, r, w and the members (INFO, DYN.* commands)."""

    def clock(self) -> int:
        """Now in Unix ms: the base of relative expiries."""

    # -- reads ---------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None | Pending:
        """The value of key, None when absent."""

    def get_entry(self, key: bytes) -> tuple[bytes, int] | None | Pending:
        """(value, expiry_ms) of key, None when absent."""

    def get_many(self, keys: list[bytes]) -> list[bytes | None] | Pending:
        """The value (or None) of each key, in order."""

    def expiry(self, key: bytes) -> int | None | Pending:
        """The expiry of key (0 = none), None when absent."""

    def exists(self, keys: list[bytes]) -> int | Pending:
        """How many of keys exist, a key named twice counted twice (as Redis does)."""

    def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]] | Pending:
        """(next cursor, about count keys): a walk from cursor 0 until 0 comes back returns
        every key once (the cursor's meaning is the implementation's)."""

    def keys(self) -> Iterable[bytes] | Pending:
        """Every live key, once."""

    def size(self) -> int | Pending:
        """The number of live keys."""

    def expires(self) -> int:
        """Keys with a TTL, of those INFO's keyspace line counts (a cluster member's own)."""

    # -- writes --------------------------------------------------------------------------
    def put(self, key: bytes, value: bytes, expiry_ms: int = 0) -> None | Pending:
        """Write value (an expiry already past makes the write a delete)."""

    def put_many(self, pairs: list[tuple[bytes, bytes]]) -> None | Pending:
        """Write every (key, value), without expiry; no key is written if one is bad."""

    def delete(self, keys: list[bytes]) -> int | Pending:
        """Delete keys; how many existed (a key named twice is deleted once)."""

    def flush(self) -> None | Pending:
        """Delete every key."""

    def sweep_expired(self, max_keys: int) -> int:
        """Active expiry: drop up to max_keys expired keys here; how many were dropped."""

    # -- read-modify-write ---------------------------------------------------------------
    def update(self, key: bytes, fn: UpdateFn) -> Any | Pending:
        """Apply fn to key's state (see above); fn's reply."""

    def incr(self, key: bytes, delta: int) -> int | Pending:
        """Add delta to the integer at key (absent = 0) keeping its TTL (a PN-counter in the
        cluster); the new value."""

    def compound(self, keys: list[bytes] | None,
                 fn: Callable[["Coordinator"], Any]) -> Any | Pending:
        """fn(coordinator): a command made of several operations (MSETNX, RENAME, COPY: a
        read, a decision, writes) run on the coordinator fn is given, as one unit on keys
        (None: the whole keyspace), after every earlier operation on them and before every
        later one, as Redis runs one command."""


@runtime_checkable
class ClusterCoordinator(Coordinator, Protocol):
    """A cluster member's coordinator: the DYN.* causal commands and its own share of keys."""

    def dyn_get(self, key: bytes, r: int | None = None) -> list | Pending:
        """[context, [values]]: every live sibling of key, from an R quorum."""

    def dyn_put(self, key: bytes, context: bytes, value: bytes, **options) -> bytes | Pending:
        """A causal write of value (or a tombstone) after context; the new context."""

    def local_size(self) -> int:
        """Live keys held by this node (INFO's keyspace line)."""


class LocalCoordinator:
    """The `Coordinator` of a single node: min(N, 1) = 1 replica, every operation a direct
    call into the Store.

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
        self.direct_store = store

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
            raise CounterOverflow()
        try:
            self.store.put(key, b"%d" % result, expiry)
        except PersistFailed as exc:
            raise misconf(exc) from None
        self.write_seq += 1
        return result
