"""Causal contexts of dotted version vectors: the clock of a stored object and a client's context.

Dots and node ids
-----------------
A write coordinated by node ``i`` gets the dot ``(i, k)``. The counter ``k`` is the write's
hybrid-logical-clock timestamp (µs, see ``hlc.py``), not a per-key sequence number: a node's
HLC never repeats or goes backwards, so a dot is fresh without reading anything (a node that
coordinates a key it does not hold, or that restarted with an empty disk, cannot reissue a dot
that lives elsewhere), and a value's dot doubles as its LWW key ``(ts, i)``.

A node id is ``node_id(name)``: XXH64 of the UTF-8 name with its own seed, a 64-bit integer.
Eight bytes per entry whatever the name's length (names can be long host:port strings). Two
names collide with probability about n**2 / 2**65: 10**4 names ever used give 3e-12.
Membership should still refuse a joining name whose id equals a known one's.

The causal context
------------------
A causal context is a set of dots, represented as three parts (``CausalContext``):

* ``mark`` = (ts, node): every dot whose LWW key (ts, node) is <= mark. An LWW write covers
  everything older than itself in (timestamp, node id) order, whatever the context; the mark
  is how such a write says so. (0, 0) covers nothing.
* ``vv``: {node: n}: the dots (node, k) with k <= n (the version vector of the Dynamo papers).
* ``cloud``: single dots outside both, e.g. the dot a DYN.PUT returns: the context of a put
  covers what its own context covered plus its new dot, never other values the coordinator
  happened to hold, so the new dot cannot be folded into vv[i] (that would cover every older
  dot of i, including concurrent writes the client has not read).

A client that keeps writing with the context of its own previous put carries one cloud dot
per put since its last read (16 bytes each); a DYN.GET replaces them with the object's clock.

Canonical form: vv entries with (n, node) <= mark and cloud dots covered by mark or vv are
dropped, entries are sorted. The join is (max mark, pointwise max vv, union of clouds), then
made canonical; it depends only on the set of inputs, so replicas that have exchanged
everything hold equal contexts (and byte-identical encodings).

The coordinator rule of DVVs applies: the coordinator of a causal write on a key holds every
earlier dot it issued for that key (it is a replica and applies the write locally first), so
raising vv[i] to the new dot covers only its own earlier writes. A node whose data directory
is new (first start, or a lost disk) must therefore not reuse the id of an earlier life: name
it ``node_id(f"{name}/{incarnation}")`` with a random incarnation kept in the data directory,
else its new dots would cover its old ones still held by other replicas (Riak renews its
vnode ids after an unclean start for the same reason).

Client contexts (DYN.GET / DYN.PUT) travel as opaque bytes: ``encode_context`` and
``decode_context``; b"" is the empty context (a blind write). Malformed bytes raise
``BadContext``.
"""
from __future__ import annotations

import struct

from fastdyn._hash import hash64
from fastdyn.cluster.hlc import MAX_TIMESTAMP
from fastdyn.errors import BadContext

__all__ = ["CausalContext", "EMPTY", "node_id", "encode_context", "decode_context",
           "pack_clock", "unpack_clock", "NODE_ID_SEED"]

NODE_ID_SEED = 0x6E6F64652D6964  # b"node-id": node ids never equal key hashes by construction
CONTEXT_TAG = 0xC1               # first byte of an encoded context: the format version

_CLOCK_HEAD = struct.Struct("<QQII")   # mark ts, mark node, vv entries, cloud dots
_PAIR = struct.Struct("<QQ")
_NO_MARK = (0, 0)


