"""The stored object of one key: siblings under a dotted-version-vector clock, LWW values,
tombstones, expiry and a PN-counter, with one encoding on disk and on the wire.

Pure functions of their arguments (no clock reads, no store access): the coordinator, the
replica handler, read repair, hints and anti-entropy call them. Timestamps are HLC µs
(``hlc.py``); expiries and ``now_ms`` are Unix ms; ``flush_epoch`` is an HLC stamp.

The object
----------
``VersionedObject(clock, siblings, counter)``: ``clock`` is a ``CausalContext`` (``dvv.py``),
the set of dots this replica has seen; ``siblings`` the live values sorted by dot, each a
``Sibling(node, ts, flags, expiry, value)`` whose dot is ``(node, ts)`` (flags: ``TOMBSTONE``,
``LWW`` = written by a plain Redis command); ``counter`` an optional PN-counter.

Sync and the mixed causal/LWW rule
----------------------------------
An object is a causal context plus a dot store, and ``sync`` is the causal join: a value
survives iff both sides hold it, or the other side's clock does not cover its dot; the clocks
join by union. An LWW write ``(ts, i)`` adds its dot and raises the clock's *mark* to
``(ts, i)``: the mark covers every dot with a smaller (timestamp, node id), so on every replica
and in any delivery order the join drops every value, causal or LWW, that is older than the
newest LWW write it has seen, and keeps values newer than it (later causal writes). An object
written only by LWW writes therefore keeps exactly its greatest (timestamp, node id) value. A
causal write is stamped above every dot of its context and of the local clock, so it lands
above any mark its writer has seen. Because the mark is part of the clock (a union), sync stays
a join-semilattice (commutative, associative, idempotent); the tests check it on random
histories and random structures. Same dot, different payload (never in a correct cluster): the
greater payload wins, which keeps the laws.

Sync never refuses (replicas must converge); the sibling limit (``max_siblings``, default
100; a warning flag from ``warn_siblings``, default 25) applies to the writes a coordinator
accepts: ``SiblingLimitExceeded``.

Reads, expiry, flush epoch
--------------------------
``read`` gives the live non-tombstone values and the clock as the client's context.
``lww_winner`` (plain GET) gives the sibling with the greatest (timestamp, node id), or None if
that is a tombstone. An expired value reads exactly as a tombstone whose timestamp is its
expiry. Every value stamped before ``flush_epoch`` is absent. Sync does not look at time or
epochs (that keeps it a lattice): a stale replica may bring flushed values back into a merged
object, but they stay invisible to every read, and ``prune(obj, flush_epoch)`` drops them; the
store applies ``prune(sync(stored, incoming), epoch)``. An object left with no sibling and no
counter after ``prune`` can be deleted outright: everything it could still suppress is older
than the epoch.

Counters
--------
A PN-counter lives beside the siblings: ``Counter(tag, totals)``, totals ``(node, P, N)``
merged by max. Its *tag* names the base it counts from: the (effective timestamp, node id) of
the sibling that was the LWW winner when the counter started (the base is that sibling's
integer value, or 0 when the winner is a tombstone or an expired value), or ``(flush_epoch, 0)``
for a key with no visible value, so concurrent first INCRs through different nodes share a
tag. INCR on a string that parses as an integer converts it in place: the string becomes the
base. The counter counts while its tag names the current winner: value = base + ΣP - ΣN. Any
newer write (SET, DYN.PUT, DEL) becomes the winner and the counter stops counting; an LWW write
(SET) raises the mark above the tag and the counter is dropped. Two counters merge by greater
tag, equal tags by per-node max, so concurrent INCRs and a SET merge the same way everywhere.

Encoding
--------
The first byte is the format/kind tag, so the next format change is safe. Little-endian:

* ``0xA1`` LWW register, no expiry: node u64, ts u64, value (17 bytes + the value).
* ``0xA2`` LWW register with expiry: node u64, ts u64, u32 (expiry ms - ts // 1000), value.
* ``0xA4`` LWW tombstone (plain DEL): node u64, ts u64 (17 bytes).
* ``0xA3`` anything else: clock (``dvv.pack_clock``), u32 sibling count, per sibling node u64,
  ts u64, flags u8, value length u32, [expiry u64 if flags & 4], value; then u8 0 (no counter)
  or 1, tag ts u64, tag node u64, u32 count, per node: node u64, P, N (LEB128, <= 20 bytes).

Encodings are canonical (sorted entries, the shortest kind that fits): replicas that exchanged
everything hold byte-identical objects, so Merkle digests agree. ``decode`` accepts only
canonical bytes (``encode(decode(b)) == b``) and raises ``BadObject`` for anything else.

Legacy data directories
-----------------------
Data written by a single node before objects existed are raw values with no header, and a raw
value can begin with any byte, so the bytes alone cannot tell the formats apart. Proposal for
the storage wiring: a data directory holds a ``FORMAT`` file (``fastdyn-objects 1``), written
(fsync, rename, fsync of the directory) when the directory is created. A directory without it
is legacy: at start-up the node copies every live record into new segments as
``encode(decode_legacy(raw, expiry_ms, node, ts))`` (an LWW register stamped with the record's
own write time and this node's id), makes them durable, writes the marker, and only then drops
the old segments. A crash before the marker is durable leaves the directory legacy and the
migration starts over from the untouched old segments.

Clock hygiene the callers owe: a node's HLC observes ``max_timestamp`` of what it reads before
it writes, and never restarts below the stamps it issued (observe the greatest stamp in the
store at start-up), so a new dot is never one the cluster has already seen.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from fastdyn._resp import parse_int
from fastdyn.cluster.dvv import CausalContext, EMPTY, pack_clock, unpack_clock
from fastdyn.cluster.hlc import MAX_TIMESTAMP
from fastdyn.errors import (BadContext, BadObject, ClockSkewTooLarge, CounterOverflow,
                            NotAnInteger, SiblingLimitExceeded)

__all__ = [
    "Sibling", "Counter", "VersionedObject", "WriteResult", "ReadResult", "CounterResult",
    "TOMBSTONE", "LWW", "MAX_SIBLINGS", "WARN_SIBLINGS", "MAX_CONTEXT_SKEW_US",
    "NOTHING", "lww_object", "sync", "causal_write", "lww_write", "delete", "read", "lww_winner",
    "counter_add", "prune", "max_timestamp", "dead_since", "encode", "decode", "decode_legacy",
    "register_stamp", "register_write",
]

TOMBSTONE = 1
LWW = 2
_EXPIRES = 4                 # encoding only: an expiry field follows
_KNOWN_FLAGS = TOMBSTONE | LWW | _EXPIRES

MAX_SIBLINGS = 100
WARN_SIBLINGS = 25
# A client context stamped further ahead of the coordinator's clock than this was not issued
# by this cluster (and would drag every later stamp of the key into the future).
MAX_CONTEXT_SKEW_US = 300_000_000
MAX_EXPIRY_MS = (1 << 63) - 1           # Redis' greatest expiry: a signed 64-bit Unix ms time

_LLONG_MIN, _LLONG_MAX = -(1 << 63), (1 << 63) - 1

TAG_REGISTER = 0xA1
TAG_REGISTER_TTL = 0xA2
TAG_OBJECT = 0xA3
TAG_DELETED = 0xA4
_REGISTER = struct.Struct("<BQQ")
_REGISTER_SIZE = _REGISTER.size
_REGISTER_TTL = struct.Struct("<BQQI")
_SIB_HEAD = struct.Struct("<QQBI")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_PAIR = struct.Struct("<QQ")
_VARINT_MAX = 20


class Sibling(NamedTuple):
    node: int
    ts: int
    flags: int
    expiry: int      # absolute Unix ms, 0 = none
    value: bytes     # b"" for a tombstone


class Counter(NamedTuple):
    tag: tuple       # (ts, node) of the base it counts from
    totals: tuple    # ((node, P, N), ...) sorted by node


class WriteResult(NamedTuple):
    object: "VersionedObject"
    context: CausalContext | None   # what DYN.PUT returns (None for LWW writes)
    ts: int                         # the write's timestamp (its dot is (node, ts))
    sibling_warning: bool           # the object holds WARN_SIBLINGS or more siblings


class ReadResult(NamedTuple):
    values: list
    context: CausalContext


class CounterResult(NamedTuple):
    object: "VersionedObject"
    value: int


class VersionedObject:
    """One key's clock, siblings (sorted by dot) and counter; immutable by convention."""

    __slots__ = ("clock", "siblings", "counter", "register")

    def __init__(self, clock: CausalContext, siblings: tuple, counter: Counter | None = None):
        self.clock = clock
        self.siblings = siblings
        self.counter = counter
        # one value whose own LWW write is the whole clock: the common plain-SET object
        self.register = (counter is None and len(siblings) == 1 and not clock.vv
                         and not clock.cloud and (siblings[0][1], siblings[0][0]) == clock.mark)

    def __eq__(self, other):
        if not isinstance(other, VersionedObject):
            return NotImplemented
        return (self.clock == other.clock and self.siblings == other.siblings
                and self.counter == other.counter)

    def __hash__(self):
        return hash((self.clock, self.siblings, self.counter))

    def __repr__(self):
        return f"VersionedObject({self.clock!r}, {self.siblings!r}, {self.counter!r})"


