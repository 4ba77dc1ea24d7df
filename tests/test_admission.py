"""Admission control's core (AIMD budget from latency samples) and its pacing arithmetic."""
import asyncio
import tempfile
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastdyn
from fastdyn.cluster.admission import (KINDS, MAX_MERGE_PAUSE_US, SLICE_WAIT_MAX_S, Admission,
                                       AdmissionController)
from fastdyn.server.config import ServerConfig, load_toml

PROBE = 0.0105      # probes run a little late, never early


def drive(controller, latencies_ms, start=0.0, per_period=10):
    """Feed `latencies_ms` as probes ~10 ms apart, asking for a decision every
    `per_period` probes (about the controller's period); returns the factor after each and
    the time reached."""
    now = start
    factors = []
    for i, latency in enumerate(latencies_ms):
        now += PROBE
        controller.observe(latency, now)
        if (i + 1) % per_period == 0:
            factors.append(controller.update(now))
    return factors, now


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1000), min_size=1, max_size=400),
       st.floats(min_value=0.1, max_value=50), st.floats(min_value=0.001, max_value=1))
def test_factor_stays_within_floor_and_one(latencies, bound, floor):
    c = AdmissionController(bound, floor=floor)
    factors, _ = drive(c, latencies)
    assert all(floor <= f <= 1.0 for f in factors)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1000), min_size=1, max_size=300))
def test_disabled_factor_is_always_one(latencies):
    c = AdmissionController(2.0, enabled=False)
    factors, _ = drive(c, latencies)
    assert factors == [1.0] * len(factors)


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=2.01, max_value=8.0), st.integers(min_value=10, max_value=60))
def test_sustained_latency_above_the_bound_lowers_the_factor_to_the_floor(latency, periods):
    c = AdmissionController(2.0, floor=0.05)
    factors, _ = drive(c, [latency] * (10 * periods))
    assert factors[0] < 1.0
    assert all(b <= a for a, b in zip(factors, factors[1:]))     # never up meanwhile
    if periods >= 30:       # halved at most every 0.5 s: 1 -> 0.05 within 3 s
        assert factors[-1] == 0.05


def test_far_above_the_bound_goes_to_the_floor_at_once():
    c = AdmissionController(2.0, floor=0.01)
    factors, _ = drive(c, [50.0] * 10)
    assert factors == [0.01]


def test_recovers_when_latency_drops():
    c = AdmissionController(2.0)
    factors, now = drive(c, [20.0] * 50)
    assert factors[-1] == c.floor
    # the window still holds the high samples for a second, then the factor grows back to 1
    factors, _ = drive(c, [0.5] * 400, start=now)
    assert factors[-1] == 1.0
    assert all(b >= a for a, b in zip(factors, factors[1:]))


def test_one_late_probe_is_not_the_p99():
    c = AdmissionController(2.0)
    factors, _ = drive(c, [0.3] * 50 + [30.0] + [0.3] * 49)
    assert factors[-1] == 1.0 and c.decreases == 0


def test_no_samples_no_change():
    c = AdmissionController(2.0)
    assert c.update(0.0) == 1.0
    assert c.update(10.0) == 1.0


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        AdmissionController(0)
    with pytest.raises(ValueError):
        AdmissionController(2.0, floor=0)


class FixedController:
    enabled = True
    bound_ms = 2.0
    p99_ms = 0.0
    decreases = 0

    def __init__(self, factor):
        self.factor = factor


def test_pacing_follows_rate_times_factor():
    a = Admission(FixedController(1.0), {"handoff": 1000})
    assert a.delay("handoff", 500) == 0.0         # the first batch goes at once
    wait = a.delay("handoff", 500)                # the next after 500 bytes at 1000 B/s
    assert 0.45 < wait <= 0.5
    a.controller.factor = 0.1
    a._next["handoff"] = 0.0
    a.delay("handoff", 100)
    assert 0.9 < a.delay("handoff", 100) <= 1.0   # 100 bytes at 100 B/s
    stats = a.info()
    assert stats["admission_handoff_bytes"] == 1200
    assert stats["admission_handoff_waits"] == 2


def test_time_slices_below_full_budget():
    a = Admission(FixedController(1.0), {})
    assert a.delay("hints", 1 << 30) == 0.0       # no bound, full budget: never waits
    assert a.delay("hints", 1 << 30) == 0.0
    a.controller.factor = 0.25
    a._resumed["hints"] = time.monotonic() - 0.02     # worked 20 ms since it went on
    assert 0.06 <= a.delay("hints", 100) <= 0.07      # waits 3x that: runs 1/4 of the time
    a._resumed["hints"] = time.monotonic() - 10       # idle since: nothing to make up for
    assert a.delay("hints", 100) == 0.0
    a.controller.factor = 0.001
    a._resumed["hints"] = time.monotonic() - 0.05
    assert a.delay("hints", 100) == SLICE_WAIT_MAX_S


def test_pace_awaits_and_counts_every_kind():
    a = Admission(FixedController(1.0), dict.fromkeys(KINDS, 10_000))

    async def run():
        for kind in KINDS:
            await a.pace(kind, 100)
            await a.pace(kind, 100)
    asyncio.run(run())
    info = a.info()
    for kind in ("hints", "handoff"):
        assert info[f"admission_{kind}_bytes"] == 200
        assert info[f"admission_{kind}_waits"] == 1
        assert info[f"admission_{kind}_wait_ms"] >= 5


def test_factor_sets_the_stores_merge_pause():
    with tempfile.TemporaryDirectory() as d, fastdyn.open(d) as store:
        c = AdmissionController(2.0, floor=0.001)
        a = Admission(c, {}, stores=[store])
        c.factor = 0.5
        a._slow_merges()
        assert store.merge_pause_us > 0
        c.factor = c.floor
        a._slow_merges()
        assert store.merge_pause_us == MAX_MERGE_PAUSE_US
        c.factor = 1.0
        a._slow_merges()
        assert store.merge_pause_us == 0


def test_a_slowed_merge_still_completes():
    with tempfile.TemporaryDirectory() as d, \
            fastdyn.open(d, auto_merge=False, segment_bytes=1 << 16) as store:
        for i in range(3000):
            store[b"k%d" % (i % 300)] = b"v" * 100
        store.merge_pause_us = 200
        assert store.merge() > 0
        assert store.merge_paused_us > 0 and store.merge_written > 0
        assert all(store[b"k%d" % i] == b"v" * 100 for i in range(300))


def test_options_from_toml(tmp_path):
    path = tmp_path / "f.toml"
    path.write_text("admission_control = false\nadmission-p99-ms = 5\n"
                    "background_bytes_per_s = 1000\n")
    cfg = ServerConfig(**load_toml(str(path))).finish()
    assert (cfg.admission_control, cfg.admission_p99_ms, cfg.background_bytes_per_s) == \
        (False, 5.0, 1000)
