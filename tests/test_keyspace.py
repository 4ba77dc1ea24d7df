"""A cluster member's keys in ring-hash order (SCAN, KEYS, DBSIZE): the store picks them by
hash in C (`Store.keys_by_hash`) and `live_keys_from` keeps the live ones; both agree with a
plain sort of every key, whatever the start, the limit and the dead keys among them."""
import heapq

from hypothesis import HealthCheck, given, settings, strategies as st

from fastdyn._hash import hash64
from fastdyn._logstore import Store
from fastdyn.cluster import object as vo
from fastdyn.cluster.keyspace import END, live_keys_from

NOW = 10_000_000        # ms; stamps are µs


def write(store, key, kind, ts):
    """A stored object: live, deleted, expired by NOW, or older than the flush epoch."""
    if kind == "deleted":
        obj = vo.lww_object(1, b"", ts, tombstone=True)
    elif kind == "expired":
        obj = vo.lww_object(1, b"v", ts, ts // 1000 + 1)
    elif kind == "ttl":
        obj = vo.lww_object(1, b"v", ts, NOW + 60_000)
    else:
        obj = vo.lww_object(1, b"v" * (3000 if kind == "large" else 1), ts)
    store.put(key, vo.encode(obj))


def reference(store, start, limit, epoch):
    """The listing as a fold of every object would make it."""
    live = []
    for key, data, _ in store.items():
        h = hash64(key)
        if h >= start and vo.lww_winner(vo.decode(data), NOW, epoch) is not None:
            live.append((h, key))
    chosen = heapq.nsmallest(limit, live)
    if chosen and len(live) > limit:
        chosen += sorted(p for p in live if p[0] == chosen[-1][0] and p not in chosen)
    return chosen


kinds = st.sampled_from(["live", "live", "ttl", "large", "deleted", "expired", "flushed"])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.binary(min_size=1, max_size=8), kinds, max_size=120),
       st.integers(0, END - 1), st.integers(1, 40))
def test_live_keys_from_agrees_with_a_fold(tmp_path, objects, start, limit):
    epoch = 5_000_000
    with Store(tmp_path / "s", expire_hold_ms=1) as store:
        store.clear()
        for key, kind in objects.items():
            write(store, key, kind, 1_000_000 if kind == "flushed" else 6_000_000)
        for begin in (0, start):
            assert live_keys_from(store, begin, limit, NOW, epoch) == reference(
                store, begin, limit, epoch)


def test_keys_by_hash_walks_every_key_once_in_hash_order(tmp_path):
    with Store(tmp_path / "s") as store:
        for i in range(5000):
            store.put(b"k%d" % i, b"v")
        for i in range(0, 5000, 3):
            store.delete(b"k%d" % i)
        want = sorted((hash64(k), k) for k in store)
        seen, start, more = [], 0, True
        while more:
            more, pairs = store.keys_by_hash(start, 97)
            assert pairs == sorted(pairs) and all(h >= start for h, _ in pairs)
            assert len(pairs) == 97 or not more
            seen += pairs
            if pairs:
                start = pairs[-1][0] + 1
        assert seen == want
        assert store.keys_by_hash(0, 0) == (True, [])
        assert store.keys_by_hash(END - 1, 5) == (False, [p for p in want if p[0] == END - 1])


def test_keys_by_hash_is_right_whatever_order_the_keys_were_written_in(tmp_path):
    keys = [b"o%d" % i for i in range(3000)]
    for name, order in (("up", sorted(keys, key=hash64)),
                        ("down", sorted(keys, key=hash64, reverse=True)),
                        ("organ", sorted(keys, key=hash64)[::2]
                         + sorted(keys, key=hash64)[1::2][::-1])):
        with Store(tmp_path / name) as store:
            for key in order:
                store.put(key, b"v")
            want = sorted((hash64(k), k) for k in keys)
            for limit in (1, 2, 17, 1500, 2999, 3000, 5000):
                more, pairs = store.keys_by_hash(0, limit)
                assert pairs == want[:limit] and more == (limit < 3000), (name, limit)
            middle = want[1234][0]
            assert store.keys_by_hash(middle, 10) == (True, want[1234:1244])


def test_dbsize_takes_per_partition_the_largest_count_of_its_replicas():
    import numpy as np
    import pytest

    from fastdyn.cluster.quorum import _add_up_counts
    from fastdyn.errors import CommandError
    from fastdyn.ring import Ring

    ring = Ring(["a", "b", "c"], partitions=8)
    counts = {name: np.zeros(8, dtype=np.uint64) for name in ring.members}
    for p in range(8):
        owners = ring.preference_list(p, 2)
        counts[owners[0]][p] = 10 + p          # one replica lags behind the other
        counts[owners[1]][p] = 9 + p
    assert _add_up_counts(counts, ring, 2) == sum(10 + p for p in range(8))
    counts["d"] = np.full(8, 1000, dtype=np.uint64)     # not a member: ignored
    assert _add_up_counts(counts, ring, 2) == sum(10 + p for p in range(8))
    lone = {"a": counts["a"]}                  # b and c did not answer
    with pytest.raises(CommandError, match="no replica of some partitions"):
        _add_up_counts(lone, ring, 2)
