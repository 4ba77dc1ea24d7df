"""Dotted version vectors: causal contexts, client contexts, and the causal invariants
(no lost write, concurrent siblings, bounded siblings) on simulated replicas."""
import pytest
from hypothesis import given, settings, strategies as st

from fastdyn.cluster.dvv import (EMPTY, CausalContext, decode_context, encode_context,
                                 node_id)
from fastdyn.cluster.object import NOTHING, causal_write, lww_object, read, sync
from fastdyn.errors import BadContext

from object_model import NODES, T0, Cluster, merge_all, rejects_or_round_trips

A, B, _ = NODES

contexts = st.builds(
    CausalContext.canonical,
    st.one_of(st.just((0, 0)), st.tuples(st.integers(1, 6), st.sampled_from((1, 2, 3)))),
    st.dictionaries(st.sampled_from((1, 2, 3)), st.integers(1, 6), max_size=3),
    st.lists(st.tuples(st.sampled_from((1, 2, 3)), st.integers(1, 6)), max_size=4))
dots = st.tuples(st.sampled_from((1, 2, 3)), st.integers(1, 7))


# -- the causal context ---------------------------------------------------------------------
def covered(ctx):
    return {(i, k) for i in (1, 2, 3) for k in range(1, 8) if ctx.covers(i, k)}


@given(contexts, contexts)
def test_join_covers_exactly_the_union(a, b):
    assert covered(a.join(b)) == covered(a) | covered(b)
    assert a.join(b) == b.join(a)


@given(contexts, contexts, contexts)
def test_join_is_associative_and_idempotent(a, b, c):
    assert a.join(b).join(c) == a.join(b.join(c))
    assert a.join(a) == a


@given(contexts, dots)
def test_with_dot_adds_exactly_one_dot(ctx, dot):
    assert covered(ctx.with_dot(*dot)) == covered(ctx) | {dot}


def test_mark_covers_every_older_timestamp_node_pair():
    ctx = CausalContext((5, 2))
    assert ctx.covers(3, 4) and ctx.covers(1, 5) and ctx.covers(2, 5)
    assert not ctx.covers(3, 5) and not ctx.covers(1, 6)


@given(contexts)
def test_context_bytes_round_trip(ctx):
    data = encode_context(ctx)
    assert decode_context(data) == ctx
    assert (data == b"") == ctx.is_empty()


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_malformed_contexts_raise_bad_context(data):
    rejects_or_round_trips(decode_context, encode_context, BadContext, data)


@given(contexts.filter(lambda c: not c.is_empty()), st.data())
def test_corrupted_contexts_raise_bad_context_or_round_trip(ctx, data):
    raw = bytearray(encode_context(ctx))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(1, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut]), bytes(raw) + b"\x00"):
        rejects_or_round_trips(decode_context, encode_context, BadContext, candidate)


@pytest.mark.parametrize("bad", ["text", 5, None])
def test_a_context_must_be_bytes(bad):
    with pytest.raises(BadContext):
        decode_context(bad)


def test_bad_context_is_a_value_error():
    assert issubclass(BadContext, ValueError)


def test_node_ids_are_stable_64_bit_and_distinct():
    assert node_id("127.0.0.1:17379") == node_id("127.0.0.1:17379")
    assert 0 <= node_id("a") < 1 << 64
    assert len({node_id(f"node-{i}") for i in range(1000)}) == 1000
    with pytest.raises(ValueError):
        node_id("")


# -- what DYN.PUT returns -------------------------------------------------------------------
def test_put_context_never_covers_a_concurrent_value_the_coordinator_holds():
    other = causal_write(NOTHING, EMPTY, A, b"other client", T0)
    mine = causal_write(other.object, EMPTY, A, b"mine", T0 + 1)
    assert not mine.context.covers(A, other.ts)
    again = causal_write(mine.object, mine.context, A, b"mine again", T0 + 2)
    assert sorted(read(again.object, 0).values) == [b"mine again", b"other client"]
    assert covered_dots(again.context) == {(A, mine.ts), (A, again.ts)}


def covered_dots(ctx):
    return {(i, k) for i, k in ctx.cloud} | {(i, n) for i, n in ctx.vv}


def test_put_context_is_the_put_context_plus_the_new_dot():
    first = causal_write(NOTHING, EMPTY, A, b"1", T0)
    ctx = read(first.object, 0).context
    second = causal_write(first.object, ctx, B, b"2", T0 + 5)
    assert second.context == ctx.with_dot(B, second.ts)


def test_a_context_from_the_far_future_is_refused():
    ctx = CausalContext((0, 0), ((A, T0 + 10**12),))
    with pytest.raises(BadContext):
        causal_write(NOTHING, ctx, B, b"x", T0)


