"""Membership as a sans-IO core: records and their merge, persistence, gossip exchanges and
their codec, and the phi accrual failure detector."""
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdyn.cluster import gossip as g
from fastdyn.cluster.failure_detector import PhiAccrual
from fastdyn.cluster.membership import (LEAVING, REMOVED, STATUSES, VALID, Member, Members,
                                        merge_member)
from fastdyn.errors import ProtocolError
from fastdyn.ring import Ring

records = st.builds(Member, st.just("x"), st.sampled_from(["h:1", "h:2", "h:3"]),
                    st.integers(0, 3), st.integers(0, 3), st.sampled_from(STATUSES),
                    st.integers(0, 3))


@given(records, records, records)
def test_merge_is_a_semilattice(a, b, c):
    assert merge_member(a, b) == merge_member(b, a)
    assert merge_member(a, merge_member(b, c)) == merge_member(merge_member(a, b), c)
    assert merge_member(a, a) == a
    m = merge_member(a, b)
    assert m.liveness() == max(a.liveness(), b.liveness())
    assert m.standing() == max(a.standing(), b.standing())


def view(tmp_path, name, partitions=64, clock=100):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    return Members(str(d), name, f"127.0.0.1:{ord(name[0])}", partitions, now_s=lambda: clock)


def test_a_restart_keeps_the_view_and_raises_the_generation(tmp_path):
    a = view(tmp_path, "a")
    seen = []
    a.on_change(seen.append)
    b = Member("b", "127.0.0.1:2", 50, 7, VALID, 0)
    assert a.merge([b]) == ([], ["b"])
    assert a.ring == Ring(["a", "b"], 64) and seen == [a.ring]
    assert a.merge([b._replace(heartbeat=8)]) == (["b"], [])      # liveness only
    assert a.merge([b._replace(heartbeat=8)]) == ([], [])         # idempotent
    assert a.merge([b._replace(heartbeat=8, address="127.0.0.1:9")]) == ([], ["b"])  # moved
    assert a.address("b") == "127.0.0.1:9" and len(seen) == 1
    generation = a.own().generation

    again = view(tmp_path, "a", clock=5)          # the wall clock went back: still higher
    assert again.names() == ("a", "b") and again.address("b") == "127.0.0.1:9"
    assert again.own().generation == generation + 1 and again.own().heartbeat == 0
    assert again.beat().heartbeat == 1


def test_status_changes_spread_and_outrank_heartbeats(tmp_path):
    a, b = view(tmp_path, "a"), view(tmp_path, "b")
    a.merge([b.own()])
    b.merge([a.own()])
    left = a.set_status("b", LEAVING)
    assert left.version == 1
    b.beat()
    b.beat()
    b.merge([left])                 # b hears that it is leaving: it keeps its own liveness
    assert b.own().status == LEAVING and b.own().heartbeat == 2
    a.merge([b.own()])
    assert a.records["b"] == b.own()
    a.set_status("b", REMOVED)
    assert a.names() == ("a",)
    assert json.load(open(a.path))["members"]["b"]["status"] == REMOVED


def test_a_record_of_itself_from_before_a_wipe_is_outranked(tmp_path):
    a = view(tmp_path, "a", clock=100)
    a.merge([Member("a", "old:1", 500, 40, VALID, 0)])   # others remember a later generation
    assert a.own().generation == 501 and a.own().address == "127.0.0.1:97"


def test_other_partition_count_is_refused(tmp_path):
    view(tmp_path, "a")
    with pytest.raises(ValueError, match="64 partitions, not 256"):
        view(tmp_path, "a", partitions=256)


def test_damaged_member_file_is_a_clear_error(tmp_path):
    (tmp_path / "members.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable member list"):
        Members(str(tmp_path), "a", "x:1", 64)
    (tmp_path / "members.json").write_text('{"members": {"b": {"address": "x", "status": "z"}}}')
    with pytest.raises(ValueError, match="unreadable member list"):
        Members(str(tmp_path), "a", "x:1", 64)


def test_a_static_member_list_of_an_earlier_release_opens(tmp_path):
    (tmp_path / "members.json").write_text(json.dumps(
        {"partitions": 64, "members": {"a": "x:1", "b": "x:2"}}))
    m = Members(str(tmp_path), "a", "x:1", 64)
    assert m.names() == ("a", "b") and m.status("b") == VALID


# -- gossip ------------------------------------------------------------------------------------
def exchange(a: g.Gossip, b: g.Gossip) -> int:
    """One SYN/ACK/PUSH exchange from a to b in memory; bytes sent."""
    syn = a.syn()
    ack = b.answer_syn(syn)
    _, push, _, _ = a.on_ack(ack)
    if push is not None:
        b.on_push(push)
    return len(syn) + len(ack) + len(push or b"")


