"""Hypothesis strategies and a one-process replica simulation for the versioned object core."""
from hypothesis import strategies as st

from fastdyn.cluster.dvv import CausalContext
from fastdyn.cluster.object import (LWW, NOTHING, TOMBSTONE, Counter, Sibling, VersionedObject,
                                    causal_write, counter_add, delete, lww_write, sync)
from fastdyn.errors import NotAnInteger

T0 = 1_700_000_000_000_000   # an HLC stamp (µs) in 2023
NODES = (11, 22, 33)          # small ids so that ties in (ts, node) happen


def merge_all(objects):
    out = NOTHING
    for obj in objects:
        out = sync(out, obj)
    return out


class Cluster:
    """Replicas of one key, each an object; writes are delivered to the others as messages
    that the test applies (sync) in any order."""

    def __init__(self, nodes=NODES):
        self.nodes = nodes
        self.replicas = [NOTHING for _ in nodes]
        self.in_flight = []          # (destination index, object)
        self.time = T0

    def tick(self, skew=0):
        self.time += 1
        return self.time + skew

    def _spread(self, index, obj):
        self.replicas[index] = obj
        self.in_flight.extend((j, obj) for j in range(len(self.nodes)) if j != index)

    def causal_write(self, index, ctx, value, skew=0, tombstone=False, **limits):
        node = self.nodes[index]
        if tombstone:
            result = delete(self.replicas[index], ctx, node, self.tick(skew), **limits)
        else:
            result = causal_write(self.replicas[index], ctx, node, value, self.tick(skew),
                                  **limits)
        self._spread(index, result.object)
        return result

    def lww_write(self, index, value, skew=0, expiry_ms=0, tombstone=False):
        result = lww_write(self.replicas[index], self.nodes[index], value, self.tick(skew),
                           expiry_ms, tombstone=tombstone)
        self._spread(index, result.object)
        return result

    def incr(self, index, delta):
        result = counter_add(self.replicas[index], self.nodes[index], delta, 0)
        self._spread(index, result.object)
        return result

    def deliver(self, k):
        j, obj = self.in_flight.pop(k % len(self.in_flight))
        self.replicas[j] = sync(self.replicas[j], obj)

    def deliver_all(self, order):
        for k in order:
            if not self.in_flight:
                break
            self.deliver(k)
        while self.in_flight:
            self.deliver(0)

    def exchange_everything(self):
        merged = merge_all(self.replicas)
        self.replicas = [sync(r, merged) for r in self.replicas]


_ops = st.lists(st.tuples(
    st.sampled_from(["causal", "own", "blind", "delete", "lww", "lww_ttl", "incr", "deliver"]),
    st.integers(0, 2), st.integers(0, 2), st.integers(-3, 3), st.binary(max_size=3)),
    max_size=25)


@st.composite
def history_objects(draw):
    """The replica states (and in-flight objects) left by a random history of operations."""
    cluster = Cluster()
    own = [CausalContext()] * 3       # per client: the context its last DYN.PUT returned
    for op, i, j, skew, value in draw(_ops):
        if op == "own":
            own[j] = cluster.causal_write(i, own[j], value, skew).context
        elif op == "deliver":
            if cluster.in_flight:
                cluster.deliver(i + j)
        elif op == "causal":
            cluster.causal_write(i, cluster.replicas[j].clock, value, skew)
        elif op == "blind":
            cluster.causal_write(i, CausalContext(), value, skew)
        elif op == "delete":
            cluster.causal_write(i, cluster.replicas[j].clock, b"", skew, tombstone=True)
        elif op == "lww":
            cluster.lww_write(i, value, skew)
        elif op == "lww_ttl":
            cluster.lww_write(i, value, skew, expiry_ms=T0 // 1000 + skew + 2)
        else:
            try:
                cluster.incr(i, skew)
            except NotAnInteger:
                pass
    return cluster.replicas + [obj for _, obj in cluster.in_flight]


@st.composite
def arbitrary_objects(draw):
    """Any well-formed object over a tiny universe of nodes and stamps (ties, shared dots with
    different payloads, marks, clouds, counters)."""
    # 4000 µs = 4 ms: an expiry of 2 ms lies before such a write (the register format's
    # expiry offset cannot hold it)
    stamp, node = st.sampled_from((1, 2, 3, 4, 5, 6, 4000, 4001)), st.sampled_from((1, 2, 3))
    mark = draw(st.one_of(st.just((0, 0)), st.tuples(stamp, node)))
    vv = draw(st.dictionaries(node, stamp, max_size=3))
    cloud = draw(st.lists(st.tuples(node, stamp), max_size=3))
    clock = CausalContext.canonical(mark, vv, cloud)
    siblings = {}
    for n, ts, flags, expiry, value in draw(st.lists(st.tuples(
            node, stamp, st.sampled_from((0, LWW, TOMBSTONE, TOMBSTONE | LWW)),
            st.sampled_from((0, 2, 5)), st.sampled_from((b"", b"a", b"b", b"7"))), max_size=4)):
        if (ts, n) >= mark and clock.covers(n, ts):
            if flags & TOMBSTONE:
                value, expiry = b"", 0
            siblings[(n, ts)] = Sibling(n, ts, flags, expiry, value)
    counter = None
    if draw(st.booleans()):
        tag = draw(st.tuples(st.sampled_from((0, 1, 3, 6, 4000, 5000)),
                             st.sampled_from((0, 1, 2, 3))))
        totals = draw(st.dictionaries(node, st.tuples(st.integers(0, 3), st.integers(0, 3)),
                                      max_size=3))
        if tag >= mark:
            counter = Counter(tag, tuple((n, p, q) for n, (p, q) in sorted(totals.items())
                                         if p or q))
    return VersionedObject(clock, tuple(sorted(siblings.values())), counter)


any_object = st.one_of(arbitrary_objects(), history_objects().flatmap(st.sampled_from))


def rejects_or_round_trips(decode, encode, error, data) -> None:
    """Bytes either fail to decode with `error` or are the canonical encoding of what they
    decode to (so no two encodings of one value exist)."""
    try:
        decoded = decode(data)
    except error:
        return
    assert encode(decoded) == data
