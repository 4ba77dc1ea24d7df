"""A replica write syncs the incoming object into the stored one: whatever the order of the
writes and whatever path a write takes, the store ends with the sync of all of them, pruned
at the flush epoch, and the record expiry that object allows."""
import random

import pytest

from fastdyn.cluster import object as vo
from fastdyn.cluster.dvv import CausalContext
from fastdyn.cluster.hlc import HybridClock
from fastdyn.cluster.replica import Replica, record_expiry
from fastdyn.errors import BadObject


class DictStore:
    """The part of the storage engine a replica uses, in a dict: key -> (bytes, expiry)."""

    def __init__(self):
        self.data = {}

    def get(self, key):
        entry = self.data.get(key)
        return None if entry is None else entry[0]

    def put(self, key, value, expiry_ms=0):
        self.data[key] = (bytes(value), expiry_ms)

    def delete(self, key):
        self.data.pop(key, None)


def random_object(rnd):
    """A plain write (every short register format), now and then a causal object."""
    node, ts = rnd.choice([1, 2, 3]), rnd.randrange(1, 40) * 1000
    kind = rnd.randrange(5)
    if kind == 0:
        return vo.lww_object(node, b"", ts, tombstone=True)
    if kind == 1:
        return vo.lww_object(node, b"v%d" % ts, ts, ts // 1000 + rnd.randrange(1, 50))
    if kind == 2:
        return vo.causal_write(vo.NOTHING, CausalContext(), node, b"c%d" % ts, ts).object
    return vo.lww_object(node, b"v%d.%d" % (node, ts), ts)


@pytest.mark.parametrize("seed", range(40))
def test_replica_holds_the_pruned_sync_of_every_write(tmp_path, seed):
    rnd = random.Random(seed)
    writes = [random_object(rnd) for _ in range(rnd.randrange(1, 8))]
    epoch = rnd.choice([0, 0, 15_000, 25_000])
    replica = Replica(DictStore(), str(tmp_path), HybridClock())
    replica.flush_epoch = epoch
    for obj in writes:
        replica.merge_in(b"k", vo.encode(obj))

    expected = writes[0]
    for obj in writes[1:]:
        expected = vo.sync(expected, obj)
    expected = vo.prune(expected, epoch)
    stored = replica.store.data.get(b"k")
    if not expected.siblings and expected.counter is None:
        assert stored is None
    else:
        assert stored == (vo.encode(expected), record_expiry(expected))


def test_an_older_plain_write_leaves_the_stored_bytes_alone(tmp_path):
    replica = Replica(DictStore(), str(tmp_path), HybridClock())
    newer = vo.encode(vo.lww_object(2, b"new", 5000))
    assert replica.merge_in(b"k", newer) == newer
    seq = replica.write_seq
    assert replica.merge_in(b"k", vo.encode(vo.lww_object(1, b"old", 4000))) == newer
    assert replica.merge_in(b"k", vo.encode(vo.lww_object(1, b"tie", 5000))) == newer
    assert replica.write_seq == seq
    assert replica.store.get(b"k") == newer


def test_a_bad_object_is_refused_and_nothing_is_written(tmp_path):
    replica = Replica(DictStore(), str(tmp_path), HybridClock())
    with pytest.raises(BadObject):
        replica.merge_in(b"k", b"\xa1" + bytes(8))   # a register cut short
    assert replica.store.data == {}


def test_a_plain_write_stamped_before_the_flush_epoch_is_dropped(tmp_path):
    replica = Replica(DictStore(), str(tmp_path), HybridClock())
    replica.merge_in(b"k", vo.encode(vo.lww_object(1, b"old", 4000)))
    replica.flush_epoch = 5000
    replica.merge_in(b"k", vo.encode(vo.lww_object(2, b"older", 3000)))
    replica.merge_in(b"j", vo.encode(vo.lww_object(2, b"older", 3000)))
    assert replica.store.data == {}
    newer = vo.encode(vo.lww_object(2, b"new", 6000))
    assert replica.merge_in(b"k", newer) == newer
    assert replica.store.data == {b"k": (newer, 0)}


def test_key_count_agrees_with_a_plain_get_of_every_key(tmp_path):
    """INFO's keyspace line on a cluster member (replica.KeyCount): counted in C from the short
    registers' headers and in Python for the rest, a step per event-loop turn, it equals a
    plain GET of every key: expired, deleted, flushed and compressed values included."""
    import asyncio

    from fastdyn._logstore import Store
    from fastdyn.cluster.replica import KeyCount
    from fastdyn.ring import Ring

    now = 50_000                     # ms; stamps are µs
    rnd = random.Random(7)
    replica = Replica(Store(str(tmp_path / "d")), str(tmp_path), HybridClock())
    replica.flush_epoch = 3_000_000
    replica.store.expire_hold_ms = 1            # expired records stay, as anti-entropy keeps them
    for i in range(3000):
        ts, kind = rnd.randrange(1, 60) * 1_000_000, i % 6
        if kind == 0:
            obj = vo.lww_object(1, b"", ts, tombstone=True)
        elif kind == 1:                 # some expired by `now`, some not
            obj = vo.lww_object(1, b"v", ts, ts // 1000 + rnd.randrange(1, 20_000))
        elif kind == 2:
            obj = vo.causal_write(vo.NOTHING, CausalContext(), 2, b"c", ts).object
        elif kind == 3:                 # compressed when stored
            obj = vo.lww_object(1, b"z" * 5000, ts)
        else:
            obj = vo.lww_object(1, b"v%d" % i, ts)
        replica.store_object(b"k%d" % i, obj)
    expected = [vo.lww_winner(vo.decode(data), now, replica.flush_epoch)
                for _, data, _ in replica.store.items()]
    want = (sum(e is not None for e in expected), sum(bool(e and e[1]) for e in expected))
    assert 0 < want[1] < want[0] < len(expected) <= 3000

    ring = Ring(["a"], partitions=16)
    per_partition = [0] * 16
    for key, data, _ in replica.store.items():
        if vo.lww_winner(vo.decode(data), now, replica.flush_epoch) is not None:
            per_partition[ring.partition(key)] += 1

    async def count(step):
        counter = KeyCount(replica, lambda: now, 16, step=step, watched_s=0)
        first = counter.counts()            # a large store: counted in the background
        fresh = []
        counter.when_counted(lambda parts: fresh.append(parts.tolist()))
        while counter._task is not None:
            await asyncio.sleep(0)
        return first, counter.counts(), fresh
    first, counted, fresh = asyncio.run(count(100))
    stats = replica.store.stats()
    assert first == (stats["keys"], stats["keys_with_expiry"])     # before the first count
    assert counted == want and fresh == [per_partition]
    first, _, fresh = asyncio.run(count(5000))      # a small store: counted at once
    assert first == want and fresh == [per_partition]
    replica.store.close()


def test_info_asked_often_does_not_keep_the_key_count_going(tmp_path):
    """INFO shows the last count and starts one only when none is under way or waiting;
    a DBSIZE (when_counted) wakes the waiting count at once."""
    import asyncio

    from fastdyn._logstore import Store
    from fastdyn.cluster.replica import KeyCount

    replica = Replica(Store(str(tmp_path / "d")), str(tmp_path), HybridClock())
    for i in range(500):
        replica.store_object(b"k%d" % i, vo.lww_object(1, b"v", 1_000_000 + i))
    starts = []
    count_step = replica.count_step

    def counting(cursor, *args):
        if cursor is None:
            starts.append(1)
        return count_step(cursor, *args)
    replica.count_step = counting

    async def run():
        counter = KeyCount(replica, lambda: 10_000, 8, step=100, max_age_s=30)
        counter.counts()
        while counter._counts is None:
            await asyncio.sleep(0)
        for _ in range(200):        # INFO polled hard: the last count, no new one
            assert counter.counts() == (500, 0)
            await asyncio.sleep(0)
        assert len(starts) == 1
        fresh = []
        counter.when_counted(fresh.append)
        while not fresh:
            await asyncio.sleep(0)
        assert len(starts) == 2 and int(fresh[0].sum()) == 500
        counter._task.cancel()
    asyncio.run(run())
    replica.store.close()
