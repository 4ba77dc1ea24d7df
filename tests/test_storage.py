"""The storage engine through its public API, on real files in a temporary directory."""
import os
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastdyn
from fastdyn.errors import StorageError, StoreLocked
from fastdyn.storage import Store


class Clock:
    """A controllable time source in ms, for expiry without sleeping."""

    def __init__(self, now=1_700_000_000_000):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    s = Store(tmp_path / "db", clock=clock)
    yield s
    s.close()


def test_put_get_delete_roundtrip(store):
    store[b"a"] = b"1"
    store["b"] = b"2"
    store.put(b"c", bytearray(b"3"))
    assert store[b"a"] == b"1"
    assert store[b"b"] == b"2" and store["b"] == b"2"
    assert store.get(b"c") == b"3"
    assert store.get(b"zz") is None and store.get(b"zz", 7) == 7
    assert len(store) == 3 and b"a" in store and "zz" not in store
    del store[b"a"]
    assert b"a" not in store
    with pytest.raises(KeyError):
        store[b"a"]
    with pytest.raises(KeyError):
        del store[b"a"]
    assert store.delete(b"b") is True and store.delete(b"b") is False
    assert sorted(store) == [b"c"]


def test_overwrite_and_reopen(tmp_path):
    path = tmp_path / "db"
    with fastdyn.open(path) as s:
        for i in range(1000):
            s[b"k%d" % i] = b"v%d" % i
        for i in range(0, 1000, 2):
            s[b"k%d" % i] = b"w%d" % i
        for i in range(0, 1000, 3):
            del s[b"k%d" % i]
    with fastdyn.open(path) as s:
        expect = {}
        for i in range(1000):
            if i % 3 == 0:
                continue
            expect[b"k%d" % i] = (b"w%d" if i % 2 == 0 else b"v%d") % i
        assert len(s) == len(expect)
        assert {k: s[k] for k in s} == expect
        assert s.recovery_report["truncated"] == [] and s.recovery_report["corrupt"] == []


def test_ttl_with_controlled_clock(store, clock):
    store.set(b"t", b"v", ttl=1.5)
    assert store.expiry_ms(b"t") == clock.now + 1500
    assert store.get_entry(b"t") == (b"v", clock.now + 1500)
    clock.now += 1499
    assert store[b"t"] == b"v"
    clock.now += 1
    assert store.get(b"t") is None and b"t" not in store and store.expiry_ms(b"t") is None
    assert len(store) == 0 and list(store) == []


def test_expiry_survives_reopen(tmp_path, clock):
    path = tmp_path / "db"
    with Store(path, clock=clock) as s:
        s.put(b"a", b"1", expiry_ms=clock.now + 10)
        s.put(b"b", b"2", expiry_ms=clock.now + 1000)
        s.put(b"c", b"3")
    clock.now += 100
    with Store(path, clock=clock) as s:
        assert sorted(s) == [b"b", b"c"]
        assert s.expiry_ms(b"b") == clock.now - 100 + 1000 and s.expiry_ms(b"c") == 0


def test_set_expiry_and_persist(store, clock):
    store[b"k"] = b"v" * 5000   # compressed record: set_expiry copies it as stored
    assert store.set_expiry(b"k", clock.now + 50) is True
    assert store.expiry_ms(b"k") == clock.now + 50
    assert store.set_expiry(b"k", 0) is True and store.expiry_ms(b"k") == 0
    assert store[b"k"] == b"v" * 5000
    assert store.set_expiry(b"missing", 5) is False
    assert store.set_expiry(b"k", clock.now - 1) is True
    assert b"k" not in store


def test_put_with_past_expiry_removes(store, clock):
    store[b"k"] = b"v"
    store.put(b"k", b"w", expiry_ms=clock.now - 5)
    assert store.get(b"k") is None and len(store) == 0


