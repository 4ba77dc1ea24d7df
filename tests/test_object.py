"""The stored object: sync laws, LWW, expiry, flush epoch, counters, limits and the encoding."""
import itertools
import struct

import pytest
from hypothesis import given, settings, strategies as st

from fastdyn.cluster.dvv import EMPTY, CausalContext, node_id, pack_clock
from fastdyn.cluster.hlc import HybridClock
from fastdyn.cluster.object import (LWW, NOTHING, TOMBSTONE, causal_write, counter_add,
                                    decode, decode_legacy, delete, encode, encode_lww, lww_object,
                                    lww_winner, lww_write, max_timestamp, plain_value, prune, read,
                                    sync)
from fastdyn.errors import (BadObject, CounterOverflow, NotAnInteger, ProtocolError,
                            SiblingLimitExceeded, StorageCorruption)

from object_model import (NODES, T0, Cluster, any_object, history_objects, merge_all,
                          rejects_or_round_trips)

A, B, C = NODES


# -- invariant 4: sync is a join-semilattice ------------------------------------------------
@given(any_object, any_object)
def test_sync_is_commutative(a, b):
    assert sync(a, b) == sync(b, a)
    assert encode(sync(a, b)) == encode(sync(b, a))


@given(any_object, any_object, any_object)
def test_sync_is_associative(a, b, c):
    assert sync(sync(a, b), c) == sync(a, sync(b, c))


@given(any_object, any_object)
def test_sync_is_idempotent_and_absorbs(a, b):
    assert sync(a, a) == a
    ab = sync(a, b)
    assert sync(ab, a) == ab and sync(ab, b) == ab


@given(history_objects())
def test_replicas_of_one_history_sync_the_same_way_in_every_order(objects):
    objects = objects[:5]
    results = {encode(merge_all(order)) for order in itertools.permutations(objects)}
    assert len(results) == 1


# -- invariant 5: canonical encoding --------------------------------------------------------
@given(history_objects(), st.randoms(use_true_random=False))
def test_replicas_that_exchanged_everything_hold_byte_identical_objects(objects, rnd):
    replicas = list(objects)
    # gossip in a random order until every replica has heard every other
    for _ in range(3):
        pairs = [(i, j) for i in range(len(replicas)) for j in range(len(replicas)) if i != j]
        rnd.shuffle(pairs)
        for i, j in pairs:
            replicas[i] = sync(replicas[i], replicas[j])
    assert len({encode(r) for r in replicas}) == 1


@given(any_object)
def test_encoding_round_trips(obj):
    data = encode(obj)
    assert decode(data) == obj
    assert encode(decode(data)) == data
    assert decode(memoryview(data)) == obj


# -- invariant 7: LWW converges ---------------------------------------------------------------
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(-5, 5), st.binary(max_size=2)),
                min_size=1, max_size=12),
       st.lists(st.integers(0, 50), max_size=40))
def test_lww_converges_to_the_greatest_timestamp_node_pair(writes, order):
    cluster = Cluster()
    stamps = []
    for index, skew, value in writes:
        result = cluster.lww_write(index, value, skew)
        stamps.append(((result.ts, NODES[index]), value))
    cluster.deliver_all(order)
    expected = max(stamps)[1]
    assert {lww_winner(r, 0) for r in cluster.replicas} == {(expected, 0)}
    assert all(len(r.siblings) == 1 for r in cluster.replicas)
    assert len({encode(r) for r in cluster.replicas}) == 1


def test_a_write_after_an_acknowledged_write_through_another_node_wins():
    # node a's clock runs 5 s ahead; node b observes the stamp a's write carried (its reply)
    clock_a = HybridClock(lambda: T0 + 5_000_000)
    clock_b = HybridClock(lambda: T0)
    first = lww_write(NOTHING, A, b"first", clock_a.now())
    clock_b.observe(first.ts)
    second = lww_object(B, b"second", clock_b.now())
    for replica in (first.object, NOTHING):
        assert lww_winner(sync(replica, second), 0) == (b"second", 0)
        assert lww_winner(sync(second, replica), 0) == (b"second", 0)


def test_lww_write_discards_older_values_whatever_their_context():
    causal = causal_write(NOTHING, EMPTY, A, b"causal", T0).object
    later = causal_write(causal, EMPTY, B, b"later", T0 + 100).object
    result = lww_write(later, C, b"set", T0 + 50)
    # the causal value stamped after the SET survives; the older one is gone
    assert [s.value for s in result.object.siblings] == [b"later", b"set"]
    assert lww_winner(result.object, 0) == (b"later", 0)


