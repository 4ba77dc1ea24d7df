"""The replica's batch paths in C (ext/_replica.pyx) decide exactly as the per-key Python path
does: same stored bytes, same per-key answers, for any mix of objects and any order."""
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastdyn.cluster import object as vo
from fastdyn.cluster.dvv import CausalContext
from fastdyn.cluster.hlc import HybridClock
from fastdyn.cluster.replica import Replica
from fastdyn.errors import ClockSkewTooLarge, ProtocolError
from fastdyn.peer import messages as m
from fastdyn.peer.handler import ReplicaHandler
from fastdyn.storage import Store


class DictStore:
    """The part of the storage engine a replica uses, in a dict."""

    def __init__(self):
        self.data = {}

    def get(self, key):
        return self.data.get(key)

    def put(self, key, value, expiry_ms=0):
        self.data[key] = bytes(value)

    def delete(self, key):
        self.data.pop(key, None)


class NoHints:
    def owners(self):
        return ()


def replica_at(path):
    return Replica(Store(str(path)), str(path), HybridClock())


NOW_US = time.time_ns() // 1000


def random_write(rnd, keys):
    node, ts = rnd.choice([1, 2, 3]), NOW_US + rnd.randrange(1, 30) * 1000
    kind = rnd.randrange(6)
    if kind == 0:
        obj = vo.lww_object(node, b"", ts, tombstone=True)
    elif kind == 1:
        obj = vo.lww_object(node, b"t%d" % ts, ts, ts // 1000 + 10**7)
    elif kind == 2:
        obj = vo.causal_write(vo.NOTHING, CausalContext(), node, b"c%d" % ts, ts).object
    else:
        obj = vo.lww_object(node, b"v%d.%d" % (node, ts), ts)
    return rnd.choice(keys), vo.encode(obj)


@pytest.mark.parametrize("seed", range(30))
def test_batched_puts_match_the_per_key_path(tmp_path, seed):
    rnd = random.Random(seed)
    keys = [b"k%d" % i for i in range(4)]
    epoch = rnd.choice([0, 0, NOW_US + 12_000])
    # the per-key path on a dict store is the Python merge alone
    one = Replica(DictStore(), str(tmp_path), HybridClock())
    batched = replica_at(tmp_path / "batched")
    one.flush_epoch = batched.flush_epoch = epoch
    per_key = ReplicaHandler(one, NoHints(), None)
    in_batches = ReplicaHandler(batched, NoHints(), None)
    for _ in range(rnd.randrange(1, 6)):
        # up to 40 keys: batches cross the boundaries of the keys fetched ahead
        items = [random_write(rnd, keys) for _ in range(rnd.randrange(1, 40))]
        expected = [per_key._put(k, memoryview(o)) for k, o in items]
        batch = batched.apply_puts(m.pack_puts(items), in_batches._put)
        assert [(s, bytes(b)) for s, b in batch.results] == [(s, bytes(b)) for s, b in expected]
    for key in keys:
        assert batched.store.get(key) == one.store.get(key)
        assert batched.merge_in(key, vo.encode(vo.lww_object(9, b"z", NOW_US + 99_000))) \
            == one.merge_in(key, vo.encode(vo.lww_object(9, b"z", NOW_US + 99_000)))
    assert batched.hlc.last == one.hlc.last
    assert (batched.write_seq > 0) == (one.write_seq > 0)


def test_a_plain_write_that_lost_answers_the_newer_one(tmp_path):
    replica = replica_at(tmp_path)
    newer = vo.encode(vo.lww_object(2, b"new", 5000))
    older = vo.encode(vo.lww_object(1, b"old", 4000))
    same_ts_bigger_node = vo.encode(vo.lww_object(3, b"tie", 5000))
    handler = ReplicaHandler(replica, NoHints(), None)
    batch = replica.apply_puts(m.pack_puts([(b"k", newer), (b"k", older)]), handler._put)
    assert [(s, bytes(b)) for s, b in batch.results] == [(m.OK, b""), (m.OK, newer)]
    assert batch.writes == 1
    # the same timestamp from a greater node id wins the tie, and the loser is not told to
    # stamp again (its stamp is not older)
    batch = replica.apply_puts(m.pack_puts([(b"k", same_ts_bigger_node), (b"k", newer)]),
                               handler._put)
    assert [(s, bytes(b)) for s, b in batch.results] == [(m.OK, b""), (m.OK, b"")]
    assert replica.store.get(b"k") == same_ts_bigger_node


def test_a_stamp_beyond_the_clock_limit_takes_the_checked_path(tmp_path):
    replica = Replica(Store(str(tmp_path)), str(tmp_path),
                      HybridClock(wall=lambda: 1_000_000, max_skew_us=1000))
    ahead = vo.encode(vo.lww_object(1, b"x", 5_000_000))
    with pytest.raises(ClockSkewTooLarge):
        replica.apply_puts(m.pack_puts([(b"k", ahead)]),
                           ReplicaHandler(replica, NoHints(), None)._put)
    assert replica.store.get(b"k") is None


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(min_size=1, max_size=12), min_size=0, max_size=40), st.data())
def test_any_damaged_batch_is_a_protocol_error_or_applied(tmp_path, keys, data):
    """Keys fetched ahead of the parse never read past a payload, whatever its bytes say."""
    replica = replica_at(tmp_path / str(len(keys)) / str(data.draw(st.integers(0, 10**9))))
    obj = vo.encode(vo.lww_object(1, b"v", NOW_US))
    for payload in (m.pack_puts([(k, obj) for k in keys]), m.pack_keys(keys)):
        cut = data.draw(st.integers(0, len(payload)))
        damaged = bytearray(payload[:cut])
        if damaged and data.draw(st.booleans()):
            at = data.draw(st.integers(0, len(damaged) - 1))
            damaged[at] = data.draw(st.integers(0, 255))
        try:
            replica.apply_puts(bytes(damaged), lambda k, o: (m.OK, b""))
        except ProtocolError:
            pass
        try:
            replica.answer_gets(bytes(damaged))
        except ProtocolError:
            pass
    replica.store.close()


