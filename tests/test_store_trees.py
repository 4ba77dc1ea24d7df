"""The anti-entropy trees a store keeps (Store.enable_trees, merkle.StoreTrees): after any
sequence of writes, deletes, expiries, merges, clears and reopenings, every partition's tree
equals the tree built from scratch over the store's keys and values."""
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from fastdyn._logstore import Store
from fastdyn.cluster.merkle import MerkleTree, StoreTrees, value_digest
from fastdyn.peer import messages as m
from fastdyn.ring import Ring

PARTITIONS = 8


def expected_trees(store, trees):
    ring = Ring(["a"], partitions=PARTITIONS)
    want = [MerkleTree(trees.depth, trees.FANOUT) for _ in range(PARTITIONS)]
    for key, value, _ in store.items():
        want[ring.partition(key)].insert(key, value_digest(key, value))
    return want


def check(store, trees):
    store.sweep_expired(1 << 30)
    while not trees.rebuild(7):
        pass
    for p, tree in enumerate(expected_trees(store, trees)):
        assert tree == trees.tree(p), f"partition {p} differs"


keys = st.binary(min_size=1, max_size=6)
ops = st.lists(st.one_of(
    st.tuples(st.just("put"), keys, st.binary(max_size=40)),
    st.tuples(st.just("big"), keys, st.integers(0, 3)),
    st.tuples(st.just("del"), keys),
    st.tuples(st.just("ttl"), keys, st.integers(1, 30)),
    st.tuples(st.just("tick"), st.integers(1, 20)),
    st.tuples(st.just("merge"),),
    st.tuples(st.just("clear"),),
    st.tuples(st.just("reopen"),),
), max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_trees_follow_every_change(tmp_path_factory, ops):
    path = tmp_path_factory.mktemp("trees")
    now = [1_000_000]
    open_store = lambda: Store(path, sync="never", segment_bytes=4096, compress_threshold=64,
                               clock=lambda: now[0], auto_merge=False)
    store = open_store()
    trees = StoreTrees(store, PARTITIONS)
    try:
        for op in ops:
            if op[0] == "put":
                store.put(op[1], op[2])
            elif op[0] == "big":     # compressible: stored lz4-compressed, digested as written
                store.put(op[1], b"v%d" % op[2] * 100)
            elif op[0] == "del":
                store.delete(op[1])
            elif op[0] == "ttl":
                store.put(op[1], b"t", now[0] + op[2])
            elif op[0] == "tick":
                now[0] += op[1]
            elif op[0] == "merge":
                store.merge()
            elif op[0] == "clear":
                store.clear()
            else:
                store.close()
                store = open_store()
                trees = StoreTrees(store, PARTITIONS)
            if op[0] != "reopen":
                # written keys are in the trees at once, rebuilt or not
                for key in (op[1:2] if op[0] in ("put", "big", "ttl") else ()):
                    assert store.digest_of(key) == value_digest(key, store[key])
        check(store, trees)
    finally:
        store.close()


def test_expire_hold_keeps_expired_records(tmp_path):
    now = [1_000]
    with Store(tmp_path, clock=lambda: now[0], expire_hold_ms=1) as store:
        store.put(b"k", b"v", 1_500)
        now[0] = 2_000
        assert store.get(b"k") == b"v" and store.sweep_expired(10) == 0
        store.expire_hold_ms = 1_600
        assert store.get(b"k") is None
    with Store(tmp_path, clock=lambda: now[0], expire_hold_ms=1) as store:
        store.put(b"k", b"v", 1_500)
    # held at open as well: the record replayed from the log is still there
    with Store(tmp_path, clock=lambda: now[0], expire_hold_ms=1) as store:
        assert store.get(b"k") == b"v"


def listing(trees, segments, step=1 << 16) -> dict:
    """{key: digest} of a whole listing, decoded as the AE_LISTING answer that carries it."""
    steps = list(trees.listing_steps(segments, step))
    packed = b"".join(p for _, p in steps)
    return m.unpack_digests(memoryview(sum(c for c, _ in steps).to_bytes(4, "little") + packed))


def test_listing_names_the_keys_of_the_wanted_segments(tmp_path):
    with Store(tmp_path) as store:
        trees = StoreTrees(store, PARTITIONS)
        for i in range(500):
            store.put(b"key%d" % i, b"value%d" % i)
        ring = Ring(["a"], partitions=PARTITIONS)
        key = b"key7"
        p, seg = ring.partition(key), trees.tree(0).segment_of(key)
        listed = listing(trees, {p: [seg]})
        assert listed[key] == value_digest(key, b"value7")
        assert all(ring.partition(k) == p and trees.tree(p).segment_of(k) == seg
                   for k in listed)
        assert listing(trees, {}) == {}
        # a step at a time: the same listing
        steps = list(trees.listing_steps({p: [seg]}, step=7))
        assert len(steps) >= 500 // 7
        merged = {}
        for count, packed in steps:
            part = m.unpack_digests(memoryview(count.to_bytes(4, "little") + packed))
            merged.update(part)
        assert merged == listed


def test_listing_differences_names_the_keys_whose_digests_differ_here(tmp_path):
    with Store(tmp_path / "a") as a, Store(tmp_path / "b") as b:
        trees_a, trees_b = StoreTrees(a, PARTITIONS), StoreTrees(b, PARTITIONS)
        for i in range(300):
            a.put(b"k%d" % i, b"v")
            if i % 3:
                b.put(b"k%d" % i, b"v" if i % 2 else b"other")
        every = {p: range(trees_a.segment_count) for p in range(PARTITIONS)}
        listing = b"".join(packed for _, packed in trees_a.listing_steps(every, step=50))
        at, found, seen = 0, {}, 0
        while at < len(listing):        # a few entries at a time, as a puller reads it
            at, step, differing = b.listing_differences(listing, at, 13)
            seen += step
            found.update(differing)
        assert seen == 300 and at == len(listing)
        digest_b = {k: b.digest_of(k) for k in found}
        assert found == digest_b
        assert set(found) == {b"k%d" % i for i in range(300) if i % 3 == 0 or i % 2 == 0}
        assert all(found[b"k%d" % i] == 0 for i in range(0, 300, 3))
        del trees_b


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=64))
def test_a_listing_that_does_not_parse_is_a_value_error(tmp_path, junk):
    with Store(tmp_path) as store:
        StoreTrees(store, PARTITIONS)
        store.put(b"k", b"v")
        try:
            at, seen, found = store.listing_differences(junk)
        except ValueError:
            return
        assert at == len(junk) and seen >= 0 and all(isinstance(k, bytes) for k, _ in found)


def test_trees_rebuild_from_a_fold_of_existing_data(tmp_path):
    with Store(tmp_path) as store:
        for i in range(3000):
            store.put(b"k%d" % i, b"%d" % (i * 7))
    with Store(tmp_path) as store:
        trees = StoreTrees(store, PARTITIONS)
        assert not trees.ready and all(trees.root(p) == 0 for p in range(PARTITIONS))
        store.put(b"new", b"x")        # a write while rebuilding counts once
        steps = 0
        while not trees.rebuild(500):
            steps += 1
        assert steps >= 5 and trees.ready and trees.rebuilt_keys == 3000
        check(store, trees)
        assert np.count_nonzero(trees.nodes) > 0