def test_sweep_expired(store, clock):
    for i in range(100):
        store.put(b"e%d" % i, b"x", expiry_ms=clock.now + 10)
    for i in range(50):
        store.put(b"p%d" % i, b"x")
    assert store.sweep_expired(10) == 0
    clock.now += 10
    removed = 0
    for _ in range(100):
        removed += store.sweep_expired(7)
    assert removed == 100
    assert store.stats()["keys"] == 50
    store.put(b"lazy", b"x", expiry_ms=clock.now + 1)
    clock.now += 1
    assert store.get(b"lazy") is None and store.get(b"lazy") is None
    assert store.stats()["expired_removed"] == 101      # each expired key counted once


def test_compression_roundtrip(tmp_path):
    value = b"abc" * 10000
    with Store(tmp_path / "db", compress_threshold=100) as s:
        s[b"big"] = value
        s[b"rand"] = os.urandom(5000)   # incompressible: stored as is
        rand = s[b"rand"]
        assert s[b"big"] == value
        assert s.stats()["live_bytes"] < len(value) // 10 + 5000 + 200
    with Store(tmp_path / "db") as s:
        assert s[b"big"] == value and s[b"rand"] == rand


def test_large_value_read(tmp_path):
    big = os.urandom(3 << 20)
    with Store(tmp_path / "db", sync="never") as s:
        s[b"big"] = big
        s.flush_buffer()
        assert s[b"big"] == big
    with Store(tmp_path / "db") as s:
        assert s[b"big"] == big


def test_bad_input(store):
    store[b"ok"] = b"1"
    with pytest.raises(ValueError, match="1 to 65536"):
        store[b""] = b"x"
    with pytest.raises(ValueError, match="1 to 65536"):
        store[b"x" * 65537] = b"x"
    store[b"x" * 65536] = b"max key"
    assert store[b"x" * 65536] == b"max key"
    with pytest.raises(TypeError, match="keys must be bytes or str"):
        store[123] = b"x"
    with pytest.raises(TypeError, match="encode str values"):
        store[b"k"] = "text"
    with pytest.raises(TypeError):
        store[b"k"] = None
    with pytest.raises(TypeError):
        store[b"k"] = 12
    with pytest.raises(ValueError, match="ttl"):
        store.set(b"k", b"v", ttl=0)
    with pytest.raises(ValueError, match="cursor"):
        store.scan(-1)
    with pytest.raises(ValueError, match="1 to 65536"):
        store[b""]
    assert store[b"ok"] == b"1" and len(store) == 2


def test_value_size_limit(tmp_path):
    with Store(tmp_path / "db", max_value_bytes=1000) as s:
        s[b"a"] = b"x" * 1000
        with pytest.raises(ValueError, match="max_value_bytes"):
            s[b"b"] = b"x" * 1001
        assert s[b"a"] == b"x" * 1000 and b"b" not in s


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match="sync"):
        Store(tmp_path / "a", sync="sometimes")
    with pytest.raises(ValueError):
        Store(tmp_path / "b", merge_ratio=0)
    # a failed open leaves the directory unlocked
    Store(tmp_path / "a").close()


def test_closed_store_errors(tmp_path):
    s = Store(tmp_path / "db")
    s[b"a"] = b"1"
    s.close()
    s.close()
    with pytest.raises(StorageError, match="closed"):
        s[b"a"]
    with pytest.raises(StorageError, match="closed"):
        s[b"a"] = b"2"


def test_on_write_hook(tmp_path, clock):
    seen = []
    with Store(tmp_path / "db", on_write=lambda k, v: seen.append((k, v)), clock=clock) as s:
        s[b"a"] = b"1"
        s["b"] = b"2"
        del s[b"a"]
        s.delete(b"missing")
    assert seen == [(b"a", b"1"), (b"b", b"2"), (b"a", None)]