def node_id(name: str) -> int:
    """The 64-bit id that dots and version vectors use for the node called name."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a node name must be a non-empty str, got {name!r}")
    return hash64(name.encode("utf-8"), NODE_ID_SEED)


class CausalContext:
    """A set of dots: mark region + version vector + cloud of single dots (canonical)."""

    __slots__ = ("mark", "vv", "cloud", "_vvd", "_cloudset")

    def __init__(self, mark=_NO_MARK, vv=(), cloud=()):
        # trusted: callers pass canonical parts (use `canonical` otherwise)
        self.mark = mark
        self.vv = vv
        self.cloud = cloud
        self._vvd = None
        self._cloudset = None

    @classmethod
    def canonical(cls, mark, vv: dict, cloud) -> "CausalContext":
        vv_items = tuple(sorted((i, n) for i, n in vv.items() if (n, i) > mark))
        if not cloud:
            return cls(mark, vv_items, ())
        kept = dict(vv_items)
        cloud_items = tuple(sorted({(i, k) for i, k in cloud
                                    if (k, i) > mark and k > kept.get(i, 0)}))
        return cls(mark, vv_items, cloud_items)

    def covers(self, node: int, counter: int) -> bool:
        if (counter, node) <= self.mark:
            return True
        vvd = self._vvd
        if vvd is None:
            vvd = self._vvd = dict(self.vv)
        if counter <= vvd.get(node, 0):
            return True
        if not self.cloud:
            return False
        cloudset = self._cloudset
        if cloudset is None:
            cloudset = self._cloudset = frozenset(self.cloud)
        return (node, counter) in cloudset

    def join(self, other: "CausalContext") -> "CausalContext":
        if other is self or other.is_empty():
            return self
        if self.is_empty():
            return other
        mark = max(self.mark, other.mark)
        vv = dict(self.vv)
        for i, n in other.vv:
            if n > vv.get(i, 0):
                vv[i] = n
        return CausalContext.canonical(mark, vv, self.cloud + other.cloud)

    def with_event(self, node: int, counter: int) -> "CausalContext":
        """The context after node coordinated the event `counter` (newer than all it covers)."""
        vv = dict(self.vv)
        vv[node] = counter
        return CausalContext.canonical(self.mark, vv, self.cloud)

    def with_dot(self, node: int, counter: int) -> "CausalContext":
        """This context plus exactly one more dot."""
        if self.covers(node, counter):
            return self
        return CausalContext.canonical(self.mark, dict(self.vv), self.cloud + ((node, counter),))

    def max_counter(self) -> int:
        """The greatest timestamp any covered dot can carry (0 when empty)."""
        best = self.mark[0]
        for _, n in self.vv:
            if n > best:
                best = n
        for _, k in self.cloud:
            if k > best:
                best = k
        return best

    def max_counter_of(self, node: int) -> int:
        """The greatest counter of node's dots that this context lists (mark aside)."""
        best = 0
        for i, n in self.vv:
            if i == node:
                best = n
        for i, k in self.cloud:
            if i == node and k > best:
                best = k
        return best

    def is_empty(self) -> bool:
        return self.mark == _NO_MARK and not self.vv and not self.cloud

    def __eq__(self, other):
        if not isinstance(other, CausalContext):
            return NotImplemented
        return self.mark == other.mark and self.vv == other.vv and self.cloud == other.cloud

    def __hash__(self):
        return hash((self.mark, self.vv, self.cloud))

    def __repr__(self):
        return f"CausalContext(mark={self.mark}, vv={self.vv}, cloud={self.cloud})"


EMPTY = CausalContext()


# -- encoding (shared by client contexts and stored objects) --------------------------------
def pack_clock(ctx: CausalContext, parts: list) -> None:
    """Append ctx's encoding to parts: mark, counts, then vv and cloud as (u64, u64) pairs."""
    parts.append(_CLOCK_HEAD.pack(ctx.mark[0], ctx.mark[1], len(ctx.vv), len(ctx.cloud)))
    pack = _PAIR.pack
    for i, n in ctx.vv:
        parts.append(pack(i, n))
    for i, k in ctx.cloud:
        parts.append(pack(i, k))


def unpack_clock(buf, offset: int, error) -> tuple[CausalContext, int]:
    """Decode a clock at buf[offset:], checking it is canonical; raise error(message) if not."""
    end = offset + _CLOCK_HEAD.size
    if end > len(buf):
        raise error("truncated clock header")
    mark_ts, mark_node, n_vv, n_cloud = _CLOCK_HEAD.unpack_from(buf, offset)
    if mark_ts > MAX_TIMESTAMP or (mark_ts == 0 and mark_node != 0):
        raise error(f"bad mark ({mark_ts}, {mark_node})")
    mark = (mark_ts, mark_node)
    pairs_end = end + _PAIR.size * (n_vv + n_cloud)
    if pairs_end > len(buf):
        raise error("truncated clock entries")
    pairs = list(_PAIR.iter_unpack(buf[end:pairs_end]))
    vv, cloud = tuple(pairs[:n_vv]), tuple(pairs[n_vv:])
    previous = -1
    for i, n in vv:
        if i <= previous:
            raise error("version vector entries out of order or repeated")
        if not (n, i) > mark or not 1 <= n <= MAX_TIMESTAMP:
            raise error(f"version vector entry ({i}, {n}) is covered by the mark or out of range")
        previous = i
    ctx = CausalContext(mark, vv, cloud)
    if cloud:
        plain = CausalContext(mark, vv, ())
        previous_dot = (-1, -1)
        for i, k in cloud:
            if (i, k) <= previous_dot:
                raise error("cloud dots out of order or repeated")
            if plain.covers(i, k) or not 1 <= k <= MAX_TIMESTAMP:
                raise error(f"cloud dot ({i}, {k}) is already covered or out of range")
            previous_dot = (i, k)
    return ctx, pairs_end


def encode_context(ctx: CausalContext) -> bytes:
    """The opaque bytes a client gets (b"" for the empty context)."""
    if ctx.is_empty():
        return b""
    parts = [bytes((CONTEXT_TAG,))]
    pack_clock(ctx, parts)
    return b"".join(parts)


def decode_context(data) -> CausalContext:
    """The context a client sent back; BadContext for anything this store did not issue."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadContext(f"a context must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        return EMPTY
    if data[0] != CONTEXT_TAG:
        raise BadContext("not a fastdyn context (unknown format byte)")
    ctx, end = unpack_clock(data, 1, BadContext)
    if end != len(data):
        raise BadContext(f"{len(data) - end} unexpected bytes after the context")
    if ctx.is_empty():
        raise BadContext("an empty context is sent as empty bytes")
    return ctx