NOTHING = VersionedObject(EMPTY, ())


_new_tuple = tuple.__new__   # builds a Sibling without NamedTuple's keyword-handling __new__


def _register(node, ts, flags, expiry, value) -> VersionedObject:
    obj = VersionedObject.__new__(VersionedObject)
    obj.clock = CausalContext((ts, node))
    obj.siblings = (_new_tuple(Sibling, (node, ts, flags, expiry, value)),)
    obj.counter = None
    obj.register = True
    return obj


def _check_payload(value, expiry_ms: int, tombstone: bool):
    if tombstone:
        return b"", 0
    if not isinstance(value, bytes):
        if not isinstance(value, (bytearray, memoryview)):
            raise TypeError(f"a value must be bytes, not {type(value).__name__}")
        value = bytes(value)
    if not 0 <= expiry_ms <= MAX_EXPIRY_MS:
        raise ValueError(f"expiry {expiry_ms} ms is out of range")
    return value, expiry_ms


def _check_limits(siblings, max_siblings: int, warn_siblings: int) -> bool:
    count = len(siblings)
    if count > max_siblings:
        raise SiblingLimitExceeded(
            f"the write would leave {count} siblings (limit {max_siblings}); "
            f"read the key and write with its context to merge them")
    return count >= warn_siblings


