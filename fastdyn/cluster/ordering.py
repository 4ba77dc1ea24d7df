"""Per-key order in front of the quorum coordinator.

A quorum operation completes later, and a read-modify-write (INCR, SETNX, APPEND, EXPIRE ...)
is a read followed by a write. Run as they arrive, two operations on one key could interleave:
an INCR pipelined behind a SET could read before the SET's replicas have it, two INCRs through
one node could read the same total and one increment would be lost, and a read could merge
replies that already hold a later command's write. Redis runs one command after another; this
keeps that order per key on each coordinator: an operation on a key starts when the previous
operation this node coordinates on that key has finished (succeeded or failed). Operations on
different keys still run in parallel, and an operation on an idle key starts at once.

Multi-key commands run per key, each in its key's order (DEL of one key named twice deletes it
once, as in Redis).
"""
from fastdyn.cluster.coordinator import check_keys
from fastdyn.pending import Pending, after, gather, then


class OrderedCoordinator:
    """The coordinator interface of `inner`, with the operations on each key in order."""

    def __init__(self, inner):
        self.inner = inner
        self._tails = {}      # key -> Pending of the last unfinished operation on it

    def __getattr__(self, name):
        return getattr(self.inner, name)   # shape, stats, listing: nothing to order

    @property
    def write_seq(self):
        return self.inner.write_seq

    def _in_order(self, key, fn):
        tail = self._tails.get(key)
        result = fn() if tail is None else after(tail, fn)
        if result.__class__ is Pending and not result.done:
            tails = self._tails
            tails[key] = result

            def finished(_):
                if tails.get(key) is result:
                    del tails[key]

            result.add_done_callback(finished)
        return result

    # -- one key ---------------------------------------------------------------------------
    def get(self, key):
        return self._in_order(key, lambda: self.inner.get(key))

    def get_entry(self, key):
        return self._in_order(key, lambda: self.inner.get_entry(key))

    def expiry(self, key):
        return self._in_order(key, lambda: self.inner.expiry(key))

    def put(self, key, value, expiry_ms=0):
        return self._in_order(key, lambda: self.inner.put(key, value, expiry_ms))

    def update(self, key, fn):
        return self._in_order(key, lambda: self.inner.update(key, fn))

    def incr(self, key, delta):
        return self._in_order(key, lambda: self.inner.incr(key, delta))

    def dyn_get(self, key, r=None):
        return self._in_order(key, lambda: self.inner.dyn_get(key, r))

    def dyn_put(self, key, context, value, **options):
        return self._in_order(key, lambda: self.inner.dyn_put(key, context, value, **options))

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
        return then(gather([self._in_order(k, lambda k=k: self.inner.delete([k]))
                            for k in keys]), sum)

    def flush(self):
        # every key's earlier operations come first: FLUSHDB waits for them all
        tails = list(self._tails.values())
        if not tails:
            return self.inner.flush()
        gate = gather([after(t, lambda: None) for t in tails])
        return after(gate, self.inner.flush)

