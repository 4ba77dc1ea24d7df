# cython: language_level=3
"""Partition assignment for Dynamo's strategy 3: Q equal partitions over S nodes.

Every node ranks the partitions by a hash of (node name, partition) and scores each by its
rank, the hash breaking ties between nodes (stratified rendezvous/HRW hashing: every node
holds exactly one score in each of Q equal bands, which cuts the spread of the nodes' raw
loads by a third against plain hash scores and with it the corrections below). Position k
of each partition's preference list (k = 0 is the primary, then the other replicas) is a
bounded matching filled in the global order of the scores (the unique stable matching under
shared scores), so a node joining or leaving mostly moves the partitions it wins or loses on
score:

* position 0: every node holds floor(Q/S) or ceil(Q/S) primaries; the Q mod S larger shares
  go to the nodes that fill up first in score order;
* the first k positions together (k >= 2): every node holds floor(kQ/S) - 2 .. ceil(kQ/S) + 2 of
  them. Two partitions of slack on each side absorb most of the cascades an exact bound
  causes: on a join they cut the replica slots that move beyond the ideal by about a third
  against one partition of slack (docs/ring.md).

Breadth-first augmenting chains place partitions the greedy pass leaves without a free node
and lift nodes left under their lower bound. Positions past BALANCED_POSITIONS are the
remaining nodes in score order (the fallbacks of the sloppy quorum).

The result depends only on the member set: callers pass names sorted, and nothing here reads
the order in which members joined.
"""
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t
from libc.stdlib cimport malloc, calloc, free, qsort
from libc.string cimport memset
from xxh64 cimport fd_xxh64, fd_mix64

import numpy as np
cimport numpy as cnp

cnp.import_array()

# Seeds of the node and capacity hashes; part of the ring's definition, like the key hash.
cdef uint64_t NODE_SEED = 0x52494E47  # "RING"
cdef uint64_t PARTITION_SALT = 0x9E3779B97F4A7C15ULL

# Partitions of slack per node on the cumulative replica bounds (module docstring).
cdef int32_t REPLICA_SLACK = 2
# Preference positions that are balanced; deeper positions follow plain score order.
BALANCED_POSITIONS = 8

ctypedef struct Claim:
    uint64_t score
    uint32_t partition
    uint32_t node


cdef int _claim_order(const void *a, const void *b) noexcept nogil:
    cdef const Claim *x = <const Claim *>a
    cdef const Claim *y = <const Claim *>b
    if x.score != y.score:
        return -1 if x.score > y.score else 1
    if x.node != y.node:
        return -1 if x.node < y.node else 1
    return -1 if x.partition < y.partition else (1 if x.partition > y.partition else 0)


cdef inline uint64_t _hrw(uint64_t node_hash, uint32_t partition) noexcept nogil:
    return fd_mix64(node_hash ^ fd_mix64(<uint64_t>partition * PARTITION_SALT + 1))


cdef void _node_claims(uint64_t node_hash, uint32_t node, uint32_t Q,
                       Claim *mine) noexcept nogil:
    """Node ``node``'s Q claims: its rank of p by hash (Q - 1 for its favourite) in the top 16
    bits of the score, the hash's top 48 bits below to break ties with other nodes."""
    cdef uint32_t p, i
    for p in range(Q):
        mine[p].score = _hrw(node_hash, p)
        mine[p].partition = p
        mine[p].node = node
    qsort(mine, Q, sizeof(Claim), _claim_order)
    for i in range(Q):
        mine[i].score = ((<uint64_t>(Q - 1 - i)) << 48) | (mine[i].score >> 16)


cdef inline bint _has_room(int32_t load, int32_t base, uint32_t extra,
                           uint32_t full) noexcept nogil:
    return load < base or (load == base and full < extra)


cdef inline void _take(int32_t *load, uint32_t n, int32_t base, uint32_t *full) noexcept nogil:
    if load[n] == base:
        full[0] += 1
    load[n] += 1