def test_scan_returns_every_key_once_across_resizes(store):
    for i in range(2000):
        store[b"k%d" % i] = b"v"
    seen = []
    cursor, keys = store.scan(0, 100)
    seen += keys
    grow = 0
    while cursor:
        # the table grows (and entries move) between calls
        for _ in range(200):
            store[b"new%d" % grow] = b"v"
            grow += 1
        cursor, keys = store.scan(cursor, 100)
        seen += keys
    originals = [k for k in seen if k.startswith(b"k")]
    assert sorted(originals) == sorted(b"k%d" % i for i in range(2000))
    assert len(seen) == len(set(seen))


def test_scan_skips_expired_and_deleted(store, clock):
    for i in range(100):
        store[b"k%d" % i] = b"v"
    store.put(b"e", b"v", expiry_ms=clock.now + 1)
    for i in range(50):
        del store[b"k%d" % i]
    clock.now += 1
    cursor, out = 0, []
    while True:
        cursor, keys = store.scan(cursor, 7)
        out += keys
        if not cursor:
            break
    assert sorted(out) == sorted(b"k%d" % i for i in range(50, 100))


def test_items_and_fold(tmp_path, clock):
    with Store(tmp_path / "db", clock=clock, segment_bytes=4096) as s:
        for i in range(300):
            s.put(b"k%d" % i, b"v%d" % i, expiry_ms=(clock.now + 5) if i % 10 == 0 else 0)
        for i in range(0, 300, 7):
            s[b"k%d" % i] = b"again"
        clock.now += 5
        got = {k: (v, e) for k, v, e in s.items()}
        expect = {}
        for i in range(300):
            if i % 10 == 0 and i % 7:
                continue
            expect[b"k%d" % i] = (b"again" if i % 7 == 0 else b"v%d" % i, 0)
        assert got == expect
        folded = []
        assert s.fold(lambda k, v, e: folded.append((k, v, e))) == len(expect)
        assert {k: (v, e) for k, v, e in folded} == expect


def test_items_sees_concurrent_changes_consistently(store):
    for i in range(500):
        store[b"k%d" % i] = b"old"
    out = {}
    for n, (k, v, _) in enumerate(store.items()):
        out[k] = v
        if n == 10:
            for i in range(500):
                store[b"k%d" % i] = b"new"
    assert len(out) == 500
    assert sum(v == b"new" for v in out.values()) >= 489


def test_clear_is_durable(tmp_path):
    path = tmp_path / "db"
    with Store(path, segment_bytes=4096) as s:
        for i in range(500):
            s[b"k%d" % i] = b"v" * 20
        s.clear()
        assert len(s) == 0 and list(s) == []
        s[b"after"] = b"1"
    with Store(path) as s:
        assert list(s) == [b"after"]
        assert len([n for n in os.listdir(path) if n.endswith(".data")]) == 1


def test_batch_and_group_commit_calls(tmp_path):
    with Store(tmp_path / "db", sync="always") as s:
        with s.batch():
            for i in range(100):
                s[b"k%d" % i] = b"v"
            assert s[b"k5"] == b"v"        # read-your-writes from the buffer
            assert s.stats()["pending_bytes"] > 0
        assert s.stats()["pending_bytes"] == 0
    with Store(tmp_path / "db2", sync="never") as s:
        s[b"a"] = b"1"
        assert s.stats()["pending_bytes"] > 0
        s.flush_buffer()
        assert s.stats()["pending_bytes"] == 0
        done = []
        t = threading.Thread(target=lambda: (s.fsync(), done.append(1)))
        t.start()
        for i in range(1000):
            s[b"x%d" % i] = b"y"
        t.join()
        assert done == [1] and s[b"x999"] == b"y"


def test_interval_flusher_writes_in_background(tmp_path):
    with Store(tmp_path / "db", sync="interval", sync_interval_ms=20) as s:
        s[b"a"] = b"1"
        for _ in range(200):
            if s.stats()["pending_bytes"] == 0:
                break
            threading.Event().wait(0.01)
        assert s.stats()["pending_bytes"] == 0


