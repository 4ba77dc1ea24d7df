"""The pure quorum decisions: active preference lists, write and read cores."""
from hypothesis import given, strategies as st

from fastdyn.cluster.apl import Target, active_targets, effective
from fastdyn.cluster.get_core import GetCore
from fastdyn.cluster.put_core import FAILED, OK, PENDING, PutCore
from fastdyn.ring import Ring

NODES = [f"n{i}" for i in range(6)]


def test_effective_clamps_to_members():
    assert effective(3, 2, 2, 1) == (1, 1, 1)
    assert effective(3, 2, 2, 2) == (2, 2, 2)
    assert effective(3, 2, 2, 5) == (3, 2, 2)
    assert effective(3, 3, 1, 5) == (3, 3, 1)


def test_all_reachable_targets_are_the_primaries():
    full = Ring(NODES).preference_list(b"k", len(NODES))
    assert active_targets(full, 3, lambda n: True) == [Target(n, None) for n in full[:3]]


def test_unreachable_primary_is_replaced_by_the_next_reachable_fallback_with_a_hint():
    full = Ring(NODES).preference_list(b"k", len(NODES))
    down = {full[1], full[3]}
    targets = active_targets(full, 3, lambda n: n not in down)
    assert targets == [Target(full[0], None), Target(full[2], None), Target(full[4], full[1])]


def test_too_few_reachable_gives_fewer_targets():
    full = Ring(NODES[:3]).preference_list(b"k", 3)
    targets = active_targets(full, 3, lambda n: n == full[2])
    assert targets == [Target(full[2], None)]


@given(st.sets(st.sampled_from(NODES)), st.integers(1, 6), st.binary(min_size=1, max_size=8))
def test_targets_are_distinct_reachable_and_hint_only_for_down_primaries(down, n, key):
    full = Ring(NODES).preference_list(key, len(NODES))
    targets = active_targets(full, n, lambda x: x not in down)
    nodes = [t.node for t in targets]
    assert len(set(nodes)) == len(nodes)
    assert not set(nodes) & down
    assert len(targets) == min(n, len(NODES) - len(down))
    for t in targets:
        if t.hint_for is None:
            assert t.node in full[:n]
        else:
            assert t.hint_for in down and t.hint_for in full[:n] and t.node in full[n:]


def test_put_core_succeeds_at_w():
    core = PutCore(3, 2)
    assert core.ack() == PENDING
    assert core.ack() == OK
    assert core.fail() == OK          # a late failure changes nothing


def test_put_core_fails_when_w_is_out_of_reach():
    core = PutCore(3, 2)
    assert core.fail() == PENDING
    assert core.fail() == FAILED
    assert "0 of 2" in core.error() and "3 reachable" in core.error()


def test_put_core_with_too_few_targets_fails_at_once():
    assert PutCore(1, 2).outcome == FAILED


def test_put_core_waits_for_durable_acks():
    core = PutCore(3, 2, dw=1)
    core.ack(False)
    assert core.ack(False) == PENDING
    assert core.ack(True) == OK
    core = PutCore(2, 1, dw=2)
    core.ack(True)
    assert core.fail() == FAILED
    assert "made the write durable" in core.error()


def merge(objs):
    present = [o for o in objs if o is not None]
    return max(present) if present else None


def test_get_core_answers_at_r_with_the_merge():
    core = GetCore(3, 2, merge)
    assert core.reply("a", b"1") == PENDING
    assert core.reply("b", b"2") == OK
    assert core.result == b"2"
    assert not core.finished
    core.reply("c", None)
    assert core.finished
    assert core.repairs() == (b"2", ["a", "c"])


def test_get_core_fails_when_r_is_out_of_reach():
    core = GetCore(3, 2, merge)
    core.fail("a")
    core.reply("b", b"x")
    assert core.fail("c") == FAILED
    assert "1 of 2" in core.error()


def test_get_core_no_repair_when_all_absent_or_equal():
    core = GetCore(2, 1, merge)
    core.reply("a", None)
    core.reply("b", None)
    assert core.repairs() == (None, [])
    core = GetCore(2, 2, merge)
    core.reply("a", b"v")
    core.reply("b", b"v")
    assert core.repairs() == (b"v", [])
