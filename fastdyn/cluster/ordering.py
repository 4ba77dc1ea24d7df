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
- a read-modify-write starts once everything earlier on the key has finished;
- a compound command (MSETNX, RENAME, COPY ...: a read, a decision, then writes, each a
  quorum operation) holds all its keys for its whole chain, as one read-modify-write of each;
  RANDOMKEY, like FLUSHDB, SCAN, KEYS and DBSIZE, holds the whole keyspace.

The operations of a key form a queue of groups, each waiting for the one before it: a group of
reads, a group of plain writes, or one read-modify-write. Reads of a key run in parallel with
each other, plain writes too, and operations on different keys always do; an operation on an
idle key starts at once. Read-modify-writes of one kind queued behind the same group (a hot
key's INCRs, its SET NX or GETSETs) run as one: one read, each command's decision in arrival
order, one write, so a key's throughput does not fall to one command per two round trips.
Multi-key commands without a decision (MGET, MSET, DEL) run per key, each in its key's order;
all their per-key operations are queued at once, so no later command comes between them.
"""
from fastdyn.cluster.coordinator import check_keys
from fastdyn.pending import Pending, gather, then

READ, PLAIN_WRITE, UPDATE, INCR, EXCLUSIVE = range(5)
_SHARED = (READ, PLAIN_WRITE)     # a later one joins its group, running or waiting
_BATCHED = (UPDATE, INCR)         # a later one joins its group until it starts


class _Group:
    """Operations that start together once every group they wait for has finished."""

    __slots__ = ("kind", "keys", "blocked", "started", "unfinished", "ops", "successors")

    def __init__(self, kind, keys):
        self.kind = kind
        self.keys = keys          # the keys it holds; None: the whole keyspace
        self.blocked = 0          # unfinished groups it waits for
        self.started = False
        self.unfinished = 0       # its started operations not finished yet
        self.ops = []             # waiting to start: (argument, Pending of the result)
        self.successors = []      # groups waiting for this one


class OrderedCoordinator:
    """The coordinator interface of `inner`, with the operations on each key in order."""

    def __init__(self, inner):
        self.inner = inner
        self._tails = {}          # key -> the last group of its queue
        self._barrier = None      # the last unfinished whole-keyspace group
        self._ready = []          # groups whose wait is over, started in order
        self._starting = False

    def __getattr__(self, name):
        return getattr(self.inner, name)   # shape, stats, listing: nothing to order

    @property
    def write_seq(self):
        return self.inner.write_seq

    # -- queueing --------------------------------------------------------------------------
    def _in_order(self, key, kind, arg):
        """The result of one operation on key (arg: a function to call, or for a batched kind
        what the batch needs); direct when the key is idle."""
        tail = self._tails.get(key)
        if tail is None and self._barrier is None:
            if kind == UPDATE:
                result = self.inner.update(key, arg)
            elif kind == INCR:
                result = self.inner.incr(key, arg)
            else:
                result = arg()
            if result.__class__ is Pending and not result.done:
                self._watch(self._running(kind, (key,)), result)
            return result
        pending = Pending()
        if tail is not None and tail.kind == kind and kind != EXCLUSIVE:
            if not tail.started:
                tail.ops.append((arg, pending))
                return pending
            if kind in _SHARED:
                result = arg()
                if result.__class__ is Pending and not result.done:
                    self._watch(tail, result)
                return result
        self._queue(kind, (key,), (tail or self._barrier,), arg, pending)
        return pending

    def compound(self, keys, fn):
        """fn(coordinator): the steps of one command on keys (None: the whole keyspace), after
        every earlier operation on them and before every later one."""
        if keys is None:
            waits_for = list(self._tails.values())
        else:
            check_keys(keys)
            keys = tuple(dict.fromkeys(keys))
            waits_for = [self._tails.get(k) for k in keys]
        waits_for = [g for g in waits_for if g is not None]
        if self._barrier is not None:
            waits_for.append(self._barrier)
        if not waits_for:
            result = fn(self.inner)
            if result.__class__ is Pending and not result.done:
                self._watch(self._running(EXCLUSIVE, keys), result)
            return result
        pending = Pending()
        self._queue(EXCLUSIVE, keys, waits_for, lambda: fn(self.inner), pending)
        return pending

    def _register(self, group):
        if group.keys is None:
            self._barrier = group
            self._tails = {}      # later groups wait for the barrier, which waits for these
        else:
            for key in group.keys:
                self._tails[key] = group

    def _running(self, kind, keys):
        """A group for operations that started at once, holding their keys."""
        group = _Group(kind, keys)
        group.started = True
        self._register(group)
        return group

    def _queue(self, kind, keys, waits_for, arg, pending):
        group = _Group(kind, keys)
        group.ops.append((arg, pending))
        for earlier in {id(g): g for g in waits_for}.values():
            earlier.successors.append(group)
            group.blocked += 1
        self._register(group)

    def _watch(self, group, result):
        group.unfinished += 1
        result.add_done_callback(lambda _: self._one_finished(group))

    def _one_finished(self, group):
        group.unfinished -= 1
        if not group.unfinished:
            self._finish(group)

    def _finish(self, group):
        if group.keys is None:
            if self._barrier is group:
                self._barrier = None
        else:
            tails = self._tails
            for key in group.keys:
                if tails.get(key) is group:
                    del tails[key]
        ready = self._ready
        for later in group.successors:
            later.blocked -= 1
            if not later.blocked:
                ready.append(later)
        if self._starting:
            return
        # a loop rather than recursion: a group that finishes at once starts the next one
        self._starting = True
        try:
            while ready:
                self._start(ready.pop(0))
        finally:
            self._starting = False

    def _start(self, group):
        group.started = True
        ops, group.ops = group.ops, []
        group.unfinished += 1     # held until every operation has started
        try:
            if group.kind in _BATCHED:
                run = self.inner.update_many if group.kind == UPDATE else self.inner.incr_many
                pendings = [pending for _, pending in ops]
                self._deliver(group, lambda: run(group.keys[0], [arg for arg, _ in ops]),
                              lambda results: _hand_out(pendings, results))
            else:
                for fn, pending in ops:
                    self._deliver(group, fn, pending.complete)
        finally:
            self._one_finished(group)

    def _deliver(self, group, fn, complete):
        """complete(result of fn()), an exception it raises included, once it is there."""
        try:
            result = fn()
        except Exception as exc:
            result = exc
        if result.__class__ is not Pending:
            complete(result)
        elif result.done:
            complete(result.result)
        else:
            group.unfinished += 1

            def finished(value):
                try:
                    complete(value)
                finally:          # a failing reply callback must not hold the key forever
                    self._one_finished(group)

            result.add_done_callback(finished)

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
        return self._in_order(key, UPDATE, fn)

    def incr(self, key, delta):
        return self._in_order(key, INCR, delta)

    def dyn_get(self, key, r=None):
        return self._in_order(key, READ, lambda: self.inner.dyn_get(key, r))

    def dyn_put(self, key, context, value, **options):
        return self._in_order(key, EXCLUSIVE,
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
        return then(gather([self._in_order(k, EXCLUSIVE, lambda k=k: self.inner.delete([k]))
                            for k in keys]), sum)

    # -- the whole keyspace: after everything earlier, before everything later -------------
    def flush(self):
        return self.compound(None, lambda inner: inner.flush())

    def scan(self, cursor, count):
        return self.compound(None, lambda inner: inner.scan(cursor, count))

    def keys(self):
        return self.compound(None, lambda inner: inner.keys())

    def size(self):
        return self.compound(None, lambda inner: inner.size())


def _hand_out(pendings, results):
    """Each operation of a batch its own result, or the batch's failure."""
    failed = isinstance(results, Exception)
    for i, pending in enumerate(pendings):
        pending.complete(results if failed else results[i])