def test_lock_in_same_and_other_process(tmp_path):
    path = tmp_path / "db"
    with Store(path):
        with pytest.raises(StoreLocked, match=str(path)):
            Store(path)
        code = (
            "import sys\n"
            "from fastdyn.storage import Store\n"
            "from fastdyn.errors import StoreLocked\n"
            "try:\n"
            f"    Store({str(path)!r})\n"
            "except StoreLocked as e:\n"
            "    print('LOCKED', e)\n"
            "    sys.exit(3)\n"
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 3, r.stderr
        assert "LOCKED" in r.stdout and str(path) in r.stdout and "locked" in r.stdout
    Store(path).close()


def test_hint_startup_equals_scan_startup(tmp_path, clock):
    path = tmp_path / "db"
    with Store(path, clock=clock, segment_bytes=8192) as s:
        for i in range(2000):
            s.put(b"k%d" % (i % 700), b"v%d" % i,
                  expiry_ms=(clock.now + 100) if i % 13 == 0 else 0)
            if i % 11 == 0:
                s.delete(b"k%d" % ((i * 7) % 700))
        s.merge()
        for i in range(100):
            s[b"late%d" % i] = b"x"
        s.merge()
    with Store(path, clock=clock) as s:
        assert s.recovery_report["from_hints"] == s.recovery_report["segments"] > 0
        from_hints = {k: v for k, v, _ in s.items()}
        hinted_expiry = {k: s.expiry_ms(k) for k in from_hints}
    for name in os.listdir(path):
        if name.endswith(".hint"):
            os.unlink(path / name)
    with Store(path, clock=clock) as s:
        assert s.recovery_report["from_hints"] == 0
        assert {k: v for k, v, _ in s.items()} == from_hints
        assert {k: s.expiry_ms(k) for k in from_hints} == hinted_expiry


def test_corrupt_hint_falls_back_to_scan(tmp_path):
    path = tmp_path / "db"
    with Store(path) as s:
        for i in range(100):
            s[b"k%d" % i] = b"v%d" % i
        s.merge()
    hints = [n for n in os.listdir(path) if n.endswith(".hint")]
    assert hints
    with open(path / hints[0], "r+b") as f:
        f.seek(30)
        f.write(b"\xff\xff")
    with Store(path) as s:
        assert s.recovery_report["hint_fallbacks"] == hints
        assert len(s) == 100 and s[b"k42"] == b"v42"


def test_keydir_overhead_per_key_is_small(tmp_path):
    with Store(tmp_path / "db", sync="never") as s:
        for i in range(100_000):
            s[b"%016x" % (i * 0x9E3779B97F4A7C15 % (1 << 64))] = b"v"
        st = s.stats()
        assert st["keys"] == 100_000
        assert st["keydir_overhead_per_key"] <= 40


ODD_INPUTS = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5),
                       st.binary(max_size=5), st.lists(st.integers(), max_size=2),
                       st.builds(bytearray, st.binary(max_size=5)),
                       st.builds(memoryview, st.binary(max_size=5)))


@given(key=ODD_INPUTS, value=ODD_INPUTS, expiry=ODD_INPUTS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_input_gets_a_clear_error_or_works(store, key, value, expiry):
    """Whatever is passed, a call either succeeds or raises TypeError/ValueError, and the
    store keeps working."""
    store[b"anchor"] = b"ok"
    for call in (lambda: store.put(key, value, expiry), lambda: store.set(key, value, expiry),
                 lambda: store.get(key), lambda: key in store, lambda: store.delete(key),
                 lambda: store.set_expiry(key, expiry), lambda: store.scan(key, value),
                 lambda: store.sweep_expired(key)):
        try:
            call()
        except (TypeError, ValueError):
            pass
    assert store[b"anchor"] == b"ok"
