"""Per-key order in front of the quorum coordinator.

A quorum operation completes later, and a read-modify-write (INCR, SETNX, APPEND, EXPIRE ...)
is a read followed by a write. Run as they arrive, two operations on one key could interleave:
an INCR pipelined behind a SET could read before the SET's replicas have it, two INCRs through
one node could read the same total and one increment would be lost, and a read could merge
replies that already hold a later command's write. Redis runs one command after another; this
keeps the order that matters per key on each coordinator:

- a read starts once every earlier write of the key has finished (it sees them);
- a plain write (SET, MSET: last-writer-wins, stamped by this node's clock, so a later one
  always wins over an earlier one whatever their delivery) starts once every earlier read and
  read-modify-write has finished (none of them sees it), without waiting for earlier plain
  writes;
- a read-modify-write starts once everything earlier on the key has finished.

Reads of a key run in parallel with each other, plain writes too, and operations on different
keys always do; an operation on an idle key starts at once. Multi-key commands run per key,
each in its key's order (DEL of one key named twice deletes it once, as in Redis).
"""
from fastdyn.cluster.coordinator import check_keys
from fastdyn.pending import Pending, after, gather, then

READ, PLAIN_WRITE, READ_MODIFY_WRITE = 1, 2, 3


class _Unfinished:
    """The operations of one key not finished yet, by what a later operation must wait for."""

    __slots__ = ("every", "writes", "not_plain")

    def __init__(self):
        self.every = []       # every unfinished operation
        self.writes = []      # plain writes and read-modify-writes
        self.not_plain = []   # reads and read-modify-writes

    def blockers(self, kind):
        if kind == READ:
            return self.writes
        if kind == PLAIN_WRITE:
            return self.not_plain
        return self.every


class OrderedCoordinator:
    """The coordinator interface of `inner`, with the operations on each key in order."""

    def __init__(self, inner):
        self.inner = inner
        self._keys = {}       # key -> _Unfinished
        self._barrier = None  # an unfinished whole-keyspace operation (FLUSHDB, SCAN ...)

    def __getattr__(self, name):
        return getattr(self.inner, name)   # shape, stats, listing: nothing to order

    @property
    def write_seq(self):
        return self.inner.write_seq

    def _in_order(self, key, kind, fn):
        state = self._keys.get(key)
        blockers = state.blockers(kind) if state is not None else None
        if self._barrier is not None:
            blockers = [self._barrier] + (blockers or [])
        if not blockers:
            result = fn()
        elif len(blockers) == 1:
            result = after(blockers[0], fn)
        else:
            result = after(gather([after(p, _nothing) for p in blockers]), fn)
        if result.__class__ is Pending and not result.done:
            if state is None:
                state = self._keys[key] = _Unfinished()
            lists = [state.every]
            if kind != READ:
                lists.append(state.writes)
            if kind != PLAIN_WRITE:
                lists.append(state.not_plain)
            for lst in lists:
                lst.append(result)

            def finished(_):
                for lst in lists:
                    lst.remove(result)
                if not state.every and self._keys.get(key) is state:
                    del self._keys[key]

            result.add_done_callback(finished)
        return result

    # -- one key ---------------------------------------------------------------------------
    def get(self, key):
        return self._in_order(key, READ, lambda: self.inner.get(key))

    def get_entry(self, key):
        return self._in_order(key, READ, lambda: self.inner.get_entry(key))

    def expiry(self, key):
        return self._in_order(key, READ, lambda: self.inner.expiry(key))

    def put(self, key, value, expiry_ms=0):
        return self._in_order(key, PLAIN_WRITE, lambda: self.inner.put(key, value, expiry_ms))

    def update(self, key, fn):
        return self._in_order(key, READ_MODIFY_WRITE, lambda: self.inner.update(key, fn))

    def incr(self, key, delta):
        return self._in_order(key, READ_MODIFY_WRITE, lambda: self.inner.incr(key, delta))

    def dyn_get(self, key, r=None):
        return self._in_order(key, READ, lambda: self.inner.dyn_get(key, r))

    def dyn_put(self, key, context, value, **options):
        return self._in_order(key, READ_MODIFY_WRITE,
                              lambda: self.inner.dyn_put(key, context, value, **options))

    # -- many keys -------------------------------------------------------------------------
    def get_many(self, keys):
        return gather([self.get(k) for k in keys])

    def exists(self, keys):
        return then(gather([self.get_entry(k) for k in keys]),
                    lambda entries: sum(1 for e in entries if e is not None))

    def put_many(self, pairs):
        if not pairs:
            return None
        check_keys([k for k, _ in pairs])
        return then(gather([self.put(k, v) for k, v in pairs]), lambda _: None)

    def delete(self, keys):
        check_keys(keys)
        return then(gather([self._in_order(k, READ_MODIFY_WRITE,
                                           lambda k=k: self.inner.delete([k]))
                            for k in keys]), sum)

    # -- the whole keyspace: after everything earlier, before everything later -------------
    def _barrier_op(self, fn):
        unfinished = [p for state in self._keys.values() for p in state.every]
        if self._barrier is not None:
            unfinished.append(self._barrier)
        if not unfinished:
            result = fn()
        else:
            result = after(gather([after(p, _nothing) for p in unfinished]), fn)
        if result.__class__ is Pending and not result.done:
            self._barrier = result

            def finished(_):
                if self._barrier is result:
                    self._barrier = None

            result.add_done_callback(finished)
        return result

    def flush(self):
        return self._barrier_op(self.inner.flush)

    def scan(self, cursor, count):
        return self._barrier_op(lambda: self.inner.scan(cursor, count))

    def keys(self):
        return self._barrier_op(self.inner.keys)

    def size(self):
        return self._barrier_op(self.inner.size)


def _nothing():
    return None

