"""Anti-entropy Merkle trees: one per (node, partition), kept incrementally on every write.

Replicas exchange levels top-down and descend only below nodes whose hashes differ
(``MerkleDiff``, sans-IO: bytes in, bytes out); the differing leaves are segments of the key
space, whose (key -> digest) listings the two sides then compare with ``diff_keys``.

Wire formats (little-endian; the first byte is the format version, ``FORMAT_VERSION``):

* tree:    version u8, b"T", fanout u16, depth u8, leaves (fanout**depth x u64)
* request: version u8, b"Q", fanout u16, depth u8, level u8, count u32, count x u32 node index
* reply:   version u8, b"R", fanout u16, depth u8, level u8, count u32, count x u64 node hash
"""
from __future__ import annotations

import struct

import numpy as np

from fastdyn._hash import hash64, hash64_batch
from fastdyn._merkle import MerkleCore, item_digest, item_digests, value_digest
from fastdyn.errors import MerkleFormatError

__all__ = ["MerkleTree", "MerkleDiff", "StoreTrees", "digest", "digests", "value_digest",
           "diff_keys", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_TREE = struct.Struct("<BcHB")          # version, kind, fanout, depth
_MESSAGE = struct.Struct("<BcHBBI")     # version, kind, fanout, depth, level, count

digest = item_digest
digests = item_digests


class MerkleTree:
    """A Merkle tree over one partition's keys; digests are nonzero uint64 (0 = absent)."""

    __slots__ = ("_core",)

    def __init__(self, depth: int = 3, fanout: int = 16, nodes=None):
        for name, value in (("depth", depth), ("fanout", fanout)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
        self._core = MerkleCore(fanout, depth, nodes)

    # -- shape ------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self._core.depth

    @property
    def fanout(self) -> int:
        return self._core.fanout

    @property
    def segment_count(self) -> int:
        return self._core.leaf_count

    def segment_of(self, key) -> int:
        return hash64(key) & (self._core.leaf_count - 1)

    def segments_of(self, keys) -> np.ndarray:
        return (hash64_batch(keys) & np.uint64(self._core.leaf_count - 1)).astype(np.int64)

    # -- incremental maintenance ------------------------------------------------------
    def update(self, key, old_digest: int, new_digest: int) -> None:
        """A write replaced key's version: old_digest -> new_digest (0 when absent)."""
        self._core.update_key(key, old_digest, new_digest)

    def insert(self, key, digest_: int) -> None:
        self._core.update_key(key, 0, digest_)

    def remove(self, key, digest_: int) -> None:
        self._core.update_key(key, digest_, 0)

    def fold(self, keys, digests_) -> None:
        """Add many (key, digest) items, e.g. a full scan of a partition at start-up."""
        hashes = hash64_batch(keys)
        self._core.fold(hashes, np.ascontiguousarray(digests_, dtype=np.uint64))

    # -- reading ----------------------------------------------------------------------
    @property
    def root(self) -> int:
        return int(self._core.level_view(0)[0])

    def level(self, i: int) -> bytes:
        """Level i (0 = root, depth = the segments) as little-endian uint64s."""
        return self._core.level_view(i).astype("<u8", copy=False).tobytes()

    def segment_hashes(self) -> np.ndarray:
        return self._core.level_view(self.depth).copy()

    def __eq__(self, other) -> bool:
        return (isinstance(other, MerkleTree) and self._shape() == other._shape()
                and np.array_equal(self._core.nodes, other._core.nodes))

    __hash__ = None

    def _shape(self) -> tuple[int, int]:
        return self._core.fanout, self._core.depth

    def diff(self, other: "MerkleTree") -> list[int]:
        """Segments whose hashes differ, found by descending only below differing nodes."""
        if not isinstance(other, MerkleTree) or other._shape() != self._shape():
            raise ValueError("can only diff trees of the same fanout and depth")
        walk = MerkleDiff(self)
        request = walk.next_request()
        while request is not None:
            walk.feed(other.answer(request))
            request = walk.next_request()
        return walk.segments

    # -- serialisation ----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        header = _TREE.pack(FORMAT_VERSION, b"T", self.fanout, self.depth)
        return header + self.level(self.depth)

    @classmethod
    def from_bytes(cls, data) -> "MerkleTree":
        data = bytes(data)
        if len(data) < _TREE.size:
            raise MerkleFormatError(f"Merkle tree buffer too short ({len(data)} bytes)")
        version, kind, fanout, depth = _TREE.unpack_from(data)
        _check_header(version, kind, b"T")
        # Check the length before allocating: a corrupt header must not allocate 2**24 leaves.
        expected = _TREE.size + 8 * fanout ** depth
        if len(data) == expected:
            try:
                tree = cls(depth=depth, fanout=fanout)
            except ValueError as exc:
                raise MerkleFormatError(f"Merkle tree buffer has a bad shape: {exc}") from None
        else:
            raise MerkleFormatError(
                f"Merkle tree buffer is {len(data)} bytes, expected {expected} for "
                f"fanout {fanout}, depth {depth}")
        tree._core.load_leaves(np.frombuffer(data, dtype="<u8", offset=_TREE.size)
                               .astype(np.uint64))
        return tree

    # -- the answering side of an exchange ----------------------------------------------
    def answer(self, request) -> bytes:
        """Reply to a peer's MerkleDiff request with the hashes of the nodes it names."""
        level, indices = _parse(request, b"Q", self._shape(), 4)
        nodes = self._core.level_view(level)
        if indices.size and int(indices.max()) >= nodes.shape[0]:
            raise MerkleFormatError(
                f"Merkle request names node {int(indices.max())} of level {level}, "
                f"which has {nodes.shape[0]}")
        hashes = nodes[indices.astype(np.intp)]
        return (_MESSAGE.pack(FORMAT_VERSION, b"R", self.fanout, self.depth, level,
                              indices.size) + hashes.astype("<u8").tobytes())


class MerkleDiff:
    """Sans-IO descent against a peer's tree: ``next_request()`` gives the bytes to send (or
    None when finished), ``feed(reply)`` takes the peer's answer; ``segments`` then lists the
    differing segments."""

    __slots__ = ("_tree", "_level", "_pending", "_segments", "requested_nodes")

    def __init__(self, tree: MerkleTree):
        self._tree = tree
        self._level = 0
        self._pending = np.zeros(1, dtype=np.int64)   # start at the root
        self._segments: list[int] | None = None
        self.requested_nodes = 0

    @property
    def done(self) -> bool:
        return self._segments is not None

    @property
    def segments(self) -> list[int]:
        if self._segments is None:
            raise RuntimeError("the Merkle exchange is not finished")
        return self._segments

    def next_request(self) -> bytes | None:
        if self._segments is not None:
            return None
        self.requested_nodes += self._pending.size
        t = self._tree
        return (_MESSAGE.pack(FORMAT_VERSION, b"Q", t.fanout, t.depth, self._level,
                              self._pending.size) + self._pending.astype("<u4").tobytes())

    def feed(self, reply) -> None:
        if self._segments is not None:
            raise RuntimeError("the Merkle exchange is already finished")
        level, theirs = _parse(reply, b"R", self._tree._shape(), 8)
        if level != self._level or theirs.size != self._pending.size:
            raise MerkleFormatError(
                f"Merkle reply for level {level} with {theirs.size} hashes does not answer "
                f"the request for level {self._level} with {self._pending.size} nodes")
        ours = self._tree._core.level_view(level)[self._pending]
        differing = self._pending[ours != theirs]
        if level == self._tree.depth or differing.size == 0:
            self._segments = differing.tolist() if level == self._tree.depth else []
            return
        fanout = self._tree.fanout
        self._pending = (differing[:, None] * fanout + np.arange(fanout)).ravel()
        self._level += 1


def diff_keys(local: dict, remote: dict) -> list:
    """Keys whose digests differ between two listings of the same segments (a key missing
    on one side differs), sorted."""
    out = [k for k, d in local.items() if remote.get(k) != d]
    out.extend(k for k in remote if k not in local)
    return sorted(out)


def _check_header(version: int, kind: bytes, expected: bytes) -> None:
    if version != FORMAT_VERSION:
        raise MerkleFormatError(f"unsupported Merkle format version {version} "
                                f"(this node speaks {FORMAT_VERSION})")
    if kind != expected:
        raise MerkleFormatError(f"expected a Merkle {expected.decode()!r} message, "
                                f"got kind {kind!r}")


def _parse(data, kind: bytes, shape: tuple[int, int], item: int):
    data = bytes(data)
    if len(data) < _MESSAGE.size:
        raise MerkleFormatError(f"Merkle message too short ({len(data)} bytes)")
    version, got_kind, fanout, depth, level, count = _MESSAGE.unpack_from(data)
    _check_header(version, got_kind, kind)
    if (fanout, depth) != shape:
        raise MerkleFormatError(f"Merkle message for a fanout {fanout}, depth {depth} tree; "
                                f"this tree has fanout {shape[0]}, depth {shape[1]}")
    if level > depth:
        raise MerkleFormatError(f"Merkle message names level {level} of a depth {depth} tree")
    if len(data) != _MESSAGE.size + item * count:
        raise MerkleFormatError(f"Merkle message announces {count} entries but carries "
                                f"{len(data) - _MESSAGE.size} bytes of them")
    dtype = "<u4" if item == 4 else "<u8"
    values = np.frombuffer(data, dtype=dtype, offset=_MESSAGE.size)
    return level, values.astype(np.int64 if item == 4 else np.uint64)


class StoreTrees:
    """The trees a store keeps of its keys, one per ring partition (``Store.enable_trees``):
    leaves are the sums of the keys' 32-bit value digests. Rebuilt from a fold of the store at
    start-up (``rebuild``, a step at a time, so the node serves meanwhile); ``ready`` once done."""

    FANOUT = 16

    def __init__(self, store, partitions: int):
        bits = partitions.bit_length() - 1
        if partitions < 1 or partitions != 1 << bits:
            raise ValueError(f"partitions must be a power of two, got {partitions}")
        # about 4,096 leaves in all (16 per partition of 256): every write adds to a random
        # leaf, and the trees must stay within a few pages, or those adds miss the TLB (with
        # 65,536 leaves, 140 pages, the page walks took 16% of a replica's CPU on a virtual
        # machine; with 4,096, too little to measure). An exchange lists the keys of each
        # differing leaf: about 25 per difference at 100,000 keys.
        self.depth = max(1, min(3, (12 - bits) // 4))
        self.partitions = partitions
        per_tree = sum(self.FANOUT ** level for level in range(self.depth + 1))
        self.nodes = np.zeros(per_tree * partitions, dtype=np.uint64)
        self.segment_count = self.FANOUT ** self.depth
        self.store = store
        store.enable_trees(self.nodes, bits, self.FANOUT, self.depth)
        self._views = [MerkleTree(self.depth, self.FANOUT,
                                  self.nodes[p * per_tree:(p + 1) * per_tree])
                       for p in range(partitions)]
        self.ready = False
        self.rebuilt_keys = 0
        self.rebuild_s = 0.0

    def refresh(self) -> None:
        """Sum the inner levels the writes since left stale (the store updates only the
        leaves on a write); done by tree() and root(), and before each step of an exchange."""
        self.store.refresh_trees()

    def tree(self, partition: int) -> MerkleTree:
        self.store.refresh_trees()
        return self._views[partition]

    def root(self, partition: int) -> int:
        self.store.refresh_trees()
        return self._views[partition].root

    def roots(self, partitions) -> np.ndarray:
        """The roots of the given partitions' trees (uint64)."""
        self.store.refresh_trees()
        per_tree = self.nodes.size // self.partitions
        return self.nodes[np.asarray(partitions, dtype=np.int64) * per_tree]

    def rebuild(self, max_keys: int = 65536) -> bool:
        """Fold up to max_keys more stored keys into the trees; True once every key is in."""
        added, done = self.store.rebuild_trees(max_keys)
        self.rebuilt_keys += added
        self.ready = self.ready or done
        return done

    def listing_steps(self, segments: dict, step: int = 1 << 16):
        """The keys in the given {partition: [segment, ...]} with their digests, packed
        (`Store.tree_listing`): (entries, listing) per walk of `step` keydir entries, so an
        event loop can serve clients between the steps. A key the keydir moved during the
        walk may come twice."""
        if not segments:
            return
        wanted = np.zeros(self.partitions * self.segment_count, dtype=np.uint8)
        for p, segs in segments.items():
            wanted[p * self.segment_count + np.asarray(list(segs), dtype=np.int64)] = 1
        cursor = None
        while True:
            cursor, count, listing = self.store.tree_listing(wanted, cursor, step)
            yield count, listing
            if cursor is None:
                return

