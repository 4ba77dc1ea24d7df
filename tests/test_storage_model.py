"""Model-based test: random operations on a Store against a dict, with reopen and merge."""
import os
import random
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


def merge_stats(store):
    return {k: v for k, v in store.stats().items() if k.startswith("merge_")}


@pytest.mark.parametrize("seed", range(4))
def test_random_overwrites_deletes_ttls_merges_and_reopens(tmp_path, seed):
    """Many small segments, overwrites, deletes and TTLs, merges explicit and in the
    background (a keydir walk or a scan, whichever they pick), reopens: every key reads back
    its last value, deleted and expired keys stay absent, live bytes stay exact."""
    rnd = random.Random(seed)
    clock = Clock()
    path = tmp_path / "db"

    def open_store():
        return Store(path, clock=clock, segment_bytes=4096, merge_ratio=0.3, auto_merge=False,
                     compress_threshold=0, sync="never")

    s = open_store()
    model = {}          # key -> (value, expiry)
    keys = [b"k%03d" % i for i in range(rnd.choice([40, 150, 400]))]
    walked = scanned = 0
    for step in range(3000):
        k = rnd.choice(keys)
        r = rnd.random()
        if r < 0.6:
            v = b"%d-%d" % (step, seed) * rnd.randrange(1, 12)
            s[k] = v
            model[k] = (v, 0)
        elif r < 0.75:
            v = b"t%d" % step
            ttl = rnd.randrange(1, 4000)
            s.put(k, v, clock.now + ttl)
            model[k] = (v, clock.now + ttl)
        elif r < 0.9:
            s.delete(k)
            model.pop(k, None)
        elif r < 0.95:
            clock.now += rnd.randrange(1, 2000)
        elif r < 0.97:
            s.merge()
        elif r < 0.99:
            s._background_merge()          # what the merge thread runs: segments past the ratio
        else:
            walked += s.stats()["merge_walked_segments"]
            scanned += s.stats()["merge_scanned_segments"]
            s.close()
            s = open_store()
        if step % 100 == 0:
            assert_live_is_exact(s)
    s.merge()
    assert_live_is_exact(s)
    walked += s.stats()["merge_walked_segments"]
    scanned += s.stats()["merge_scanned_segments"]
    s.close()
    assert walked > 0 and scanned > 0      # both paths were exercised
    for attempt in range(2):               # from hints, then from the data files alone
        with open_store() as s:
            live = {k: v for k, (v, e) in model.items() if e == 0 or e > clock.now}
            assert {k: s[k] for k in s} == live
            for k in keys:
                assert (k in s) == (k in live)
            assert_live_is_exact(s)
        for name in os.listdir(path):
            if name.endswith(".hint"):
                os.unlink(path / name)


def fill(s, keys, rounds, tag=b"v"):
    for r in range(rounds):
        for k in keys:
            s[k] = (tag + b"%d" % r) * 20


def test_merge_walks_the_keydir_when_no_tombstone_can_matter(tmp_path):
    """Overwrites only: the merge finds the live records by walking the keydir, copies each
    once and leaves every victim with nothing pointing into it."""
    keys = [b"key-%04d" % i for i in range(300)]
    with Store(tmp_path / "db", segment_bytes=4096, auto_merge=False) as s:
        fill(s, keys, 10)
        fill(s, keys[::2], 1, b"w")     # the last full round is half dead: half of it is copied
        n = s.merge()
        st = merge_stats(s)
        assert n > 0 and st["merge_walked_segments"] == n and st["merge_scanned_segments"] == 0
        assert 0 < st["merge_copied_records"] <= len(keys)
        assert_live_is_exact(s)
        for seg in s.stats()["segments"]:
            if not seg["active"]:
                assert seg["dead_bytes"] == 0
    with Store(tmp_path / "db", auto_merge=False) as s:
        assert {k: s[k] for k in s} == {k: (b"w0" if i % 2 == 0 else b"v9") * 20
                                        for i, k in enumerate(keys)}