# -- writes ---------------------------------------------------------------------------------
def lww_object(node: int, value, ts: int, expiry_ms: int = 0, *,
               tombstone: bool = False) -> VersionedObject:
    """The object of one LWW write alone: what a coordinator replicates for a plain SET/DEL."""
    value, expiry_ms = _check_payload(value, expiry_ms, tombstone)
    if not 1 <= ts <= MAX_TIMESTAMP:
        raise ValueError(f"timestamp {ts} is out of range")
    return _register(node, ts, LWW | TOMBSTONE if tombstone else LWW, expiry_ms, value)


def encode_lww(node: int, value, ts: int, expiry_ms: int = 0, *,
               tombstone: bool = False) -> bytes:
    """encode(lww_object(...)): for a plain SET, the register's bytes without the object."""
    if value.__class__ is bytes and not (expiry_ms or tombstone) and 1 <= ts <= MAX_TIMESTAMP:
        return _REGISTER.pack(TAG_REGISTER, node, ts) + value
    return encode(lww_object(node, value, ts, expiry_ms, tombstone=tombstone))


def lww_write(obj: VersionedObject, node: int, value, ts: int, expiry_ms: int = 0, *,
              tombstone: bool = False, max_siblings: int = MAX_SIBLINGS,
              warn_siblings: int = WARN_SIBLINGS) -> WriteResult:
    """A plain Redis write at node: a fresh dot; every value with a smaller (ts, node) goes.

    Equal to sync(obj, lww_object(node, value, ts, ...)), so replicating the small
    lww_object(...) of result.ts gives every replica the same outcome. Only a regression of
    node's own clock below its earlier dots moves ts (a dot is never reused)."""
    clock = obj.clock
    own = clock.max_counter_of(node)
    if clock.mark[1] == node and clock.mark[0] > own:
        own = clock.mark[0]
    if ts <= own:
        ts = own + 1
    new = sync(obj, lww_object(node, value, ts, expiry_ms, tombstone=tombstone))
    warn = _check_limits(new.siblings, max_siblings, warn_siblings)
    return WriteResult(new, None, ts, warn)


