# cython: language_level=3
"""Per-key order in front of the quorum coordinator (fastdyn/cluster/ordering.py states the
rules): every client operation of a cluster node passes through here.

As Python classes the queueing was about a tenth of a node's CPU per operation, most of it on
an idle key, where an operation only needs to hold its key until its result is there. Here an
idle key's operation calls the inner coordinator directly (no closure), and the group that
holds the key is itself the callback its result completes (no lambda per operation).
"""
cimport cython

from functools import partial

from fastdyn.cluster.coordinator import check_keys
from fastdyn.pending import Pending, gather, then

cdef object PendingType = Pending

cdef enum Kind:
    READ
    PLAIN_WRITE
    UPDATE
    INCR
    EXCLUSIVE


cdef class OrderedCoordinator


cdef inline bint is_waiting(object result):
    """True for a Pending not completed yet."""
    return type(result) is PendingType and not result.done


@cython.final
@cython.freelist(64)
cdef class _Group:
    """Operations that start together once every group they wait for has finished. Called
    with a result, it is the callback of one of its operations that started at once."""
    cdef OrderedCoordinator coord
    cdef int kind
    cdef object key           # the key it holds; None: it holds `keys`
    cdef tuple keys           # with key None, the keys it holds; None: the whole keyspace
    cdef int blocked          # unfinished groups it waits for
    cdef bint started
    cdef int unfinished       # its started operations not finished yet
    cdef list args            # of the operations waiting to start: a function to call, or
    cdef list pendings        # for a batched kind what the batch needs; and their results
    cdef list successors      # groups waiting for this one (None: none yet)
    cdef tuple written        # a PLAIN_WRITE group: (value, expiry_ms, result) of its latest
    cdef _Group source        # a READ group queued behind a PLAIN_WRITE group: that group

    def __call__(self, _result):
        self.coord._one_finished(self)


cdef _Group new_group(OrderedCoordinator coord, int kind, object key, tuple keys):
    cdef _Group group = _Group.__new__(_Group)
    group.coord = coord
    group.kind = kind
    group.key = key
    group.keys = keys
    return group


@cython.final
cdef class _ReadOwnWrite:
    """A GET queued behind a group of plain writes of its key, run once they have finished:
    their latest write decides the value (it is stamped after every earlier one by this
    node's clock, so it won), so an acknowledged one answers without a read quorum; after a
    failed one the GET reads."""
    cdef _Group source
    cdef object read          # the quorum read, a function
    cdef object clock

    def __call__(self):
        value, expiry_ms, result = self.source.written
        if type(result) is PendingType:
            if not (<object>result).done:
                return self.read()
            result = (<object>result).result
        if isinstance(result, Exception):
            return self.read()
        if expiry_ms and expiry_ms <= self.clock():
            return None
        return value


@cython.final
cdef class _Reply:
    """The callback of a queued operation's result: hands it on, then counts it finished."""
    cdef _Group group
    cdef object to            # a Pending, or a batch's list of them

    def __call__(self, value):
        try:
            hand_over(self.to, value)
        finally:                  # a failing reply callback must not hold the key forever
            self.group.coord._one_finished(self.group)


cdef hand_over(object to, object value):
    """Completes `to` with value: a Pending, or a batch's Pendings each with its own result
    (or the batch's failure)."""
    cdef Py_ssize_t i
    if type(to) is not list:
        to.complete(value)
        return
    failed = isinstance(value, Exception)
    for i in range(len(<list>to)):
        (<list>to)[i].complete(value if failed else value[i])


