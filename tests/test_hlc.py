"""The hybrid logical clock: monotone, past everything observed, wall clock injectable."""
import pytest
from hypothesis import given, strategies as st

from fastdyn.cluster.hlc import HybridClock, MAX_TIMESTAMP, wall_clock_us
from fastdyn.errors import ClockSkewTooLarge


class FakeWall:
    def __init__(self, readings):
        self.readings = list(readings)
        self.i = 0

    def __call__(self):
        value = self.readings[min(self.i, len(self.readings) - 1)]
        self.i += 1
        return value


ops = st.lists(st.one_of(st.tuples(st.just("now"), st.integers(0, 10**6)),
                         st.tuples(st.just("observe"), st.integers(0, 2 * 10**6))),
               max_size=60)


@given(ops)
def test_now_never_goes_backwards_and_passes_every_observed_stamp(history):
    walls = [w for op, w in history if op == "now"] or [0]
    clock = HybridClock(FakeWall(walls))
    last_seen = -1
    for op, x in history:
        if op == "now":
            ts = clock.now()
            assert ts > last_seen
            last_seen = ts
        else:
            clock.observe(x)
            last_seen = max(last_seen, x)


def test_now_follows_the_wall_clock_when_it_is_ahead():
    clock = HybridClock(FakeWall([100, 100, 100, 500]))
    assert [clock.now() for _ in range(4)] == [100, 101, 102, 500]


def test_a_backwards_wall_clock_does_not_move_the_clock_back():
    clock = HybridClock(FakeWall([1000, 10]))
    assert clock.now() == 1000
    assert clock.now() == 1001


def test_observe_then_now_is_greater():
    clock = HybridClock(FakeWall([5]))
    clock.observe(10**12)
    assert clock.now() == 10**12 + 1
    assert clock.last == 10**12 + 1


def test_two_clocks_in_one_process_are_independent():
    a, b = HybridClock(FakeWall([1])), HybridClock(FakeWall([1]))
    a.observe(10**9)
    assert b.now() == 1


def test_skew_guard_refuses_far_future_stamps_and_keeps_the_clock():
    clock = HybridClock(FakeWall([1000]), max_skew_us=500)
    clock.observe(1400)
    with pytest.raises(ClockSkewTooLarge):
        clock.observe(1600)
    assert clock.last == 1400


@pytest.mark.parametrize("bad", [-1, MAX_TIMESTAMP + 1])
def test_out_of_range_stamps_are_refused(bad):
    with pytest.raises(ClockSkewTooLarge):
        HybridClock().observe(bad)


def test_default_wall_clock_is_microseconds():
    import time
    ts = HybridClock().now()
    assert abs(ts - time.time() * 1e6) < 60e6


def test_the_clock_refuses_to_pass_the_greatest_stamp():
    clock = HybridClock(FakeWall([MAX_TIMESTAMP, MAX_TIMESTAMP]))
    assert clock.now() == MAX_TIMESTAMP
    with pytest.raises(ClockSkewTooLarge):
        clock.now()
    with pytest.raises(ClockSkewTooLarge):
        HybridClock(FakeWall([MAX_TIMESTAMP + 1])).now()


def test_the_system_clock_shifted_by_skew():
    clock = HybridClock()
    before = wall_clock_us()
    clock.skew_us = 3_600_000_000      # an hour ahead, as DYN.FAULT CLOCK sets it
    assert clock.now() >= before + 3_600_000_000