cdef int _augment(uint32_t p, int k, uint32_t Q, uint32_t S, uint16_t *pref,
                  const uint16_t *order, uint8_t *in_set, int32_t *load, const int32_t *cap,
                  uint32_t extra, uint32_t *full,
                  int32_t *parent_node, int32_t *parent_part, uint8_t *seen,
                  uint32_t *queue) noexcept nogil:
    """Breadth-first search for a chain of moves that frees room for partition p at
    position k. Returns 1 when p was placed, 0 when no chain exists."""
    cdef uint32_t head = 0, tail = 0, j, q
    cdef uint32_t n, m, cur, prev
    cdef int32_t moved
    memset(seen, 0, S)
    for j in range(S):
        n = order[<size_t>p * S + j]
        if not in_set[<size_t>p * S + n] and not seen[n]:
            seen[n] = 1
            parent_node[n] = -1
            parent_part[n] = -1
            queue[tail] = n
            tail += 1
    while head < tail:
        n = queue[head]
        head += 1
        if _has_room(load[n], cap[n], extra, full[0]):
            _take(load, n, cap[n], full)
            cur = n
            while parent_node[cur] >= 0:
                prev = <uint32_t>parent_node[cur]
                moved = parent_part[cur]
                pref[<size_t>moved * S + k] = <uint16_t>cur
                in_set[<size_t>moved * S + prev] = 0
                in_set[<size_t>moved * S + cur] = 1
                cur = prev
            pref[<size_t>p * S + k] = <uint16_t>cur
            in_set[<size_t>p * S + cur] = 1
            return 1
        for q in range(Q):
            if pref[<size_t>q * S + k] != n:
                continue
            for j in range(S):
                m = order[<size_t>q * S + j]
                if not in_set[<size_t>q * S + m] and not seen[m]:
                    seen[m] = 1
                    parent_node[m] = <int32_t>n
                    parent_part[m] = <int32_t>q
                    queue[tail] = m
                    tail += 1
    return 0