@pytest.mark.parametrize("cut", [0, 3, 5, 9, 14, -1])
def test_a_truncated_put_batch_is_a_protocol_error(tmp_path, cut):
    replica = replica_at(tmp_path)
    payload = m.pack_puts([(b"key", vo.encode(vo.lww_object(1, b"v", 1000)))])
    with pytest.raises(ProtocolError):
        replica.apply_puts(payload[:cut] if cut >= 0 else payload + b"x", lambda k, o: None)


def test_batched_gets_answer_the_stored_objects(tmp_path):
    replica = replica_at(tmp_path)
    obj = vo.encode(vo.lww_object(1, b"v" * 3000, 1000))
    replica.store.put(b"a", obj)
    payload = replica.answer_gets(m.pack_keys([b"a", b"missing", b"a"]))
    assert [(s, bytes(b)) for s, b in m.unpack_results(payload)] == [
        (m.OK, obj), (m.NOT_FOUND, b""), (m.OK, obj)]
    seen = []
    payload = replica.answer_gets(m.pack_keys([b"a"]),
                                  lambda key: seen.append(key) or (m.NOT_FOUND, b""))
    assert seen == [b"a"] and m.unpack_results(payload) == [(m.NOT_FOUND, b"")]
    with pytest.raises(ProtocolError):
        replica.answer_gets(m.pack_keys([b"a"])[:-1])


@pytest.mark.parametrize("size", [10, 300_000])
def test_a_stored_value_compressed_or_large_is_compared_as_well(tmp_path, size):
    replica = replica_at(tmp_path)
    handler = ReplicaHandler(replica, NoHints(), None)
    stored = vo.encode(vo.lww_object(2, b"a" * size, NOW_US + 5000))
    older = vo.encode(vo.lww_object(1, b"b", NOW_US + 4000))
    newer = vo.encode(vo.lww_object(1, b"c", NOW_US + 6000))
    replica.apply_puts(m.pack_puts([(b"k", stored)]), handler._put)
    batch = replica.apply_puts(m.pack_puts([(b"k", older), (b"k", newer)]), handler._put)
    assert [(s, bytes(b)) for s, b in batch.results] == [(m.OK, stored), (m.OK, b"")]
    assert replica.store.get(b"k") == newer