def causal_write(obj: VersionedObject, ctx: CausalContext, node: int, value, ts: int,
                 expiry_ms: int = 0, *, tombstone: bool = False,
                 max_siblings: int = MAX_SIBLINGS, warn_siblings: int = WARN_SIBLINGS,
                 max_context_skew_us: int = MAX_CONTEXT_SKEW_US) -> WriteResult:
    """DYN.PUT at coordinator node: drop the values ctx covers, add value with a new dot.

    The dot's timestamp is max(ts, 1 + every timestamp obj's clock or ctx covers), so the new
    value is above everything its writer read. result.context covers exactly ctx plus the new
    dot. ctx stamped more than max_context_skew_us ahead of ts raises BadContext."""
    value, expiry_ms = _check_payload(value, expiry_ms, tombstone)
    ctx_max = ctx.max_counter()
    if ctx_max > ts + max_context_skew_us:
        raise BadContext(f"the context is stamped {ctx_max - ts} µs ahead of this node's clock")
    clock = obj.clock
    ts = max(ts, clock.max_counter() + 1, ctx_max + 1)
    if ts > MAX_TIMESTAMP:
        raise ClockSkewTooLarge(f"timestamp {ts} exceeds the 63-bit range")
    covers = ctx.covers
    kept = [s for s in obj.siblings if not covers(s[0], s[1])]
    kept.append(Sibling(node, ts, TOMBSTONE if tombstone else 0, expiry_ms, value))
    kept.sort()
    warn = _check_limits(kept, max_siblings, warn_siblings)
    new_clock = clock.join(ctx).with_event(node, ts)
    counter = obj.counter
    if counter is not None and counter.tag < new_clock.mark:
        counter = None
    return WriteResult(VersionedObject(new_clock, tuple(kept), counter),
                       ctx.with_dot(node, ts), ts, warn)


def delete(obj: VersionedObject, ctx: CausalContext, node: int, ts: int,
           **limits) -> WriteResult:
    """DYN.DEL: a causal write of a tombstone."""
    return causal_write(obj, ctx, node, b"", ts, tombstone=True, **limits)


# -- sync -----------------------------------------------------------------------------------
def sync(a: VersionedObject, b: VersionedObject) -> VersionedObject:
    """The union of two replicas' knowledge (a lattice join; see the module docstring)."""
    if a is b:
        return a
    if a.register and b.register:
        ka, kb = a.clock.mark, b.clock.mark
        if ka != kb:
            return a if ka > kb else b
        return a if a.siblings[0] >= b.siblings[0] else b
    ca, cb = a.clock, b.clock
    clock = ca.join(cb)
    theirs = {(s[0], s[1]): s for s in b.siblings}
    out = []
    for s in a.siblings:
        t = theirs.pop((s[0], s[1]), None)
        if t is not None:
            out.append(s if s >= t else t)
        elif not cb.covers(s[0], s[1]):
            out.append(s)
    for t in theirs.values():
        if not ca.covers(t[0], t[1]):
            out.append(t)
    out.sort()
    return VersionedObject(clock, tuple(out), _join_counters(a.counter, b.counter, clock.mark))