def test_a_write_is_stamped_above_everything_its_context_covers():
    ctx = CausalContext((T0 + 1000, A))
    result = causal_write(NOTHING, ctx, B, b"x", T0)
    assert result.ts == T0 + 1001


# -- invariant 1: no lost acknowledged causal write -----------------------------------------
ops = st.lists(st.tuples(st.sampled_from(["write", "read", "deliver"]),
                         st.integers(0, 3), st.integers(0, 2), st.integers(-3, 3)),
               max_size=40)


@given(ops, st.lists(st.integers(0, 100), max_size=80))
def test_no_acknowledged_causal_write_is_lost(history, order):
    cluster = Cluster()
    contexts = [EMPTY] * 4            # per client: the context of its last read or write
    acknowledged = {}                 # dot -> value
    superseding = []                  # the contexts writes were made with
    for op, client, index, skew in history:
        if op == "deliver":
            if cluster.in_flight:
                cluster.deliver(client + index)
        elif op == "read":
            contexts[client] = read(cluster.replicas[index], 0).context
        else:
            value = b"%d:%d" % (client, len(acknowledged))
            superseding.append(contexts[client])
            result = cluster.causal_write(index, contexts[client], value, skew)
            acknowledged[(cluster.nodes[index], result.ts)] = value
            contexts[client] = result.context
        # at every moment every acknowledged write not yet replaced is on some replica
        union = merge_all(cluster.replicas)
        held = {(s.node, s.ts) for s in union.siblings}
        for dot in acknowledged:
            if not any(ctx.covers(*dot) for ctx in superseding):
                assert dot in held
    cluster.deliver_all(order)
    for replica in cluster.replicas:
        values = {(s.node, s.ts): s.value for s in replica.siblings}
        for dot, value in acknowledged.items():
            if not any(ctx.covers(*dot) for ctx in superseding):
                assert values.get(dot) == value


# -- invariant 2: concurrent causal writes become siblings ----------------------------------
@given(st.integers(0, 2), st.integers(0, 2), st.booleans())
def test_concurrent_writes_both_survive(i, j, shared_read):
    cluster = Cluster()
    base = cluster.causal_write(0, EMPTY, b"base")
    cluster.deliver_all([])
    ctx = base.context if shared_read else EMPTY
    cluster.causal_write(i, ctx, b"x")
    cluster.causal_write(j, ctx, b"y")
    cluster.deliver_all([])
    for replica in cluster.replicas:
        values = sorted(read(replica, 0).values)
        assert values == ([b"x", b"y"] if shared_read else [b"base", b"x", b"y"])


# -- invariant 3: bounded siblings ----------------------------------------------------------
@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 2), st.integers(0, 4)),
                min_size=1, max_size=120),
       st.randoms(use_true_random=False))
def test_seven_clients_writing_with_their_own_contexts_never_exceed_seven_siblings(
        writes, rnd):
    cluster = Cluster()
    contexts = [EMPTY] * 7
    last = {}
    for client, index, deliveries in writes:
        value = b"client %d write %d" % (client, len(last))
        result = cluster.causal_write(index, contexts[client], value, skew=rnd.randint(-3, 3))
        contexts[client] = result.context
        last[client] = value
        for _ in range(deliveries):
            if cluster.in_flight:
                cluster.deliver(rnd.randrange(len(cluster.in_flight)))
        assert all(len(r.siblings) <= 7 for r in cluster.replicas)
    cluster.deliver_all([rnd.randrange(1000) for _ in range(len(cluster.in_flight))])
    cluster.exchange_everything()
    for replica in cluster.replicas:
        values = read(replica, 0).values
        assert len(values) <= 7
        assert set(last.values()) <= set(values)
        assert len(values) == len(last)


def test_clients_reusing_a_stale_read_context_are_the_unbounded_case():
    # the same scenario written with the context of one old read: each write is concurrent
    # with every other, so siblings grow with the writes (what the DVV rule prevents above)
    cluster = Cluster()
    stale = EMPTY
    for n in range(10):
        cluster.causal_write(n % 3, stale, b"%d" % n)
    cluster.deliver_all([])
    assert len(cluster.replicas[0].siblings) == 10


def test_a_put_through_a_slow_node_after_reading_a_fast_nodes_set_is_not_lost():
    # a SET stamped by a node 10 s ahead; the client reads it and writes through a node whose
    # own replica has not received the SET yet
    fast_set = lww_object(A, b"set", T0 + 10_000_000)
    ctx = read(fast_set, 0).context
    put = causal_write(NOTHING, ctx, B, b"put", T0)
    assert put.ts > T0 + 10_000_000
    for merged in (sync(fast_set, put.object), sync(put.object, fast_set)):
        assert read(merged, 0).values == [b"put"]
