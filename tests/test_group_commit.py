"""GroupCommit over a real store whose fsync the test lets through one call at a time."""
import asyncio
import threading

import pytest

import fastdyn
from fastdyn.cluster.coordinator import LocalCoordinator
from fastdyn.errors import PersistFailed
from fastdyn.server.group_commit import GroupCommit


class GatedStore:
    """The store, with an fsync that waits for the test to let it through, and fails when
    the test says so."""

    def __init__(self, store):
        self._store = store
        self.gate = threading.Semaphore(0)
        self.started = 0                 # fsyncs begun
        self.failure = None

    def __getattr__(self, name):
        return getattr(self._store, name)

    def fsync(self):
        self.started += 1
        self.gate.acquire()
        if self.failure is not None:
            raise self.failure
        self._store.fsync()


@pytest.fixture
def parts(tmp_path):
    store = fastdyn.open(str(tmp_path / "d"), sync="never")
    yield GatedStore(store), LocalCoordinator(store)
    store.close()


async def until(condition, what):
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(what)


def run(store, coro):
    async def guarded():
        try:
            await asyncio.wait_for(coro, 20)
        finally:
            for _ in range(10):  # a failed check must not leave an fsync blocked
                store.gate.release()
    asyncio.run(guarded())


async def write_around_an_fsync_start(store, coord, commits, done):
    """Write "a" and wait for it; once its fsync has begun, write "b" and wait for it."""
    coord.put(b"a", b"1")
    commits.wait(done, "a", None)
    await until(lambda: store.started == 1, "no fsync started")
    coord.put(b"b", b"2")               # written while that fsync runs
    commits.wait(done, "b", None)


def test_an_fsync_releases_the_writes_made_before_it_started(parts):
    store, coord = parts
    commits = GroupCommit(store, coord, fsync_all=True)
    released = []

    def done(error, name, _):
        released.append((name, error))

    async def scenario():
        await write_around_an_fsync_start(store, coord, commits, done)
        commits.wait_synced(done, "b too", None)
        await asyncio.sleep(0.05)
        assert released == [] and commits.busy
        store.gate.release()                # the first fsync ends: it covers "a" only
        await until(lambda: released, "the first fsync released nothing")
        assert released == [("a", None)]
        await until(lambda: store.started == 2, "no fsync started for the later write")
        assert commits.acked_seq < coord.write_seq
        store.gate.release()
        await until(lambda: len(released) == 3, "the second fsync released nothing")
        assert released == [("a", None), ("b", None), ("b too", None)]
        assert commits.acked_seq == coord.write_seq and not commits.busy

    run(store, scenario())


def test_a_failed_fsync_is_reported_to_every_waiter(parts):
    store, coord = parts
    commits = GroupCommit(store, coord, fsync_all=True)
    errors = {}

    async def scenario():
        await write_around_an_fsync_start(store, coord, commits, lambda error, name, _:
                                          errors.setdefault(name, error))
        store.failure = PersistFailed("disk gone")
        store.gate.release()
        await until(lambda: len(errors) == 2, "a waiter was not told")
        assert errors == {"a": store.failure, "b": store.failure}
        # nothing waits any more: the next replies need not wait for lost writes
        assert commits.acked_seq == coord.write_seq and not commits.waiting

    run(store, scenario())


def test_without_fsync_all_only_wait_synced_waits_for_the_fsync(parts):
    store, coord = parts
    commits = GroupCommit(store, coord, fsync_all=False)
    released = []

    def done(error, name, _):
        released.append(name)

    async def scenario():
        coord.put(b"a", b"1")
        commits.wait_synced(done, "durable", None)
        commits.wait(done, "written", None)
        await until(lambda: released == ["written"], "a written reply waited")
        assert commits.acked_seq == coord.write_seq
        await until(lambda: store.started == 1, "no fsync for the durable waiter")
        await asyncio.sleep(0.05)
        assert released == ["written"]
        store.gate.release()
        await until(lambda: released == ["written", "durable"], "the fsync released nothing")

    run(store, scenario())