def _join_counters(x: Counter | None, y: Counter | None, mark) -> Counter | None:
    if x is None or (y is not None and y.tag > x.tag):
        x, y = y, x
    if x is None:
        return None
    if y is not None and y.tag == x.tag and y.totals != x.totals:
        merged = {node: (p, n) for node, p, n in x.totals}
        for node, p, n in y.totals:
            p0, n0 = merged.get(node, (0, 0))
            merged[node] = (max(p, p0), max(n, n0))
        x = Counter(x.tag, tuple((node, p, n) for node, (p, n) in sorted(merged.items())))
    return None if x.tag < mark else x


def prune(obj: VersionedObject, flush_epoch: int) -> VersionedObject:
    """Drop every sibling and counter stamped before the flush epoch (the clock keeps their
    dots, so a stale replica cannot bring them back)."""
    if not flush_epoch:
        return obj
    siblings = tuple(s for s in obj.siblings if s[1] >= flush_epoch)
    counter = obj.counter
    if counter is not None and counter.tag[0] < flush_epoch:
        counter = None
    if len(siblings) == len(obj.siblings) and counter is obj.counter:
        return obj
    return VersionedObject(obj.clock, siblings, counter)


def max_timestamp(obj: VersionedObject) -> int:
    """The greatest HLC stamp in obj: what a node's clock observes before writing it."""
    return obj.clock.max_counter()