def sealed_after(s, last):
    """Sealed segment slots added after slot `last` (slots are never reused)."""
    return [si for si in s._mergeable(True) if si > last]


def test_merge_scans_a_victim_whose_tombstones_must_be_kept(tmp_path):
    """A deleted key's old record sits in a segment the merge leaves alone: the tombstone in
    the merged segment must be copied, so that victim is scanned, not walked; after reopen
    the key is still deleted."""
    with Store(tmp_path / "db", segment_bytes=4096, auto_merge=False) as s:
        fill(s, [b"old-%d" % i for i in range(60)], 1)       # segments A: not merged
        last_old = max(s._unhinted())
        s.delete(b"old-3")
        fill(s, [b"hot-%d" % i for i in range(40)], 6)       # B...: overwrites and the tombstone
        s._merge_segments(sealed_after(s, last_old))
        st = merge_stats(s)
        assert st["merge_scanned_segments"] >= 1
        assert st["merge_walked_segments"] >= 1              # victims without tombstones
        assert b"old-3" not in s
        assert_live_is_exact(s)
    with Store(tmp_path / "db", auto_merge=False) as s:
        assert b"old-3" not in s and s[b"old-4"] == b"v0" * 20
        assert s[b"hot-7"] == b"v5" * 20


def test_an_expired_keys_older_record_stays_shadowed(tmp_path):
    """A key's newest record carries an expiry and expires; an older record without one sits
    in a segment the merge leaves alone.  Expiry writes no tombstone, so merging the newer
    segment must leave one (a walk would not see the key): after reopen the key stays gone."""
    clock = Clock()
    with Store(tmp_path / "db", segment_bytes=4096, auto_merge=False, clock=clock) as s:
        s[b"k"] = b"forever"
        fill(s, [b"pad-%d" % i for i in range(60)], 1)
        last_old = max(s._unhinted())
        s.put(b"k", b"brief", clock.now + 1000)
        fill(s, [b"hot-%d" % i for i in range(40)], 6)
        clock.now += 5000
        s._merge_segments(sealed_after(s, last_old))
        assert merge_stats(s)["merge_scanned_segments"] >= 1
        assert b"k" not in s
        assert_live_is_exact(s)
    with Store(tmp_path / "db", auto_merge=False, clock=clock) as s:
        assert b"k" not in s
        assert s[b"pad-5"] == b"v0" * 20


def test_merge_walk_while_the_keydir_grows_and_compacts(tmp_path):
    """Merges (which walk a keydir of tens of thousands of keys in steps, letting other threads
    in) while a writer adds keys (the table grows: a rebuild moves every entry) and deletes
    them (the arena is compacted): nothing is lost, nothing deleted comes back, and every
    merged segment is left with nothing pointing into it."""
    s = Store(tmp_path / "db", segment_bytes=256 << 10, auto_merge=False, sync="never")
    model = {}
    for i in range(40000):
        model[b"base-%06d" % i] = b"b%d" % i
        s[b"base-%06d" % i] = b"b%d" % i
    stop = threading.Event()
    errors = []

    def merger():
        try:
            while not stop.is_set():
                s.merge()
        except Exception as exc:       # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=merger)
    t.start()
    try:
        rnd = random.Random(7)
        deadline = time.monotonic() + 4.0
        i = 0
        while time.monotonic() < deadline or s.stats()["merge_walked_segments"] < 3:
            k = b"new-%06d" % i
            s[k] = b"n%d" % i
            model[k] = b"n%d" % i
            victim = b"base-%06d" % rnd.randrange(40000)
            if i % 3 == 0 and victim in model:
                s.delete(victim)
                del model[victim]
            else:
                s[victim] = b"o%d" % i
                model[victim] = b"o%d" % i
            i += 1
    finally:
        stop.set()
        t.join()
    assert errors == []
    s.merge()
    assert_live_is_exact(s)
    s.close()
    with Store(tmp_path / "db", auto_merge=False) as s:
        assert len(s) == len(model)
        assert all(s[k] == v for k, v in model.items())