cdef int _raise(uint32_t u, int k, uint32_t Q, uint32_t S, uint16_t *pref,
                const uint32_t *liked, uint8_t *in_set,
                int32_t *load, const int32_t *low, int32_t *parent_node, int32_t *parent_part,
                uint8_t *seen, uint32_t *queue) noexcept nogil:
    """Breadth-first search for a chain of moves that gives node u one more partition at
    position k, taken in the end from a node above its lower bound. Returns 1 on success."""
    cdef uint32_t head = 0, tail = 0, i, q, v, w, cur
    cdef int32_t moved
    memset(seen, 0, S)
    seen[u] = 1
    queue[tail] = u
    tail += 1
    while head < tail:
        v = queue[head]
        head += 1
        for i in range(Q):
            q = liked[<size_t>v * Q + i]
            w = pref[<size_t>q * S + k]
            if seen[w] or in_set[<size_t>q * S + v]:
                continue
            seen[w] = 1
            parent_node[w] = <int32_t>v
            parent_part[w] = <int32_t>q
            if load[w] > low[w]:
                load[w] -= 1
                load[u] += 1
                cur = w
                while cur != u:
                    v = <uint32_t>parent_node[cur]
                    moved = parent_part[cur]
                    pref[<size_t>moved * S + k] = <uint16_t>v
                    in_set[<size_t>moved * S + cur] = 0
                    in_set[<size_t>moved * S + v] = 1
                    cur = v
                return 1
            queue[tail] = w
            tail += 1
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _build(uint32_t Q, uint32_t S, const uint64_t *node_hash, uint16_t *pref,
                int balanced, int32_t slack) noexcept nogil:
    """Fills pref[Q][S] with every partition's full preference order. Returns 0, or -1 when
    out of memory."""
    cdef size_t cells = <size_t>Q * S
    cdef Claim *claims = <Claim *>malloc(cells * sizeof(Claim))
    cdef uint16_t *order = <uint16_t *>malloc(cells * sizeof(uint16_t))
    cdef uint8_t *in_set = <uint8_t *>calloc(cells, 1)
    cdef uint32_t *filled = <uint32_t *>calloc(Q, sizeof(uint32_t))
    cdef int32_t *load = <int32_t *>malloc(S * sizeof(int32_t))
    cdef uint32_t full[1]
    cdef int32_t *cap = <int32_t *>malloc(S * sizeof(int32_t))
    cdef int32_t *cum = <int32_t *>calloc(S, sizeof(int32_t))
    cdef int32_t *low = <int32_t *>malloc(S * sizeof(int32_t))
    cdef uint32_t *liked = <uint32_t *>malloc(cells * sizeof(uint32_t))
    cdef uint32_t *liked_n = <uint32_t *>calloc(S, sizeof(uint32_t))
    cdef int32_t *parent_node = <int32_t *>malloc(S * sizeof(int32_t))
    cdef int32_t *parent_part = <int32_t *>malloc(S * sizeof(int32_t))
    cdef uint8_t *seen = <uint8_t *>malloc(S)
    cdef uint32_t *queue = <uint32_t *>malloc(S * sizeof(uint32_t))
    cdef size_t c
    cdef uint32_t p, n, j, extra
    cdef int k, rc = 0
    cdef int32_t base
    if (claims == NULL or order == NULL or in_set == NULL or filled == NULL or load == NULL
            or cap == NULL or cum == NULL or low == NULL or liked == NULL
            or liked_n == NULL or parent_node == NULL or parent_part == NULL or seen == NULL
            or queue == NULL):
        rc = -1
    else:
        # Claims are laid out node by node; the global sort below orders them.
        for n in range(S):
            _node_claims(node_hash[n], n, Q, &claims[<size_t>n * Q])
        qsort(claims, cells, sizeof(Claim), _claim_order)
        # Each partition's nodes in score order (its unconstrained HRW preference).
        for c in range(cells):
            p = claims[c].partition
            order[<size_t>p * S + filled[p]] = <uint16_t>claims[c].node
            filled[p] += 1
            n = claims[c].node
            liked[<size_t>n * Q + liked_n[n]] = p
            liked_n[n] += 1
        if balanced > <int>S:
            balanced = <int>S
        base = <int32_t>(Q // S)
        extra = Q % S
        for k in range(balanced):
            # Bounds of this position's load per node (see the module docstring); the
            # greedy pass respects the upper ones, _raise the lower ones.
            for n in range(S):
                load[n] = 0
                if k == 0:
                    cap[n] = base
                    low[n] = base
                else:
                    cap[n] = <int32_t>(((k + 1) * Q + S - 1) // S) + slack - cum[n]
                    low[n] = <int32_t>(((k + 1) * Q) // S) - slack - cum[n]
            full[0] = 0
            for p in range(Q):
                pref[<size_t>p * S + k] = 0xFFFF
            for c in range(cells):
                p = claims[c].partition
                n = claims[c].node
                if pref[<size_t>p * S + k] != 0xFFFF or in_set[<size_t>p * S + n]:
                    continue
                if _has_room(load[n], cap[n], extra if k == 0 else 0, full[0]):
                    _take(load, n, cap[n], full)
                    pref[<size_t>p * S + k] = <uint16_t>n
                    in_set[<size_t>p * S + n] = 1
            for p in range(Q):
                if pref[<size_t>p * S + k] != 0xFFFF:
                    continue
                if not _augment(p, k, Q, S, pref, order, in_set, load, cap,
                                extra if k == 0 else 0, full,
                                parent_node, parent_part, seen, queue):
                    # No chain frees a slot: take the best remaining node over its share.
                    for j in range(S):
                        n = order[<size_t>p * S + j]
                        if not in_set[<size_t>p * S + n]:
                            break
                    load[n] += 1
                    pref[<size_t>p * S + k] = <uint16_t>n
                    in_set[<size_t>p * S + n] = 1
            # Lift nodes the scores left below their lower bound.
            for n in range(S):
                while load[n] < low[n]:
                    if not _raise(n, k, Q, S, pref, liked, in_set, load, low, parent_node,
                                  parent_part, seen, queue):
                        break
            for n in range(S):
                cum[n] += load[n]
        # Fallback positions: the remaining nodes in the partition's score order.
        for p in range(Q):
            k = balanced
            for j in range(S):
                n = order[<size_t>p * S + j]
                if not in_set[<size_t>p * S + n]:
                    pref[<size_t>p * S + k] = <uint16_t>n
                    k += 1
    free(claims); free(order); free(in_set); free(filled); free(load); free(cap); free(cum)
    free(low); free(liked); free(liked_n)
    free(parent_node); free(parent_part); free(seen); free(queue)
    return rc


def node_hash(name):
    """The 64-bit hash that places a node name on the ring."""
    cdef bytes b = name.encode("utf-8")
    return fd_xxh64(<const char *>b, <size_t>len(b), NODE_SEED)


def build_preference_table(names, unsigned int partitions, int balanced=BALANCED_POSITIONS):
    """A (partitions × len(names)) uint16 array: row p lists node indices (into ``names``,
    which must be sorted and distinct) in partition p's preference order."""
    cdef uint32_t S = len(names)
    cdef uint32_t Q = partitions
    cdef uint32_t i
    cdef int rc
    if S == 0 or S > 0xFFFF:
        raise ValueError(f"a ring needs 1..65535 members, got {S}")
    cdef cnp.ndarray[cnp.uint64_t, ndim=1] hashes = np.empty(S, dtype=np.uint64)
    for i in range(S):
        hashes[i] = node_hash(names[i])
    cdef cnp.ndarray[cnp.uint16_t, ndim=2] table = np.empty((Q, S), dtype=np.uint16)
    cdef uint64_t *hp = <uint64_t *>cnp.PyArray_DATA(hashes)
    cdef uint16_t *tp = <uint16_t *>cnp.PyArray_DATA(table)
    with nogil:
        rc = _build(Q, S, hp, tp, balanced, REPLICA_SLACK)
    if rc != 0:
        raise MemoryError("cannot allocate the ring's work space")
    return table
