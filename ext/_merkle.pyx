# cython: language_level=3
"""Merkle tree of one partition's (key, version digest) pairs, kept incrementally.

Leaves are segments of the key space (the low bits of the key's XXH64 hash; partitions use
the top bits, so the two are independent). A leaf is the sum mod 2**64 of its items'
digests and an inner node the sum of its children, so a put or delete updates one path in
O(depth) with the difference of the digests, without rescanning the segment.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_Check
from libc.stdint cimport uint32_t, uint64_t
from xxh64 cimport fd_xxh64, FD_KEY_SEED

import numpy as np
cimport numpy as cnp

cnp.import_array()

# Seed of the item digest, distinct from the key seed so that digest(key, v) never equals
# the key's routing hash by construction.
cdef uint64_t ITEM_SEED = 0x4D45524B4C45  # "MERKLE"


cdef inline bytes _as_bytes(object value, str what):
    if PyBytes_Check(value):
        return <bytes>value
    if isinstance(value, str):
        return (<str>value).encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


cdef inline uint64_t _digest(bytes key, bytes version) noexcept:
    cdef uint64_t h = fd_xxh64(PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key), ITEM_SEED)
    h = fd_xxh64(PyBytes_AS_STRING(version), <size_t>PyBytes_GET_SIZE(version), h)
    # 0 means "absent" in update(); the one input mapping to it is nudged to 1.
    return h if h != 0 else 1


def value_digest(key, value):
    """The 32-bit digest a store keeps for a key and its value (Store.enable_trees): the
    64-bit item digest folded in half, nonzero."""
    cdef bytes k = _as_bytes(key, "a key"), v = _as_bytes(value, "a value")
    cdef uint64_t h = fd_xxh64(PyBytes_AS_STRING(v), <size_t>PyBytes_GET_SIZE(v),
                               fd_xxh64(PyBytes_AS_STRING(k), <size_t>PyBytes_GET_SIZE(k),
                                        ITEM_SEED))
    cdef uint32_t d = <uint32_t>(h ^ (h >> 32))
    return d if d != 0 else 1


def item_digest(key, version):
    """The nonzero 64-bit digest of one (key, version-or-value bytes) pair."""
    return _digest(_as_bytes(key, "a key"), _as_bytes(version, "a version"))


@cython.boundscheck(False)
@cython.wraparound(False)
def item_digests(keys, versions):
    """item_digest of each pair, as a NumPy uint64 array."""
    cdef Py_ssize_t i, n = len(keys)
    if len(versions) != n:
        raise ValueError(f"{n} keys but {len(versions)} versions")
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] view = out
    for i in range(n):
        view[i] = _digest(_as_bytes(keys[i], "a key"), _as_bytes(versions[i], "a version"))
    return out


cdef class MerkleCore:
    """The node array of a complete fanout-ary tree of the given depth (level 0 = root);
    `nodes`, when given, is the array to use (a store's tree of one partition)."""
    cdef readonly int fanout, depth, shift
    cdef readonly Py_ssize_t leaf_count
    cdef readonly object nodes
    cdef uint64_t[::1] _nodes
    cdef Py_ssize_t _offsets[33]

    def __cinit__(self, int fanout, int depth, nodes=None):
        cdef int level
        cdef Py_ssize_t width = 1, total = 0
        if fanout < 2 or fanout > 256 or fanout & (fanout - 1):
            raise ValueError(f"fanout must be a power of two in 2..256, got {fanout}")
        self.shift = fanout.bit_length() - 1
        if depth < 1 or depth * self.shift > 24:
            raise ValueError(f"depth must be >= 1 with fanout**depth <= 2**24 leaves, "
                             f"got fanout {fanout}, depth {depth}")
        self.fanout = fanout
        self.depth = depth
        for level in range(depth + 1):
            self._offsets[level] = total
            total += width
            width *= fanout
        self._offsets[depth + 1] = total
        self.leaf_count = width // fanout
        if nodes is None:
            nodes = np.zeros(total, dtype=np.uint64)
        elif nodes.shape != (total,):
            raise ValueError(f"a fanout {fanout}, depth {depth} tree has {total} nodes, "
                             f"got an array of shape {nodes.shape}")
        self.nodes = nodes
        self._nodes = self.nodes

    def level_view(self, int level):
        """Level ``level`` (0 = root, depth = leaves) as a NumPy view of the node array."""
        if level < 0 or level > self.depth:
            raise ValueError(f"level {level} out of range 0..{self.depth}")
        return self.nodes[self._offsets[level]:self._offsets[level + 1]]

    cpdef void update(self, uint64_t key_hash, uint64_t old_digest, uint64_t new_digest):
        """Replace one item's digest (0 = absent) on the path of its segment."""
        cdef uint64_t delta = new_digest - old_digest
        cdef uint64_t segment = key_hash & <uint64_t>(self.leaf_count - 1)
        cdef int level
        for level in range(self.depth, -1, -1):
            self._nodes[self._offsets[level] + <Py_ssize_t>segment] += delta
            segment >>= self.shift

    def update_key(self, key, uint64_t old_digest, uint64_t new_digest):
        """update() for a key given as bytes or str: hashes it here, saving a call per write."""
        cdef bytes b = _as_bytes(key, "a key")
        self.update(fd_xxh64(PyBytes_AS_STRING(b), <size_t>PyBytes_GET_SIZE(b), FD_KEY_SEED),
                    old_digest, new_digest)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def fold(self, const uint64_t[::1] key_hashes, const uint64_t[::1] digests):
        """Add many items at once: sum them into the leaves, then rebuild the inner levels."""
        cdef Py_ssize_t i, n = key_hashes.shape[0]
        cdef uint64_t mask = <uint64_t>(self.leaf_count - 1)
        cdef Py_ssize_t leaf0 = self._offsets[self.depth]
        if digests.shape[0] != n:
            raise ValueError(f"{n} key hashes but {digests.shape[0]} digests")
        with nogil:
            for i in range(n):
                self._nodes[leaf0 + <Py_ssize_t>(key_hashes[i] & mask)] += digests[i]
            self._rebuild_inner()

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def load_leaves(self, const uint64_t[::1] leaves):
        """Set every leaf and recompute the inner levels (used to load a serialised tree)."""
        cdef Py_ssize_t i, leaf0 = self._offsets[self.depth]
        if leaves.shape[0] != self.leaf_count:
            raise ValueError(f"expected {self.leaf_count} leaves, got {leaves.shape[0]}")
        with nogil:
            for i in range(self.leaf_count):
                self._nodes[leaf0 + i] = leaves[i]
            self._rebuild_inner()

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef void _rebuild_inner(self) noexcept nogil:
        cdef int level
        cdef Py_ssize_t i, j, base, child_base, width
        cdef uint64_t acc
        for level in range(self.depth - 1, -1, -1):
            base = self._offsets[level]
            child_base = self._offsets[level + 1]
            width = self._offsets[level + 1] - base
            for i in range(width):
                acc = 0
                for j in range(self.fanout):
                    acc += self._nodes[child_base + i * self.fanout + j]
                self._nodes[base + i] = acc
