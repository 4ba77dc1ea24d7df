"""Partitioning and routing: Dynamo's strategy 3 (Q equal partitions) over a member set.

A key's partition is the top log2(Q) bits of its 64-bit XXH64 hash (seed 0). Each partition
has a full preference order over all members, computed in ``fastdyn._ring`` from the member
set alone: the first N entries are the replicas, the rest are the fallbacks of the sloppy
quorum. See docs/ring.md.
"""
from __future__ import annotations

import numpy as np

from fastdyn._hash import hash64, hash64_batch
from fastdyn._ring import BALANCED_POSITIONS, build_preference_table

__all__ = ["Ring", "MAX_PARTITIONS"]

# The preference table holds Q x S entries; 2**16 partitions is far beyond what a Dynamo
# cluster needs (Riak's default ring has 64) and keeps a rebuild under a second.
MAX_PARTITIONS = 1 << 16


def _check_members(members) -> tuple[str, ...]:
    if isinstance(members, (str, bytes)):
        raise ValueError("members must be a collection of node names, not a single string")
    names = list(members)
    if not names:
        raise ValueError("a ring needs at least one member")
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"member names must be str, got {type(name).__name__}: {name!r}")
        if not name:
            raise ValueError("member names must not be empty")
    ordered = tuple(sorted(names))
    for a, b in zip(ordered, ordered[1:]):
        if a == b:
            raise ValueError(f"duplicate member {a!r}")
    if len(ordered) > 0xFFFF:
        raise ValueError(f"a ring holds at most 65535 members, got {len(ordered)}")
    return ordered


def _check_partitions(partitions) -> int:
    if isinstance(partitions, bool) or not isinstance(partitions, (int, np.integer)):
        raise ValueError(f"partitions must be an int, got {partitions!r}")
    q = int(partitions)
    if q < 1 or q > MAX_PARTITIONS or q & (q - 1):
        raise ValueError(
            f"partitions must be a power of two between 1 and {MAX_PARTITIONS}, got {q}")
    return q


def _check_count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    return int(n)


class Ring:
    """The partition ring of one member set; immutable, equal for equal member sets."""

    __slots__ = ("_members", "_index", "_q", "_bits", "_shift", "_table", "_lists", "_prefixes")

    def __init__(self, members, partitions: int = 256):
        self._members = _check_members(members)
        self._index = {name: i for i, name in enumerate(self._members)}
        self._q = _check_partitions(partitions)
        self._bits = self._q.bit_length() - 1
        self._shift = 64 - self._bits
        self._table = build_preference_table(list(self._members), self._q, BALANCED_POSITIONS)
        self._table.setflags(write=False)
        names = self._members
        self._lists = [tuple(names[i] for i in row) for row in self._table.tolist()]
        self._prefixes = {}   # n -> each partition's first n members, for primaries()

    # -- the member set ---------------------------------------------------------------
    @property
    def members(self) -> tuple[str, ...]:
        """The member names, sorted."""
        return self._members

    @property
    def partition_count(self) -> int:
        return self._q

    @property
    def table(self) -> np.ndarray:
        """Read-only (Q x S) uint16 array: row p holds indices into ``members`` in
        partition p's preference order."""
        return self._table

    def __len__(self) -> int:
        return len(self._members)

    def __eq__(self, other) -> bool:
        return (isinstance(other, Ring) and self._q == other._q
                and self._members == other._members)

    def __hash__(self) -> int:
        return hash((self._q, self._members))

    def __repr__(self) -> str:
        return f"Ring({len(self._members)} members, partitions={self._q})"

    # -- keys to partitions -----------------------------------------------------------
    def partition(self, key) -> int:
        """The partition of one key (bytes, or str encoded as UTF-8)."""
        return hash64(key) >> self._shift

    def partitions(self, keys) -> np.ndarray:
        """Partitions of many keys (list of bytes/str or NumPy ``S`` array), as int64."""
        hashes = hash64_batch(keys)
        if self._bits == 0:
            return np.zeros(hashes.shape[0], dtype=np.int64)
        return (hashes >> np.uint64(64 - self._bits)).astype(np.int64)

    def _partition_arg(self, key_or_partition) -> int:
        if isinstance(key_or_partition, bool):
            raise ValueError("a partition number must be an int, not a bool")
        if isinstance(key_or_partition, (int, np.integer)):
            p = int(key_or_partition)
            if not 0 <= p < self._q:
                raise ValueError(f"partition {p} out of range 0..{self._q - 1}")
            return p
        if isinstance(key_or_partition, (bytes, bytearray, memoryview, str)):
            return self.partition(key_or_partition)
        raise ValueError("expected a key (bytes or str) or a partition number (int), got "
                         f"{type(key_or_partition).__name__}")

    # -- preference lists -------------------------------------------------------------
    def preference_list(self, key_or_partition, n: int) -> list[str]:
        """The first n distinct members for a key or partition: the replicas in order, then
        the fallbacks. With fewer than n members, all of them."""
        if type(n) is not int or n < 0:
            n = _check_count(n)
        if type(key_or_partition) is bytes:   # the hot path: skip the generic dispatch
            return list(self._lists[hash64(key_or_partition) >> self._shift][:n])
        return list(self._lists[self._partition_arg(key_or_partition)][:n])

    def primaries(self, key: bytes, n: int) -> tuple[str, ...]:
        """preference_list(key, n) as a shared tuple: a coordinator asks it for every
        operation, and the same tuple for a partition lets it cache what it derives."""
        prefixes = self._prefixes.get(n)
        if prefixes is None:
            prefixes = self.prefixes(n)
        return prefixes[hash64(key) >> self._shift]

    def prefixes(self, n: int) -> list[tuple[str, ...]]:
        """Each partition's first n members, in partition order: the tuples primaries()
        returns (do not modify the list)."""
        prefixes = self._prefixes.get(n)
        if prefixes is None:
            prefixes = self._prefixes[n] = [names[:_check_count(n)] for names in self._lists]
        return prefixes

    def owners(self, partition: int, n: int = 3) -> list[str]:
        """The n replicas of a partition (fewer when the ring has fewer members)."""
        return self.preference_list(self._partition_arg(partition), n)

    def route(self, keys, n: int) -> np.ndarray:
        """Batch routing: a (len(keys) x min(n, S)) uint16 array of member indices (into
        ``members``), row i being key i's preference list."""
        n = _check_count(n)
        return self._table[self.partitions(keys), :n]

    def preference_lists(self, keys, n: int) -> list[tuple[str, ...]]:
        """Preference lists of many keys, as tuples of names in key order."""
        n = _check_count(n)
        prefix = [names[:n] for names in self._lists]
        return [prefix[p] for p in self.partitions(keys).tolist()]

    def partitions_of(self, node: str, n: int) -> list[int]:
        """Partitions for which ``node`` is among the first n of the preference list."""
        n = _check_count(n)
        try:
            i = self._index[node]
        except KeyError:
            raise ValueError(f"{node!r} is not a member of this ring") from None
        return np.flatnonzero((self._table[:, :n] == i).any(axis=1)).tolist()

    def moved(self, other: "Ring", n: int) -> list[int]:
        """Partitions whose replica set (first n, as a set) differs between the two rings:
        the partitions a membership change hands off."""
        n = _check_count(n)
        if not isinstance(other, Ring):
            raise ValueError(f"expected a Ring, got {type(other).__name__}")
        if other._q != self._q:
            raise ValueError(f"rings differ in partition count ({self._q} != {other._q})")
        return [p for p in range(self._q)
                if set(self._lists[p][:n]) != set(other._lists[p][:n])]