cdef class OrderedCoordinator:
    """The coordinator interface of `inner`, with the operations on each key in order."""
    cdef readonly object inner
    cdef dict _tails          # key -> the last group of its queue
    cdef _Group _barrier      # the last unfinished whole-keyspace group
    cdef list _ready          # groups whose wait is over, started in order
    cdef bint _starting

    def __init__(self, inner):
        self.inner = inner
        self._tails = {}
        self._barrier = None
        self._ready = []
        self._starting = False

    def __getattr__(self, name):
        return getattr(self.inner, name)   # shape, stats, listing: nothing to order

    @property
    def write_seq(self):
        return self.inner.write_seq

    # -- queueing --------------------------------------------------------------------------
    cdef inline _Group _tail(self, key):
        return <_Group>self._tails.get(key)

    cdef inline bint _now(self, _Group tail, int kind) noexcept:
        """True when an operation of kind (READ or PLAIN_WRITE) starts at once: its key is
        idle, or its tail is a running group of its kind, which it joins."""
        if tail is None:
            return self._barrier is None
        return tail.kind == kind and tail.started

    cdef object _started(self, key, int kind, _Group tail, object result):
        """result, of an operation on key that started at once: in the running `tail`, or
        (tail None: the key was idle) in a new group holding key until result is there."""
        if is_waiting(result):
            if tail is None:
                tail = new_group(self, kind, key, None)
                tail.started = True
                self._register(tail)
            tail.unfinished += 1
            result.add_done_callback(tail)
        return result

    cdef object _later(self, key, int kind, _Group tail, object arg):
        """A Pending of an operation on key that waits (arg: a function to call, or for a
        batched kind what the batch needs): it joins `tail` when that has not started and is
        of its kind, else queues behind it (or behind the barrier)."""
        pending = Pending()
        if tail is not None and tail.kind == kind and kind != EXCLUSIVE and not tail.started:
            tail.args.append(arg)
            tail.pendings.append(pending)
            return pending
        self._queue(kind, key, None, [tail if tail is not None else self._barrier], arg,
                    pending)
        return pending

    def compound(self, keys, fn):
        """fn(coordinator): the steps of one command on keys (None: the whole keyspace), after
        every earlier operation on them and before every later one."""
        cdef _Group group
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
            if is_waiting(result):
                group = new_group(self, EXCLUSIVE, None, keys)
                group.started = True
                group.unfinished = 1
                self._register(group)
                result.add_done_callback(group)
            return result
        pending = Pending()
        self._queue(EXCLUSIVE, None, keys, waits_for, partial(fn, self.inner), pending)
        return pending

    cdef _register(self, _Group group):
        if group.key is not None:
            self._tails[group.key] = group
        elif group.keys is None:
            self._barrier = group
            self._tails = {}      # later groups wait for the barrier, which waits for these
        else:
            for key in group.keys:
                self._tails[key] = group

    cdef _queue(self, int kind, key, tuple keys, list waits_for, arg, pending):
        cdef _Group group = new_group(self, kind, key, keys)
        cdef _Group earlier
        group.args = [arg]
        group.pendings = [pending]
        for earlier in {id(g): g for g in waits_for}.values():
            if earlier.successors is None:
                earlier.successors = [group]
            else:
                earlier.successors.append(group)
            group.blocked += 1
        self._register(group)

    cdef _one_finished(self, _Group group):
        group.unfinished -= 1
        if not group.unfinished:
            self._finish(group)

    cdef _finish(self, _Group group):
        cdef _Group later
        cdef dict tails = self._tails
        if group.key is not None:
            if tails.get(group.key) is group:
                del tails[group.key]
        elif group.keys is None:
            if self._barrier is group:
                self._barrier = None
        else:
            for key in group.keys:
                if tails.get(key) is group:
                    del tails[key]
        ready = self._ready
        if group.successors is not None:
            for later in group.successors:
                later.blocked -= 1
                if not later.blocked:
                    ready.append(later)
        if self._starting or not ready:
            return
        # a loop rather than recursion: a group that finishes at once starts the next one.
        # A failing reply callback (run when an operation completes at its start) must not
        # leave the groups after it unstarted: they all start, then the first error is raised.
        self._starting = True
        error = None
        try:
            while ready:
                try:
                    self._start(ready.pop(0))
                except Exception as exc:
                    if error is None:
                        error = exc
        finally:
            self._starting = False
        if error is not None:
            raise error

    cdef _start(self, _Group group):
        cdef Py_ssize_t i
        group.started = True
        args, group.args = group.args, None
        pendings, group.pendings = group.pendings, None
        group.unfinished += 1     # held until every operation has started
        try:
            if group.kind == UPDATE or group.kind == INCR:
                run = self.inner.update_many if group.kind == UPDATE else self.inner.incr_many
                self._deliver(group, partial(run, group.key, args), pendings)
            else:
                for i in range(len(args)):
                    self._deliver(group, args[i], pendings[i])
        finally:
            self._one_finished(group)

    cdef _deliver(self, _Group group, fn, to):
        """hand_over(to, the result of fn()), an exception it raises included, once it is
        there."""
        cdef _Reply reply
        try:
            result = fn()
        except Exception as exc:
            result = exc
        if type(result) is not PendingType:
            hand_over(to, result)
        elif result.done:
            hand_over(to, result.result)
        else:
            group.unfinished += 1
            reply = _Reply.__new__(_Reply)
            reply.group = group
            reply.to = to
            result.add_done_callback(reply)

    # -- one key ---------------------------------------------------------------------------
    cdef _get(self, key):
        cdef _Group tail = self._tail(key)
        cdef _Group source
        cdef _ReadOwnWrite own
        if self._now(tail, READ):
            return self._started(key, READ, tail, self.inner.get(key))
        read = partial(self.inner.get, key)
        source = None
        if tail is not None and tail.key is not None:
            if tail.kind == PLAIN_WRITE:
                source = tail
            elif tail.kind == READ and not tail.started:
                source = tail.source
        if source is None:
            return self._later(key, READ, tail, read)
        own = _ReadOwnWrite.__new__(_ReadOwnWrite)
        own.source = source
        own.read = read
        own.clock = self.inner.clock
        pending = self._later(key, READ, tail, own)
        tail = self._tail(key)
        if tail.kind == READ:
            tail.source = source
        return pending

    cdef _get_entry(self, key):
        cdef _Group tail = self._tail(key)
        if self._now(tail, READ):
            return self._started(key, READ, tail, self.inner.get_entry(key))
        return self._later(key, READ, tail, partial(self.inner.get_entry, key))

    cdef _put(self, key, value, expiry_ms):
        cdef _Group tail = self._tail(key)
        if self._now(tail, PLAIN_WRITE):
            result = self._started(key, PLAIN_WRITE, tail, self.inner.put(key, value, expiry_ms))
        else:
            result = self._later(key, PLAIN_WRITE, tail,
                                 partial(self.inner.put, key, value, expiry_ms))
        tail = self._tail(key)        # the group holding the key, while the write waits
        if tail is not None and tail.kind == PLAIN_WRITE:
            tail.written = (value, expiry_ms, result)
        return result

    cdef _delete_one(self, key):
        cdef _Group tail = self._tail(key)
        if tail is None and self._barrier is None:
            return self._started(key, EXCLUSIVE, None, self.inner.delete([key]))
        return self._later(key, EXCLUSIVE, tail, partial(self.inner.delete, [key]))

    def get(self, key):
        return self._get(key)

    def get_entry(self, key):
        return self._get_entry(key)

    def expiry(self, key):
        cdef _Group tail = self._tail(key)
        if self._now(tail, READ):
            return self._started(key, READ, tail, self.inner.expiry(key))
        return self._later(key, READ, tail, partial(self.inner.expiry, key))

    def put(self, key, value, expiry_ms=0):
        return self._put(key, value, expiry_ms)

    def update(self, key, fn):
        cdef _Group tail = self._tail(key)
        if tail is None and self._barrier is None:
            return self._started(key, UPDATE, None, self.inner.update(key, fn))
        return self._later(key, UPDATE, tail, fn)

    def incr(self, key, delta):
        cdef _Group tail = self._tail(key)
        if tail is None and self._barrier is None:
            return self._started(key, INCR, None, self.inner.incr(key, delta))
        return self._later(key, INCR, tail, delta)

    def dyn_get(self, key, r=None):
        cdef _Group tail = self._tail(key)
        if self._now(tail, READ):
            return self._started(key, READ, tail, self.inner.dyn_get(key, r))
        return self._later(key, READ, tail, partial(self.inner.dyn_get, key, r))

    def dyn_put(self, key, context, value, **options):
        cdef _Group tail = self._tail(key)
        if tail is None and self._barrier is None:
            return self._started(key, EXCLUSIVE, None,
                                 self.inner.dyn_put(key, context, value, **options))
        return self._later(key, EXCLUSIVE, tail,
                           partial(self.inner.dyn_put, key, context, value, **options))

    # -- many keys -------------------------------------------------------------------------
    def get_many(self, keys):
        return gather([self._get(k) for k in keys])

    def exists(self, keys):
        return then(gather([self._get_entry(k) for k in keys]),
                    lambda entries: sum(1 for e in entries if e is not None))

    def put_many(self, pairs):
        if not pairs:
            return None
        check_keys([k for k, _ in pairs])
        return then(gather([self._put(k, v, 0) for k, v in pairs]), lambda _: None)

    def delete(self, keys):
        check_keys(keys)
        return then(gather([self._delete_one(k) for k in keys]), sum)

    # -- the whole keyspace: after everything earlier, before everything later -------------
    def flush(self):
        return self.compound(None, lambda inner: inner.flush())

    def scan(self, cursor, count):
        return self.compound(None, lambda inner: inner.scan(cursor, count))

    def keys(self):
        return self.compound(None, lambda inner: inner.keys())

    def size(self):
        return self.compound(None, lambda inner: inner.size())
