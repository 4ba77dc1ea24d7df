"""Model-based test: random operations on a Store against a dict, with reopen and merge."""
import shutil
import tempfile
import threading
import time

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fastdyn.storage import Store

KEYS = st.sampled_from([b"a", b"b", b"c", b"d", b"key-%d" % 5, "unicode-\u00e9", b"x" * 300])
VALUES = st.one_of(st.binary(max_size=64), st.binary(min_size=200, max_size=600),
                   st.just(b"z" * 2000))


def assert_live_is_exact(store):
    """Each segment's live bytes are its header plus the records the keydir points into it
    (plus tombstones a merge kept): what merge decisions and the merge's safety net rely on."""
    for seg_id, (live, kept, pointed) in store._segment_accounting().items():
        assert live == kept + pointed, (hex(seg_id), live, kept, pointed)


def as_key(k):
    return k.encode() if isinstance(k, str) else k


class Clock:
    def __init__(self):
        self.now = 1_700_000_000_000

    def __call__(self):
        return self.now


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="fastdyn-model-")
        self.clock = Clock()
        self.model = {}        # key -> (value, expiry_ms)
        self.store = self.open()

    def open(self):
        return Store(self.dir, clock=self.clock, segment_bytes=2048, compress_threshold=150,
                     auto_merge=False)

    def live(self):
        now = self.clock.now
        return {k: v for k, (v, e) in self.model.items() if e == 0 or e > now}

    @rule(key=KEYS, value=VALUES)
    def put(self, key, value):
        self.store[key] = value
        self.model[as_key(key)] = (value, 0)

    @rule(key=KEYS, value=VALUES, ttl_ms=st.integers(1, 5000))
    def set_with_ttl(self, key, value, ttl_ms):
        self.store.set(key, value, ttl=ttl_ms / 1000)
        self.model[as_key(key)] = (value, self.clock.now + ttl_ms)

    @rule(key=KEYS)
    def delete(self, key):
        existed = as_key(key) in self.live()
        assert self.store.delete(key) is existed
        self.model.pop(as_key(key), None)

    @rule(key=KEYS, delta=st.integers(-100, 3000), persist=st.booleans())
    def set_expiry(self, key, delta, persist):
        k = as_key(key)
        expiry = 0 if persist else self.clock.now + delta
        existed = k in self.live()
        assert self.store.set_expiry(key, expiry) is existed
        if existed:
            if expiry and expiry <= self.clock.now:
                del self.model[k]
            else:
                self.model[k] = (self.model[k][0], expiry)

    @rule(ms=st.integers(1, 3000))
    def advance_clock(self, ms):
        self.clock.now += ms

    @rule(n=st.integers(1, 10))
    def sweep(self, n):
        self.store.sweep_expired(n)

    @rule()
    def reopen(self):
        self.store.close()
        self.store = self.open()

    @rule()
    def merge(self):
        self.store.merge()

    @rule()
    def reopen_without_hints(self):
        self.store.close()
        import os
        for name in os.listdir(self.dir):
            if name.endswith(".hint"):
                os.unlink(os.path.join(self.dir, name))
        self.store = self.open()

    @precondition(lambda self: len(self.model) > 3)
    @rule()
    def clear(self):
        self.store.clear()
        self.model.clear()

    @invariant()
    def matches_model(self):
        live = self.live()
        assert len(self.store) == len(live)
        assert sorted(self.store) == sorted(live)
        for k, v in live.items():
            assert self.store[k] == v
            assert self.store.expiry_ms(k) == self.model[k][1]
        assert {k: v for k, v, _ in self.store.items()} == live
        for seg in self.store.stats()["segments"]:
            assert 0 <= seg["live_bytes"] <= seg["bytes"]
        assert_live_is_exact(self.store)

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


StoreMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
test_store_matches_dict_model = StoreMachine.TestCase


def test_merge_while_other_threads_read_and_write(tmp_path):
    """Background and explicit merges run while a writer and a reader work: the reader never
    misses a stable key nor sees a stale value of a key only the writer changes."""
    s = Store(tmp_path / "db", segment_bytes=16 << 10, merge_ratio=0.2, sync_interval_ms=5)
    stable = {b"stable-%d" % i: b"S%d" % i * 10 for i in range(300)}
    for k, v in stable.items():
        s[k] = v
    stop = threading.Event()
    errors = []

    def reader():
        while not stop.is_set():
            for k, v in stable.items():
                got = s.get(k)
                if got != v:
                    errors.append((k, got))
                    return

    def merger():
        while not stop.is_set():
            s.merge()
            time.sleep(0.005)

    threads = [threading.Thread(target=reader), threading.Thread(target=merger)]
    for t in threads:
        t.start()
    model = {}
    try:
        deadline = time.monotonic() + 4.0
        i = 0
        while time.monotonic() < deadline:
            k = b"hot-%d" % (i % 200)
            if i % 5 == 4:
                s.delete(k)
                model.pop(k, None)
            else:
                v = b"v%d" % i * 20
                s[k] = v
                model[k] = v
            probe = b"hot-%d" % ((i * 7) % 200)
            assert s.get(probe) == model.get(probe)
            i += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert s.stats()["merges"] > 1
    s.close()
    with Store(tmp_path / "db") as s:
        assert {k: s[k] for k in s} == {**stable, **model}