def test_lww_write_never_reuses_its_own_dot_after_a_clock_regression():
    first = lww_write(NOTHING, A, b"one", T0 + 10)
    second = lww_write(first.object, A, b"two", T0)
    assert second.ts == T0 + 11
    assert lww_winner(second.object, 0) == (b"two", 0)


def test_plain_get_of_siblings_returns_the_greatest_timestamp_node():
    one = causal_write(NOTHING, EMPTY, A, b"one", T0).object
    two = causal_write(NOTHING, EMPTY, B, b"two", T0).object
    both = sync(one, two)
    assert sorted(read(both, 0).values) == [b"one", b"two"]
    assert lww_winner(both, 0) == ((b"two" if B > A else b"one"), 0)


def test_plain_get_returns_nothing_when_the_newest_sibling_is_a_tombstone():
    value = causal_write(NOTHING, EMPTY, A, b"v", T0).object
    tomb = delete(NOTHING, EMPTY, B, T0 + 5).object
    both = sync(value, tomb)
    assert read(both, 0).values == [b"v"]
    assert lww_winner(both, 0) is None


# -- expiry: a tombstone stamped with its expiry --------------------------------------------
def test_an_expired_value_reads_as_absent():
    obj = lww_write(NOTHING, A, b"v", T0, expiry_ms=T0 // 1000 + 10).object
    assert lww_winner(obj, T0 // 1000 + 9) == (b"v", T0 // 1000 + 10)
    assert lww_winner(obj, T0 // 1000 + 10) is None
    assert read(obj, T0 // 1000 + 10).values == []


def test_an_expired_value_is_a_tombstone_stamped_at_its_expiry():
    expiry = T0 // 1000 + 10
    early = causal_write(NOTHING, EMPTY, A, b"early", T0, expiry).object
    # concurrent values stamped before / after the expiry
    before = sync(early, causal_write(NOTHING, EMPTY, B, b"before", T0 + 5_000).object)
    after = sync(early, causal_write(NOTHING, EMPTY, B, b"after", T0 + 20_000).object)
    later = expiry + 1
    assert lww_winner(before, later) is None
    assert lww_winner(after, later) == (b"after", 0)
    assert read(before, later).values == [b"before"]


def test_a_causal_write_with_the_read_context_replaces_an_expired_value():
    obj = lww_write(NOTHING, A, b"v", T0, expiry_ms=T0 // 1000 + 1).object
    ctx = read(obj, T0 // 1000 + 2).context
    new = causal_write(obj, ctx, B, b"w", T0 + 5_000).object
    assert [s.value for s in new.siblings] == [b"w"]


# -- flush epoch ----------------------------------------------------------------------------
def test_values_older_than_the_flush_epoch_are_absent_and_stay_absent():
    old = lww_write(NOTHING, A, b"old", T0).object
    epoch = T0 + 100
    assert lww_winner(old, 0, epoch) is None and read(old, 0, epoch).values == []
    new = causal_write(NOTHING, EMPTY, B, b"new", T0 + 200).object
    pruned = prune(sync(old, new), epoch)
    assert [s.value for s in pruned.siblings] == [b"new"]
    # a stale replica that still holds the flushed value cannot bring it back
    again = sync(pruned, old)
    assert read(again, 0, epoch).values == [b"new"]
    assert prune(again, epoch) == pruned


@given(any_object, any_object, st.integers(0, 8))
def test_prune_commutes_with_sync(a, b, epoch):
    assert prune(sync(prune(a, epoch), b), epoch) == prune(sync(a, b), epoch)


def test_prune_leaves_an_object_with_nothing_after_a_flush():
    obj = counter_add(lww_write(NOTHING, A, b"5", T0).object, A, 1, 0).object
    emptied = prune(obj, T0 + 1)
    assert emptied.siblings == () and emptied.counter is None
    assert lww_winner(emptied, 0, T0 + 1) is None


# -- sibling limits -------------------------------------------------------------------------
def test_sibling_limit_warns_then_refuses():
    obj = NOTHING
    for i in range(24):
        result = causal_write(obj, EMPTY, A, b"%d" % i, T0 + i)
        obj = result.object
        assert not result.sibling_warning
    result = causal_write(obj, EMPTY, A, b"x", T0 + 100)
    assert result.sibling_warning and len(result.object.siblings) == 25
    with pytest.raises(SiblingLimitExceeded):
        causal_write(result.object, EMPTY, A, b"y", T0 + 200, max_siblings=25)
    refused = result.object
    for i in range(75):
        refused = causal_write(refused, EMPTY, B, b"z", T0 + 300 + i).object
    assert len(refused.siblings) == 100
    with pytest.raises(SiblingLimitExceeded):
        causal_write(refused, EMPTY, C, b"one too many", T0 + 1000)
    # a write whose context covers the siblings is always accepted
    merged = causal_write(refused, read(refused, 0).context, C, b"merged", T0 + 1000)
    assert read(merged.object, 0).values == [b"merged"]


# -- counters (invariant 6) -----------------------------------------------------------------
@given(st.sampled_from([None, b"10", b"-7"]),
       st.lists(st.tuples(st.integers(0, 2), st.integers(-1000, 1000)), max_size=20),
       st.lists(st.integers(0, 100), max_size=60))
def test_counters_converge_to_base_plus_every_delta(base, increments, order):
    cluster = Cluster()
    if base is not None:
        cluster.lww_write(0, base)
        cluster.deliver_all([])
    for index, delta in increments:
        cluster.incr(index, delta)
        if order:
            cluster.deliver(order.pop())
    cluster.deliver_all(order)
    expected = int(base or 0) + sum(d for _, d in increments)
    for replica in cluster.replicas:
        if base is None and not increments:
            assert lww_winner(replica, 0) is None
        else:
            assert lww_winner(replica, 0) == (b"%d" % expected, 0)
    assert len({encode(r) for r in cluster.replicas}) == 1


def test_incr_converts_an_integer_string_and_keeps_its_ttl():
    expiry = T0 // 1000 + 10_000
    obj = lww_write(NOTHING, A, b"41", T0, expiry_ms=expiry).object
    result = counter_add(obj, B, 1, 0)
    assert result.value == 42
    assert lww_winner(result.object, 0) == (b"42", expiry)
    assert read(result.object, 0).values == [b"42"]
    assert lww_winner(result.object, expiry) is None


def test_incr_on_a_non_integer_is_the_redis_error():
    obj = lww_write(NOTHING, A, b"abc", T0).object
    with pytest.raises(NotAnInteger) as info:
        counter_add(obj, A, 1, 0)
    assert str(info.value) == "ERR value is not an integer or out of range"


def test_incr_overflow_is_refused_and_changes_nothing():
    obj = lww_write(NOTHING, A, b"%d" % ((1 << 63) - 2), T0).object
    obj = counter_add(obj, A, 1, 0).object
    with pytest.raises(CounterOverflow):
        counter_add(obj, B, 1, 0)
    assert counter_add(obj, B, -5, 0).value == (1 << 63) - 6


def test_set_concurrent_with_increments_merges_the_same_way_everywhere():
    base = lww_write(NOTHING, A, b"100", T0).object
    incr_b = counter_add(base, B, 5, 0).object
    incr_c = counter_add(base, C, 7, 0).object
    set_a = lww_write(base, A, b"1", T0 + 50).object
    for order in itertools.permutations([incr_b, incr_c, set_a]):
        merged = merge_all(order)
        assert lww_winner(merged, 0) == (b"1", 0)
        assert merged.counter is None
    # increments that follow the SET count from its value
    after = counter_add(merge_all([incr_b, set_a]), B, 2, 0)
    assert after.value == 3
    assert lww_winner(sync(after.object, incr_c), 0) == (b"3", 0)


def test_a_counter_stops_counting_when_a_newer_write_wins_and_restarts_from_it():
    obj = counter_add(NOTHING, A, 5, 0).object
    assert lww_winner(obj, 0) == (b"5", 0)
    deleted = delete(obj, read(obj, 0).context, B, T0).object
    assert lww_winner(deleted, 0) is None and read(deleted, 0).values == []
    again = counter_add(deleted, A, 2, 0)
    assert again.value == 2
    put = causal_write(again.object, EMPTY, C, b"text", T0 + 10).object
    assert lww_winner(put, 0) == (b"text", 0)
    with pytest.raises(NotAnInteger):
        counter_add(put, A, 1, 0)


def test_concurrent_first_increments_of_an_absent_key_share_a_base():
    merged = sync(counter_add(NOTHING, A, 3, 0).object, counter_add(NOTHING, B, 4, 0).object)
    assert lww_winner(merged, 0) == (b"7", 0)
    assert read(merged, 0).values == [b"7"]


def test_a_flush_ends_a_counter():
    obj = counter_add(NOTHING, A, 3, 0).object
    epoch = T0
    assert lww_winner(obj, 0, epoch) is None
    restarted = counter_add(prune(obj, epoch), B, 1, 0, epoch)
    assert restarted.value == 1
    # the pre-flush totals of a stale replica are ignored
    assert lww_winner(sync(restarted.object, obj), 0, epoch) == (b"1", 0)


# -- encoding -------------------------------------------------------------------------------
def test_a_plain_set_costs_17_bytes_and_with_a_ttl_21():
    value = b"v" * 100
    ts = HybridClock().now()
    plain = encode(lww_write(NOTHING, node_id("node-1"), value, ts).object)
    with_ttl = encode(lww_write(NOTHING, node_id("node-1"), value, ts,
                                expiry_ms=ts // 1000 + 3_600_000).object)
    assert len(plain) - len(value) == 17
    assert len(with_ttl) - len(value) == 21


def test_first_byte_is_the_format_tag():
    assert encode(lww_object(A, b"x", T0))[0] == 0xA1
    assert encode(lww_object(A, b"x", T0, T0 // 1000 + 5))[0] == 0xA2
    assert encode(lww_object(A, b"", T0, tombstone=True)) == struct.pack("<BQQ", 0xA4, A, T0)
    assert encode(delete(NOTHING, EMPTY, A, T0).object)[0] == 0xA3


def test_a_ttl_too_far_from_the_write_uses_the_general_format():
    far = T0 // 1000 + (1 << 33)
    obj = lww_object(A, b"x", T0, far)
    assert encode(obj)[0] == 0xA3 and decode(encode(obj)) == obj


def test_the_greatest_expiry_redis_accepts_round_trips_and_one_past_it_is_refused():
    limit = (1 << 63) - 1
    obj = lww_object(A, b"5", T0, limit)
    assert encode(obj)[0] == 0xA3 and decode(encode(obj)) == obj
    assert lww_winner(obj, T0 // 1000) == (b"5", limit)
    counting = counter_add(obj, B, 2, T0 // 1000).object
    assert decode(encode(counting)) == counting
    assert lww_winner(counting, T0 // 1000) == (b"7", limit)
    with pytest.raises(ValueError):
        lww_object(A, b"x", T0, limit + 1)
    one_past = encode(obj).replace(struct.pack("<Q", limit), struct.pack("<Q", limit + 1))
    with pytest.raises(BadObject, match="expiry"):
        decode(one_past)


def test_a_value_expired_in_the_far_future_still_stamps_within_range():
    obj = lww_object(A, b"5", T0, (1 << 63) - 1)
    counting = counter_add(obj, B, 1, (1 << 63) - 1).object
    assert decode(encode(counting)) == counting


def test_the_general_format_refuses_a_plain_register():
    # the same register spelled in the general format: a second encoding of one value
    parts = [b"\xa3"]
    pack_clock(CausalContext((T0, A)), parts)
    parts += [struct.pack("<IQQBI", 1, A, T0, LWW, 1), b"x", b"\x00"]
    general = b"".join(parts)
    with pytest.raises(BadObject, match="plain register"):
        decode(general)
    tombstone = general.replace(struct.pack("<BI", LWW, 1) + b"x",
                                struct.pack("<BI", LWW | TOMBSTONE, 0))
    with pytest.raises(BadObject, match="plain register"):
        decode(tombstone)
    causal = general.replace(struct.pack("<BI", LWW, 1), struct.pack("<BI", 0, 1))
    assert decode(causal).siblings[0].flags == 0


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_decoding_arbitrary_bytes_fails_cleanly_or_round_trips(data):
    rejects_or_round_trips(decode, encode, BadObject, data)


@settings(max_examples=300)
@given(any_object, st.data())
def test_decoding_corrupted_objects_fails_cleanly_or_round_trips(obj, data):
    raw = bytearray(encode(obj))
    how = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del raw[data.draw(st.integers(0, len(raw) - 1)):]
    else:
        raw += data.draw(st.binary(min_size=1, max_size=4))
    rejects_or_round_trips(decode, encode, BadObject, bytes(raw))


def test_bad_object_is_a_storage_and_protocol_error():
    with pytest.raises(StorageCorruption):
        decode(b"")
    with pytest.raises(ProtocolError):
        decode(b"\x00garbage")


def test_legacy_values_read_as_lww_registers():
    obj = decode_legacy(b"old value", 1234, A, T0)
    assert lww_winner(obj, 0) == (b"old value", 1234)
    assert lww_winner(obj, 1234) is None
    assert lww_winner(sync(obj, lww_object(B, b"new", T0 + 1)), 0) == (b"new", 0)
    assert decode(encode(obj)) == obj


def test_max_timestamp_covers_every_dot():
    obj = sync(lww_object(A, b"x", T0 + 9), causal_write(NOTHING, EMPTY, B, b"y", T0).object)
    assert max_timestamp(obj) == T0 + 9


def test_payload_is_checked():
    with pytest.raises(TypeError):
        lww_object(A, "text", T0)
    with pytest.raises(ValueError):
        lww_object(A, b"x", 0)
    with pytest.raises(ValueError):
        lww_object(A, b"x", T0, -1)


def test_incr_on_a_value_that_expired_before_it_was_written_survives_sync():
    # its effective tombstone stamp (the expiry) lies below the write's own LWW mark
    obj = lww_write(NOTHING, A, b"5", T0, expiry_ms=T0 // 1000 - 1).object
    now = T0 // 1000
    result = counter_add(obj, B, 1, now)
    assert result.value == 1
    assert lww_winner(sync(result.object, obj), now) == (b"1", 0)
    assert decode(encode(result.object)) == result.object


@given(any_object, st.sampled_from(NODES), st.integers(T0 - 5, T0 + 5), st.booleans())
def test_replicating_the_small_lww_object_gives_what_the_coordinator_holds(obj, node, ts,
                                                                           tombstone):
    result = lww_write(obj, node, b"v", ts, tombstone=tombstone, max_siblings=10**6)
    small = lww_object(node, b"v", result.ts, tombstone=tombstone)
    assert sync(obj, small) == result.object
    assert result.ts >= ts


def test_a_delete_removes_what_it_read_and_keeps_a_concurrent_write():
    seen = causal_write(NOTHING, EMPTY, A, b"seen", T0).object
    ctx = read(seen, 0).context
    concurrent = causal_write(seen, EMPTY, B, b"concurrent", T0 + 1).object
    deleted = delete(seen, ctx, C, T0 + 2).object
    assert read(deleted, 0).values == [] and lww_winner(deleted, 0) is None
    merged = sync(deleted, concurrent)
    assert read(merged, 0).values == [b"concurrent"]
    assert sum(1 for s in merged.siblings if s.flags & TOMBSTONE) == 1


@pytest.mark.parametrize("value, expiry, tombstone", [
    (b"x", 0, False), (b"", 0, False), (bytearray(b"ba"), 0, False),
    (b"t", T0 // 1000 + 5, False), (b"", 0, True), (b"far", T0 // 1000 + (1 << 33), False)])
def test_encode_lww_is_the_encoding_of_the_lww_object(value, expiry, tombstone):
    assert encode_lww(A, value, T0, expiry, tombstone=tombstone) == \
        encode(lww_object(A, value, T0, expiry, tombstone=tombstone))


@pytest.mark.parametrize("obj", [
    lww_object(A, b"plain", T0), lww_object(A, b"", T0), lww_object(A, b"ttl", T0, T0 // 1000 + 9),
    lww_object(A, b"", T0, tombstone=True),
    causal_write(NOTHING, CausalContext(), A, b"causal", T0).object])
@pytest.mark.parametrize("epoch", [0, T0, T0 + 1])
def test_plain_value_reads_what_lww_winner_reads_or_defers(obj, epoch):
    data = encode(obj)
    winner = lww_winner(decode(data), T0 // 1000, epoch)
    value = plain_value(data, epoch)
    if value is not None:
        assert winner is not None and value == winner[0]
    elif data[0] == 0xA1:
        assert winner is None   # only a flushed plain register is left to the general path


def test_dead_since_is_the_latest_death_of_an_object_with_no_living_value():
    from fastdyn.cluster.object import dead_since, lww_object

    tomb = lww_object(1, b"", 5_000_000, tombstone=True)
    assert dead_since(tomb) == 5_000
    assert dead_since(lww_object(1, b"v", 5_000_000, 9_000)) == 9_000     # its expiry
    assert dead_since(lww_object(1, b"v", 5_000_000)) is None              # lives on
    both = causal_write(tomb, EMPTY, 2, b"v", 7_000_000, 8_000).object     # a sibling
    assert dead_since(both) == 8_000
    assert dead_since(causal_write(tomb, EMPTY, 2, b"v", 7_000_000).object) is None
    counted = counter_add(tomb, 3, 1, 6_000).object
    assert dead_since(counted) is None
