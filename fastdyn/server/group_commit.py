"""Group commit: answers that depend on writes wait for the end of the event-loop turn, when one
write() hands every record of the turn to the OS, and - when they need durability - for one
fsync in a worker thread that covers every write made before it started, while the event loop
goes on parsing and executing.

One GroupCommit serves a node's client listener and its peer listener: client replies under
`--sync always` and replica writes that must be durable (--sync always, or a DW put) share
the fsync of their turn.
"""
import collections
import logging
from asyncio import get_running_loop

log = logging.getLogger("fastdyn.server")


class GroupCommit:
    """Over `store` (flush_buffer(), fsync()) whose writes `source.write_seq` counts.

    `wait(done, a, b)` holds an answer until the writes made so far are written (fsynced too
    with `fsync_all`, --sync always); `wait_synced(done, a, b)` until they are fsynced
    whatever the mode. Then `done(None, a, b)` runs; if the store cannot take them (disk
    full, I/O error, failed fsync), `done(exc, a, b)` runs for every waiter instead: those
    writes may or may not persist, and from then on the store refuses writes, so no later
    answer depends on them. (Two arguments, not *args: a client's held replies pass here
    after every write.) The group commit runs on the event loop it is used in.

    The client listener checks `acked_seq` and `waiting` itself (source.write_seq ==
    acked_seq and no waiting means a reply may leave at once): they are plain attributes."""

    def __init__(self, store, source, fsync_all: bool):
        self.store = store
        self.source = source
        self.fsync_all = fsync_all
        self.acked_seq = 0                    # write_seq up to which wait() is released
        self.waiting = collections.deque()    # (write_seq, done, a, b) for wait()
        # for wait_synced(); the same queue when every answer waits for the fsync
        self.waiting_synced = self.waiting if fsync_all else collections.deque()
        self.commit_scheduled = False
        self.fsync_running = False

    def wait(self, done, a, b) -> None:
        self.waiting.append((self.source.write_seq, done, a, b))
        if not self.commit_scheduled:
            self.commit_scheduled = True
            get_running_loop().call_soon(self._commit)

    def wait_synced(self, done, a, b) -> None:
        self.waiting_synced.append((self.source.write_seq, done, a, b))
        if not self.commit_scheduled:
            self.commit_scheduled = True
            get_running_loop().call_soon(self._commit)

    @property
    def busy(self) -> bool:
        """Whether a commit is scheduled or an fsync runs (shutdown waits for them)."""
        return self.commit_scheduled or self.fsync_running

    def _commit(self) -> None:
        """Once per event-loop turn: one write() of the turn's records, then release what
        waits for no more; start an fsync in a worker thread for the rest, unless one runs
        (its end starts the next)."""
        self.commit_scheduled = False
        seq = self.source.write_seq
        try:
            self.store.flush_buffer()
        except Exception as exc:
            log.error("write to the data directory failed: %s", exc)
            self._fail(exc)
            return
        if not self.fsync_all:
            self.acked_seq = seq
            _release(self.waiting, seq)
        if self.waiting_synced and not self.fsync_running:
            self.fsync_running = True
            fut = get_running_loop().run_in_executor(None, self.store.fsync)
            fut.add_done_callback(lambda f: self._fsync_done(f, seq))

    def _fsync_done(self, fut, seq) -> None:
        self.fsync_running = False
        exc = fut.exception()
        if exc is not None:
            log.error("fsync failed: %s", exc)
            self._fail(exc)
            return
        if self.fsync_all:
            self.acked_seq = max(self.acked_seq, seq)
        _release(self.waiting_synced, seq)
        if self.waiting_synced and not self.commit_scheduled:
            self._commit()

    def _fail(self, exc) -> None:
        # the writes may be lost: no waiter is acknowledged.  The store refuses writes until
        # it can persist again, so answers after this need not wait.
        for queue in (self.waiting,) if self.fsync_all else (self.waiting, self.waiting_synced):
            while queue:
                _, done, a, b = queue.popleft()
                done(exc, a, b)
        self.acked_seq = self.source.write_seq


def _release(queue, seq) -> None:
    """Answer the waiters whose writes were made up to write_seq `seq`, in order."""
    while queue and queue[0][0] <= seq:
        _, done, a, b = queue.popleft()
        done(None, a, b)
