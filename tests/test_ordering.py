"""Per-key order (fastdyn/cluster/ordering.py) over a scripted inner coordinator: each inner
operation is recorded when it starts and completes when the test says so."""
from fastdyn.cluster.ordering import OrderedCoordinator
from fastdyn.errors import CommandError
from fastdyn.pending import Pending, then


class Scripted:
    """The inner coordinator: every operation starts (is logged) and returns a Pending."""

    def __init__(self):
        self.started = []     # (name, key or None, argument)
        self.pending = []
        self.now = 1000

    def clock(self):
        return self.now

    def _op(self, name, key=None, arg=None):
        self.started.append((name, key, arg))
        p = Pending()
        self.pending.append(p)
        return p

    def get(self, key):
        return self._op("get", key)

    def get_entry(self, key):
        return self._op("get_entry", key)

    def put(self, key, value, expiry_ms=0):
        return self._op("put", key, value)

    def update(self, key, fn):
        return self._op("update", key, [fn])

    def update_many(self, key, fns):
        return self._op("update_many", key, fns)

    def incr(self, key, delta):
        return self._op("incr", key, [delta])

    def incr_many(self, key, deltas):
        return self._op("incr_many", key, deltas)

    def delete(self, keys):
        return self._op("delete", keys[0])

    def scan(self, cursor, count):
        return self._op("scan", None, cursor)

    def names(self):
        return [(name, key) for name, key, _ in self.started]

    def finish(self, index, result=None):
        self.pending[index].complete(result)


def test_reads_run_together_and_a_read_waits_for_an_earlier_write():
    inner = Scripted()
    coord = OrderedCoordinator(inner)
    coord.get(b"a")
    coord.get(b"a")
    coord.put(b"a", b"1")
    late = coord.get(b"a")
    assert inner.names() == [("get", b"a"), ("get", b"a")]
    inner.finish(0)
    assert len(inner.started) == 2
    inner.finish(1)
    assert inner.names()[2:] == [("put", b"a")]
    inner.finish(2)
    # the write it waited for was acknowledged: that write is the value, no read quorum
    assert late.done and late.result == b"1"
    assert len(inner.started) == 3


def test_a_read_behind_writes_answers_with_the_latest_acknowledged_one():
    inner = Scripted()
    coord = OrderedCoordinator(inner)
    coord.get(b"a")
    coord.put(b"a", b"1")
    coord.put(b"a", b"2")
    first = coord.get(b"a")
    second = coord.get(b"a")
    coord.put(b"a", b"3")            # after the reads: they must not see it
    inner.finish(0)                  # the first read: now both writes run
    assert inner.names() == [("get", b"a"), ("put", b"a"), ("put", b"a")]
    inner.finish(1)
    assert not first.done
    inner.finish(2)
    assert first.result == b"2" and second.result == b"2"
    assert inner.names()[3:] == [("put", b"a")]


def test_a_read_behind_a_failed_write_reads():
    inner = Scripted()
    coord = OrderedCoordinator(inner)
    coord.put(b"a", b"1")
    late = coord.get(b"a")
    inner.finish(0, CommandError("NOQUORUM 1 of 2 replicas answered"))
    assert inner.names() == [("put", b"a"), ("get", b"a")]
    inner.finish(1, b"0")
    assert late.result == b"0"


def test_a_read_behind_a_write_that_expired_meanwhile_finds_nothing():
    inner = Scripted()
    coord = OrderedCoordinator(inner)
    coord.put(b"a", b"1", 1500)
    late = coord.get(b"a")
    inner.now = 1500
    inner.finish(0)
    assert late.done and late.result is None and len(inner.started) == 1


def test_other_keys_are_not_held():
    inner = Scripted()
    coord = OrderedCoordinator(inner)
    coord.incr(b"a", 1)
    coord.get(b"b")
    assert inner.names() == [("incr", b"a"), ("get", b"b")]