def test_two_groups_converge_once_linked(tmp_path):
    nodes = {n: g.Gossip(view(tmp_path, n), rng=random.Random(1)) for n in "abcdef"}
    for x, y in (("a", "b"), ("b", "c"), ("d", "e"), ("e", "f")) * 2:
        exchange(nodes[x], nodes[y])
    assert nodes["a"].members.names() == ("a", "b", "c")
    assert nodes["f"].members.names() == ("d", "e", "f")
    exchange(nodes["c"], nodes["d"])            # one link between the groups
    rng = random.Random(2)
    for _ in range(60):
        x, y = rng.sample(sorted(nodes), 2)
        exchange(nodes[x], nodes[y])
    views = {n: dict(gs.members.records) for n, gs in nodes.items()}
    assert all(v == views["a"] for v in views.values())
    assert nodes["a"].members.ring == Ring(list("abcdef"), 64)


def test_exchanges_send_only_differences(tmp_path):
    a, b = g.Gossip(view(tmp_path, "a")), g.Gossip(view(tmp_path, "b"))
    exchange(a, b)
    ack = b.answer_syn(a.syn())
    assert g.unpack_ack(ack)[1:] == ([], [])      # nothing new either way
    a.members.beat()
    name, records, wanted = g.unpack_ack(b.answer_syn(a.syn()))
    assert (name, records, wanted) == ("b", [], ["a"])


def test_a_syn_of_another_partition_count_is_refused(tmp_path):
    a, b = g.Gossip(view(tmp_path, "a", partitions=64)), g.Gossip(view(tmp_path, "b", 128))
    with pytest.raises(g.PartitionMismatch, match="128 partitions and this cluster has 64"):
        a.answer_syn(b.syn())


def test_targets_are_live_members_and_seeds(tmp_path):
    a = view(tmp_path, "a")
    a.merge([Member("b", "B", 1, 0, VALID, 0), Member("c", "C", 1, 0, VALID, 0),
             Member("d", "D", 1, 0, REMOVED, 1)])
    gs = g.Gossip(a, seeds=["S"], up=lambda n: n != "c", rng=random.Random(3))
    seen = set()
    for _ in range(200):
        targets = gs.targets()
        assert targets[0] == "B" and len(set(targets)) == len(targets)
        seen.update(targets)
    assert seen == {"B", "C", "S"}                 # never the removed member
    assert a.own().heartbeat == 200
    gs.forget_seed("S")
    assert gs.seeds == []


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_gossip_decoding_refuses_garbage(data):
    for unpack in (g.unpack_syn, g.unpack_ack, g.unpack_push):
        try:
            unpack(data)
        except ProtocolError:
            pass


def test_gossip_codec_round_trips_and_is_strict():
    r = Member("n", "h:1", 3, 4, LEAVING, 5)
    assert g.unpack_push(g.pack_push([r])) == [r]
    assert g.unpack_ack(g.pack_ack("me", [r], ["x"])) == ("me", [r], ["x"])
    assert g.unpack_syn(g.pack_syn(64, "me", [r])) == (64, "me", {"n": ((3, 4), (5, 2))})
    with pytest.raises(ProtocolError, match="trailing"):
        g.unpack_push(g.pack_push([r]) + b"x")
    with pytest.raises(ProtocolError, match="status 9"):
        g.unpack_push(g.pack_push([r])[:-1] + b"\x09")


# -- failure detector --------------------------------------------------------------------------
def test_phi_rises_with_silence_and_an_answer_clears_it():
    d = PhiAccrual(threshold=8)
    t = 0.0
    rng = random.Random(4)
    for _ in range(30):
        t += rng.uniform(0.8, 1.2)
        d.heartbeat("b", t)
    assert not d.suspects("b", t + 1.0)
    assert d.phi("b", t + 1.5) < d.phi("b", t + 2.0) < d.phi("b", t + 2.5)
    assert d.suspects("b", t + 4.0) and d.silence("b", t + 4.0) == pytest.approx(4.0)
    d.alive("b", t + 4.0)
    assert not d.suspects("b", t + 4.5)
    assert d.phi("never", 100.0) == 0.0 and d.phi("b", t + 1e6) <= 300.0


def test_the_gossip_simulation_spreads_a_join_and_detects_a_failure():
    """bench/bench_gossip.py drives this core over a simulated network; a small run of it."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    import bench_gossip

    r = bench_gossip.measure(30, 0.01, seed=3, max_rounds=40)
    assert r["rounds_to_spread_a_join"] is not None and r["rounds_to_spread_a_join"] <= 10
    assert r["rounds_until_all_suspect_a_failure"] is not None
    assert 2.5 <= r["messages_per_node_round"] <= 4      # SYN, ACK and mostly a PUSH
