"""The persistent hint store: hints survive a reopen, merge per key, are bounded and dropped
only when the owner acknowledged the exact object sent."""
import pytest

from fastdyn.cluster.hints import HintStore
from fastdyn.errors import HintStoreFull


def longest(a, b):
    """A stand-in merge: commutative, idempotent, and the result may grow."""
    return max(a, b, key=lambda x: (len(x), x))


class Clock:
    t = 1000.0

    def __call__(self):
        return self.t


def test_hints_persist_and_are_dropped_only_on_exact_ack(tmp_path):
    clock = Clock()
    hints = HintStore(str(tmp_path / "h"), longest, clock=clock)
    hints.add("b", b"k1", b"v1")
    hints.add("b", b"k2", b"v2")
    hints.add("c", b"k1", b"w")
    clock.t += 5
    assert hints.stats()["hints_pending"] == 3
    assert hints.stats()["hints_oldest_age_s"] == 5.0
    hints.close()

    hints = HintStore(str(tmp_path / "h"), longest, clock=clock)
    assert sorted(hints.owners()) == ["b", "c"]
    assert sorted(hints.pending("b")) == [(b"k1", b"v1"), (b"k2", b"v2")]
    hints.add("b", b"k1", b"v1-longer")           # a newer write while in flight
    assert not hints.acknowledged("b", b"k1", b"v1")
    assert hints.acknowledged("b", b"k1", b"v1-longer")
    assert hints.acknowledged("b", b"k2", b"v2")
    assert hints.owners() == ["c"]
    s = hints.stats()
    assert s["hints_pending"] == 1 and s["hints_delivered"] == 2 and s["hints_bytes"] == 1
    hints.close()


def test_same_key_merges_into_one_hint(tmp_path):
    hints = HintStore(str(tmp_path / "h"), longest)
    for v in (b"a", b"abc", b"ab"):
        hints.add("b", b"k", v)
    assert hints.pending("b") == [(b"k", b"abc")]
    assert hints.stats()["hints_bytes"] == 3
    hints.close()


def test_full_store_refuses_and_keeps_nothing(tmp_path):
    hints = HintStore(str(tmp_path / "h"), longest, max_bytes=10)
    hints.add("b", b"k1", b"12345678")
    with pytest.raises(HintStoreFull):
        hints.add("b", b"k2", b"xyz")
    assert hints.pending("b") == [(b"k1", b"12345678")]
    assert hints.stats()["hints_refused"] == 1
    hints.add("b", b"k1", b"1234567")              # merging into an existing hint may not grow
    hints.drop_all()
    assert hints.stats()["hints_pending"] == 0
    hints.add("b", b"k2", b"xyz")
    hints.close()