def test_queued_read_modify_writes_of_a_key_run_as_one_batch_in_order():
    inner = Scripted()
    coord = OrderedCoordinator(inner)
    first = coord.incr(b"n", 1)
    queued = [coord.incr(b"n", d) for d in (2, 3, 4)]
    coord.get(b"n")
    after = coord.incr(b"n", 5)
    assert inner.names() == [("incr", b"n")]
    inner.finish(0, 1)
    assert first.result == 1
    assert inner.started[1] == ("incr_many", b"n", [2, 3, 4])
    inner.finish(1, [3, 6, CommandError("ERR overflow")])
    assert [p.result for p in queued[:2]] == [3, 6]
    assert isinstance(queued[2].result, CommandError)
    assert inner.names()[2:] == [("get", b"n")]
    inner.finish(2)
    assert inner.started[3] == ("incr_many", b"n", [5])
    inner.finish(3, [11])
    assert after.result == 11


def test_a_failed_batch_fails_each_of_its_commands():
    inner = Scripted()
    coord = OrderedCoordinator(inner)
    coord.update(b"k", "first")
    queued = [coord.update(b"k", f) for f in ("second", "third")]
    inner.finish(0)
    assert inner.started[1] == ("update_many", b"k", ["second", "third"])
    failure = CommandError("ERR quorum")
    inner.finish(1, failure)
    assert [p.result for p in queued] == [failure, failure]


def test_a_compound_command_holds_its_keys_for_its_whole_chain():
    inner = Scripted()
    coord = OrderedCoordinator(inner)
    steps = []

    def rename(c):
        steps.append("read")
        return then(c.get_entry(b"src"), lambda _: c.put(b"dst", b"v"))

    done = coord.compound([b"src", b"dst"], rename)
    later_dst = coord.get(b"dst")
    later_src = coord.put(b"src", b"x")
    other = coord.get(b"other")
    assert inner.names() == [("get_entry", b"src"), ("get", b"other")]
    inner.finish(0)                          # the read: the chain's write starts, nothing else
    assert inner.names()[2:] == [("put", b"dst")]
    inner.finish(2)                          # the chain's write: the command is done
    assert done.done
    assert sorted(inner.names()[3:]) == [("get", b"dst"), ("put", b"src")]
    assert not later_dst.done and not later_src.done and not other.done


def test_a_compound_command_waits_for_earlier_operations_on_any_of_its_keys():
    inner = Scripted()
    coord = OrderedCoordinator(inner)
    coord.put(b"b", b"1")
    coord.compound([b"a", b"b"], lambda c: c.get_entry(b"a"))
    assert inner.names() == [("put", b"b")]
    inner.finish(0)
    assert inner.names()[1:] == [("get_entry", b"a")]


def test_the_whole_keyspace_waits_for_everything_and_holds_everything():
    inner = Scripted()
    coord = OrderedCoordinator(inner)
    coord.put(b"a", b"1")
    coord.scan(0, 10)
    coord.get(b"b")
    assert inner.names() == [("put", b"a")]
    inner.finish(0)
    assert inner.names()[1:] == [("scan", None)]
    inner.finish(1)
    assert inner.names()[2:] == [("get", b"b")]


def test_delete_of_a_key_named_twice_runs_once_after_the_other():
    inner = Scripted()
    coord = OrderedCoordinator(inner)
    total = coord.delete([b"a", b"a"])
    assert inner.names() == [("delete", b"a")]
    inner.finish(0, 1)
    inner.finish(1, 0)
    assert total.result == 1


def test_an_idle_key_answers_directly():
    class Direct(Scripted):
        def get(self, key):
            return b"v"

    coord = OrderedCoordinator(Direct())
    assert coord.get(b"a") == b"v"
    assert coord.compound([b"a"], lambda c: c.get(b"a")) == b"v"



def test_a_failing_reply_callback_does_not_hold_the_key():
    inner = Scripted()
    coord = OrderedCoordinator(inner)
    coord.put(b"k", b"1")
    queued = coord.get(b"k")

    def broken(_):
        raise RuntimeError("reply encoding failed")

    queued.add_done_callback(broken)
    coord.put(b"k", b"2")
    try:
        inner.finish(0)            # the GET answers from the write: its callback fails
    except RuntimeError:
        pass
    assert queued.result == b"1"
    assert inner.names()[1:] == [("put", b"k")]


def test_shape_and_counters_come_from_the_inner_coordinator():
    inner = Scripted()
    inner.write_seq = 7
    inner.stats = {"sibling_warnings": 0}
    coord = OrderedCoordinator(inner)
    assert coord.inner is inner
    assert coord.write_seq == 7
    inner.write_seq = 8
    assert coord.write_seq == 8
    assert coord.stats is inner.stats
    assert coord.names() == []