def dead_since(obj: VersionedObject):
    """When every value of obj became dead (Unix ms): the latest of its tombstones' stamps
    and its values' expiries; None while any value lives with no expiry or a counter counts.
    Anti-entropy reaps an object dead for longer than the grace period."""
    if obj.counter is not None:
        return None
    latest = 0
    for s in obj.siblings:
        if s[2] & TOMBSTONE:
            latest = max(latest, s[1] // 1000)
        elif s[3]:
            latest = max(latest, s[3])
        else:
            return None
    return latest


# -- reads ----------------------------------------------------------------------------------
def _winner(obj: VersionedObject, now_ms: int, flush_epoch: int):
    """(sibling, (effective ts, node), dead) of the greatest sibling, or (None, None, True)."""
    best = best_key = None
    best_dead = True
    for s in obj.siblings:
        node, ts, flags, expiry, _ = s
        if ts < flush_epoch:
            continue
        if expiry and expiry <= now_ms:
            # the expiry as a timestamp (µs), within the stamps' range even for a far now_ms
            key, dead = (min(expiry * 1000, MAX_TIMESTAMP), node, ts), True
        else:
            key, dead = (ts, node, ts), flags & TOMBSTONE
        if best_key is None or key > best_key:
            best, best_key, best_dead = s, key, dead
    return best, (best_key[:2] if best_key else None), best_dead


def _counter_basis(obj: VersionedObject, now_ms: int, flush_epoch: int):
    """(live winner or None, the tag a counter must carry to count now, base or None)."""
    winner, key, dead = _winner(obj, now_ms, flush_epoch)
    if winner is None:
        key = (flush_epoch, 0)
    # a value that expired before it was written sits below its own LWW mark; a tag under
    # the mark would be dropped by the next sync
    mark = obj.clock.mark
    if key < mark:
        key = mark
    if dead:
        return None, key, 0
    return winner, key, parse_int(winner.value)


def _counter_total(obj: VersionedObject, now_ms: int, flush_epoch: int):
    """(live winner, counter value) when the counter counts now, else (winner, None)."""
    winner, tag, base = _counter_basis(obj, now_ms, flush_epoch)
    counter = obj.counter
    if counter is None or counter.tag != tag or base is None:
        return winner, None
    return winner, base + sum(p - n for _, p, n in counter.totals)


def read(obj: VersionedObject, now_ms: int, flush_epoch: int = 0) -> ReadResult:
    """DYN.GET: the live non-tombstone values (by dot; a counting counter shows its value in
    place of its base) and the context covering everything obj has seen."""
    base, total = (None, None) if obj.counter is None else _counter_total(obj, now_ms,
                                                                          flush_epoch)
    values = []
    for s in obj.siblings:
        if (s[2] & TOMBSTONE or s[1] < flush_epoch or (s[3] and s[3] <= now_ms)):
            continue
        values.append(b"%d" % total if s is base and total is not None else s[4])
    if total is not None and base is None:
        values.append(b"%d" % total)
    return ReadResult(values, obj.clock)


def plain_value(data, flush_epoch: int = 0):
    """The value a plain GET reads from a plain SET register (tag 0xA1, no expiry) that the
    flush epoch leaves visible, read from its header alone; None for any other encoding
    (lww_winner(decode(data)) decides). data: canonical bytes, as a quorum read merges."""
    if len(data) >= _REGISTER_SIZE and data[0] == TAG_REGISTER:
        _, _, ts = _REGISTER.unpack_from(data)
        if flush_epoch <= ts <= MAX_TIMESTAMP and ts:
            return data[_REGISTER_SIZE:]
    return None


def lww_winner(obj: VersionedObject, now_ms: int, flush_epoch: int = 0):
    """Plain GET: (value, expiry_ms) of the greatest (ts, node) sibling, None if absent."""
    if obj.register:
        _, ts, flags, expiry, value = obj.siblings[0]
        if flags & TOMBSTONE or ts < flush_epoch or (expiry and expiry <= now_ms):
            return None
        return value, expiry
    if obj.counter is not None:
        winner, total = _counter_total(obj, now_ms, flush_epoch)
        if total is not None:
            return b"%d" % total, (winner.expiry if winner is not None else 0)
    winner, _, dead = _winner(obj, now_ms, flush_epoch)
    if dead:
        return None
    return winner.value, winner.expiry


def counter_add(obj: VersionedObject, node: int, delta: int, now_ms: int,
                flush_epoch: int = 0) -> CounterResult:
    """INCRBY/DECRBY at coordinator node: add delta to node's own totals.

    No dot is made (a counter never adds siblings). NotAnInteger when the key holds a value
    that is not a 64-bit decimal integer; CounterOverflow when the result leaves that range."""
    _, tag, base = _counter_basis(obj, now_ms, flush_epoch)
    if base is None:
        raise NotAnInteger()
    counter = obj.counter
    totals = {} if counter is None or counter.tag != tag else {
        i: (p, n) for i, p, n in counter.totals}
    p, n = totals.get(node, (0, 0))
    if delta > 0:
        p += delta
    elif delta < 0:
        n -= delta
    if p or n:
        totals[node] = (p, n)
    value = base + sum(p - n for p, n in totals.values())
    if not _LLONG_MIN <= value <= _LLONG_MAX:
        raise CounterOverflow()
    new_counter = Counter(tag, tuple((i, p, n) for i, (p, n) in sorted(totals.items())))
    return CounterResult(VersionedObject(obj.clock, obj.siblings, new_counter), value)


# -- encoding -------------------------------------------------------------------------------
def encode(obj: VersionedObject) -> bytes:
    """The canonical bytes of obj (see the module docstring for the layout)."""
    if obj.register:
        node, ts, flags, expiry, value = obj.siblings[0]
        if flags == LWW and not expiry:   # the plain SET, first
            return _REGISTER.pack(TAG_REGISTER, node, ts) + value
        tag = _register_format(flags, ts, expiry)
        if tag == TAG_REGISTER_TTL:
            return _REGISTER_TTL.pack(TAG_REGISTER_TTL, node, ts, expiry - ts // 1000) + value
        if tag == TAG_DELETED:
            return _REGISTER.pack(TAG_DELETED, node, ts)
    parts = [bytes((TAG_OBJECT,))]
    pack_clock(obj.clock, parts)
    parts.append(_U32.pack(len(obj.siblings)))
    for node, ts, flags, expiry, value in obj.siblings:
        if expiry:
            parts.append(_SIB_HEAD.pack(node, ts, flags | _EXPIRES, len(value)))
            parts.append(_U64.pack(expiry))
        else:
            parts.append(_SIB_HEAD.pack(node, ts, flags, len(value)))
        parts.append(value)
    counter = obj.counter
    if counter is None:
        parts.append(b"\x00")
    else:
        parts.append(b"\x01")
        parts.append(_PAIR.pack(*counter.tag))
        parts.append(_U32.pack(len(counter.totals)))
        for node, p, n in counter.totals:
            parts.append(_U64.pack(node))
            parts.append(_varint(p))
            parts.append(_varint(n))
    return b"".join(parts)


def _register_format(flags: int, ts: int, expiry: int) -> int:
    """The short format of a register's one sibling, or TAG_OBJECT if none holds it."""
    if flags == LWW:
        if not expiry:
            return TAG_REGISTER
        if 0 <= expiry - ts // 1000 <= 0xFFFFFFFF:
            return TAG_REGISTER_TTL
    elif flags == LWW | TOMBSTONE:
        return TAG_DELETED
    return TAG_OBJECT


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(offset, min(len(data), offset + _VARINT_MAX)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte == 0 and i > offset:
                raise BadObject("overlong counter total")
            return value, i + 1
    raise BadObject("truncated or oversized counter total")


def decode(data) -> VersionedObject:
    """The object encoded in data (bytes, bytearray or memoryview); BadObject if malformed."""
    if not isinstance(data, bytes):
        data = bytes(data)
    head = register_write(data)
    if head is not None:
        node, ts, flags, expiry, offset = head
        return _register(node, ts, flags, expiry, data[offset:])
    if data[0] == TAG_OBJECT:
        return _decode_object(data)
    raise BadObject(f"unknown object format 0x{data[0]:02x}")


def register_write(data):
    """(node, ts, flags, expiry, offset of the value) of the one write a short-format
    register holds, checked as `decode` checks it (BadObject); None for any other format.
    Lets a replica sync a plain write without building its object."""
    if not data:
        raise BadObject("empty object")
    tag = data[0]
    if tag == TAG_REGISTER:   # the plain SET, inline
        if len(data) < _REGISTER_SIZE:
            raise BadObject("truncated register")
        _, node, ts = _REGISTER.unpack_from(data)
        if 1 <= ts <= MAX_TIMESTAMP:
            return node, ts, LWW, 0, _REGISTER_SIZE
        raise BadObject(f"timestamp {ts} is out of range")
    if tag == TAG_REGISTER_TTL:
        node, ts, delta = _register_head(_REGISTER_TTL, data)
        expiry = ts // 1000 + delta
        if not 1 <= expiry <= MAX_EXPIRY_MS:
            raise BadObject(f"expiry {expiry} is out of range")
        return node, ts, LWW, expiry, _REGISTER_TTL.size
    if tag == TAG_DELETED:
        if len(data) != _REGISTER.size:
            raise BadObject("a deleted register is 17 bytes")
        node, ts = _register_head(_REGISTER, data)
        return node, ts, LWW | TOMBSTONE, 0, _REGISTER_SIZE
    return None


_SHORT_TAGS = frozenset((TAG_REGISTER, TAG_REGISTER_TTL, TAG_DELETED))


def register_stamp(data):
    """(ts, node) of a short-format register's one write (its clock's mark), or None for an
    encoding in the general format. Read from the header alone, unchecked: for canonical
    bytes, such as the store's, where sync of two registers compares exactly these marks."""
    if len(data) >= _REGISTER_SIZE and data[0] in _SHORT_TAGS:
        _, node, ts = _REGISTER.unpack_from(data)
        return ts, node
    return None


def newest_stamp(data) -> int:
    """The greatest timestamp in an encoded object: its newest write."""
    stamp = register_stamp(data)
    return stamp[0] if stamp is not None else max_timestamp(decode(data))


def _register_head(head: struct.Struct, data: bytes) -> tuple:
    """(node, ts, ...) of a short-format register, its stamp checked."""
    if len(data) < head.size:
        raise BadObject("truncated register")
    fields = head.unpack_from(data)
    if not 1 <= fields[2] <= MAX_TIMESTAMP:
        raise BadObject(f"timestamp {fields[2]} is out of range")
    return fields[1:]


def _decode_object(data: bytes) -> VersionedObject:
    clock, offset = unpack_clock(data, 1, BadObject)
    end = len(data)
    if offset + 4 > end:
        raise BadObject("truncated sibling count")
    (count,) = _U32.unpack_from(data, offset)
    offset += 4
    mark = clock.mark
    siblings = []
    previous = (-1, -1)
    for _ in range(count):
        if offset + _SIB_HEAD.size > end:
            raise BadObject("truncated sibling")
        node, ts, flags, length = _SIB_HEAD.unpack_from(data, offset)
        offset += _SIB_HEAD.size
        if flags & ~_KNOWN_FLAGS:
            raise BadObject(f"unknown sibling flags 0x{flags:02x}")
        if (node, ts) <= previous:
            raise BadObject("siblings out of order or repeated")
        previous = (node, ts)
        if not 1 <= ts <= MAX_TIMESTAMP or (ts, node) < mark or not clock.covers(node, ts):
            raise BadObject(f"sibling ({node}, {ts}) is outside the clock")
        expiry = 0
        if flags & _EXPIRES:
            if offset + 8 > end:
                raise BadObject("truncated expiry")
            (expiry,) = _U64.unpack_from(data, offset)
            offset += 8
            if not 1 <= expiry <= MAX_EXPIRY_MS:
                raise BadObject(f"expiry {expiry} is out of range")
        if flags & TOMBSTONE and (length or expiry):
            raise BadObject("a tombstone carries a value or an expiry")
        if offset + length > end:
            raise BadObject("truncated value")
        siblings.append(Sibling(node, ts, flags & ~_EXPIRES, expiry,
                                data[offset:offset + length]))
        offset += length
    if offset >= end:
        raise BadObject("truncated counter flag")
    has_counter = data[offset]
    offset += 1
    counter = None
    if has_counter == 1:
        counter, offset = _decode_counter(data, offset, mark)
    elif has_counter != 0:
        raise BadObject(f"bad counter flag {has_counter}")
    if offset != end:
        raise BadObject(f"{end - offset} unexpected bytes after the object")
    obj = VersionedObject(clock, tuple(siblings), counter)
    only = siblings[0] if obj.register else None
    if only is not None and _register_format(only.flags, only.ts, only.expiry) != TAG_OBJECT:
        raise BadObject("a plain register in the general format")
    return obj


def _decode_counter(data: bytes, offset: int, mark) -> tuple[Counter, int]:
    if offset + _PAIR.size + 4 > len(data):
        raise BadObject("truncated counter")
    tag = _PAIR.unpack_from(data, offset)
    (count,) = _U32.unpack_from(data, offset + _PAIR.size)
    offset += _PAIR.size + 4
    if tag < mark or tag[0] > MAX_TIMESTAMP:
        raise BadObject(f"counter tag {tag} is below the clock's mark or out of range")
    totals = []
    previous = -1
    for _ in range(count):
        if offset + 8 > len(data):
            raise BadObject("truncated counter entry")
        (node,) = _U64.unpack_from(data, offset)
        p, offset = _read_varint(data, offset + 8)
        n, offset = _read_varint(data, offset)
        if node <= previous or not (p or n):
            raise BadObject("counter entries out of order, repeated or empty")
        previous = node
        totals.append((node, p, n))
    return Counter(tag, tuple(totals)), offset


def decode_legacy(raw, expiry_ms: int, node: int, ts: int) -> VersionedObject:
    """A value stored by a single node before objects existed, as the LWW register it is."""
    return lww_object(node, raw, ts, expiry_ms)
