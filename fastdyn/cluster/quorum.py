"""The quorum coordinator: the coordinator interface (`coordinator.py`) run over N replicas.

Any node coordinates any key. For each operation it takes the key's active preference list
(`apl.py`: the first N reachable nodes, fallbacks standing in for unreachable primaries with a
hint), sends the replica requests (its own replica is a direct call into the store, the others
go through the peer pool, whose frames leave once per event-loop turn), and feeds the answers
to the pure cores (`put_core.py`, `get_core.py`). The caller gets a `Pending` completed by
callbacks: no Task or Future per request. The per-key work of the common case (issuing a read
or a write to reachable primaries, each replica's answer) is C, in ext/_quorum.pyx; this module
decides the rest.

Writes
- A plain Redis write (SET, DEL, EXPIRE ...) is last-writer-wins: the coordinator stamps it
  with its hybrid logical clock and replicates the small object of that one write; each
  replica syncs it in, which drops everything older (object.py). No read is needed.
- A causal write (DYN.PUT/DYN.DEL) and a counter update read a quorum first, apply the
  operation to the merged object and replicate the result.
- A primary that fails during a write gets a hint kept by the coordinator, so it receives the
  write when it is back (hinted handoff), whether or not W was reached without it. The hint
  counts toward W only when the coordinator is not already one of the write's replicas.

Reads answer at R replies with the LWW winner (GET) or every sibling (DYN.GET); once all asked
replicas have answered, the ones that sent something older get the merge (read repair).

Read-modify-write commands (SETNX, GETSET, APPEND, INCR, EXPIRE ...) are read quorum ->
decide -> write quorum: not atomic against a concurrent writer of the same key through another
node (docs/cluster.md).
"""
import functools
import logging

import numpy as np

from fastdyn.cluster import object as vo
from fastdyn.cluster.apl import Target, active_targets, effective
from fastdyn.cluster.coordinator import DELETE, KEEP, check_keys, now_ms
from fastdyn.cluster.dvv import decode_context, encode_context, node_id
from fastdyn._hash import hash64
from fastdyn.cluster.keyspace import live_keys_from, merge_pages
from fastdyn._quorum import (Batch, PlainPath, Write, coordinator_get, coordinator_put,
                             merge_encoded, queue_request, read_quorum, write_to_primaries)
from fastdyn.cluster.put_core import FAILED, PutCore
from fastdyn.cluster.replica import KeyCount
from fastdyn.errors import (BadContext, BadObject, CommandError, HintStoreFull,
                            PeerUnreachable, ProtocolError, SiblingLimitExceeded, StorageError)
from fastdyn.peer import messages as m
from fastdyn.pending import Pending, gather, then

log = logging.getLogger("fastdyn.cluster")


class QuorumCoordinator:
    direct_store = None   # replicated: no command is a single store call

    def __init__(self, name, replica, hints, members, pool, hlc, n=3, r=2, w=2, dw=0,
                 timeout_s=2.0, clock=now_ms, max_siblings=vo.MAX_SIBLINGS,
                 warn_siblings=vo.WARN_SIBLINGS, log=None):
        self.name = name
        self.node = node_id(name)
        self.replica = replica
        self.store = replica.store
        self.hints = hints
        self.members = members
        self.pool = pool
        self.commits = None  # the node's GroupCommit: a durable local write waits for its fsync
        self.hlc = hlc
        self.n, self.r, self.w, self.dw = n, r, w, dw
        self.timeout_s = timeout_s
        self.clock = clock
        self.key_count = KeyCount(replica, clock, members.ring.partition_count)
        self.limits = {"max_siblings": max_siblings, "warn_siblings": warn_siblings}
        self.log = log
        self._outbox = {}    # (node, kind) -> ([items], [callbacks], [args]) of this turn
        self._quorum = (None, None)   # (members, Quorum) of the default R/W
        self._as_primary = (None, {})  # (ring, primaries tuple -> [Target(node, None), ...])
        self._plain = PlainPath(self)     # GET and SET, in C
        self.stats = {"read_repairs": 0, "hints_stored": 0, "quorum_failures": 0,
                      "sibling_warnings": 0, "lww_restamps": 0, "forwarded": 0}

    # -- shape --------------------------------------------------------------------------
    @property
    def write_seq(self) -> int:
        return self.replica.write_seq

    def quorum(self, r=None, w=None):
        size = len(self.members)
        if r is None and w is None:
            cached_size, q = self._quorum
            if cached_size == size:
                return q
            q = effective(self.n, self.r, self.w, size)
            self._quorum = (size, q)
            return q
        return effective(self.n, self.r if r is None else r, self.w if w is None else w, size)

    def replication(self) -> dict:
        q = self.quorum()
        return {"n": self.n, "r": self.r, "w": self.w, "members": list(self.members.names()),
                "n_effective": q.n, "r_effective": q.r, "w_effective": q.w}

    def reachable(self, node: str) -> bool:
        return node == self.name or self.pool.reachable(self.members.address(node))

    def _targets(self, key, n):
        """(primaries, targets): the key's first n ring members, and its active targets (the
        primaries themselves when all are reachable, the common case)."""
        ring = self.members.ring
        primaries = ring.primaries(key, n)
        if self.pool.down:
            reachable = self.reachable
            for node in primaries:
                if not reachable(node):
                    return primaries, active_targets(ring.preference_list(key, len(ring)), n,
                                                     reachable)
        cache_ring, cache = self._as_primary
        if cache_ring is not ring:
            cache = {}
            self._as_primary = (ring, cache)
        targets = cache.get(primaries)
        if targets is None:
            # one list per distinct primaries tuple of this ring (at most one per partition)
            targets = cache[primaries] = [Target(node, None) for node in primaries]
        return primaries, targets

    # -- replica requests ----------------------------------------------------------------
    def _send(self, node, kind, item, callback, arg):
        """Queue one key's request to node. Every item of a turn for the same node and kind
        leaves in one batched frame; callback(arg, result) gets that key's (status, blob) or
        an exception (a Write or Read as callback: its answer from target arg)."""
        queue_request(self, node, kind, item, callback, arg)

    def _flush_outbox(self):
        box, self._outbox = self._outbox, {}
        for (node, kind), (items, callbacks, args) in box.items():
            if kind == _DURABLE_PUT:
                kind, payload = m.REPLICA_PUT, m.pack_puts(items, m.PUT_DURABLE)
            else:
                payload = _PACK[kind](items)
            self.pool.request(self.members.address(node), kind, payload,
                              self.timeout_s, Batch(callbacks, args).split)

    def _read(self, key, r=None, answer=None):
        """Pending (or direct) merged encoding of key from an R quorum, with read repair;
        answer(encoding) in its place when given (a failure of it is the result)."""
        q = self.quorum(r=r)
        return read_quorum(self, key, self._targets(key, q.n)[1], q.r, answer, merge_encoded)

    def _read_repair(self, key, core):
        try:
            merged, stale = core.repairs()
        except BadObject:
            return
        if merged is None or not stale:
            return
        self.stats["read_repairs"] += len(stale)
        for node in stale:
            if node == self.name:
                self.replica.merge_in(key, merged)
            else:
                self._send(node, m.REPLICA_PUT, (key, merged), _ignore, None)

    def _write(self, key, data, w=None, dw=None, restamp=None):
        """Replicate an encoded object to key's targets: Pending(None) or a direct None.
        restamp(newer_ts): the write again, once a replica answered a newer one."""
        q = self.quorum(w=w)
        primaries, targets = self._targets(key, q.n)
        dw = self.dw if dw is None else dw
        if self.members.moves:
            self._write_to_receivers(key, data)
        if not dw and targets[-1].hint_for is None and len(targets) == len(primaries):
            return write_to_primaries(self, key, data, primaries, targets, q.w, restamp)
        write = Write(self, key, data, PutCore(len(targets), q.w, min(dw, q.n)))
        write.restamp = restamp
        name = self.name
        if len(targets) != len(primaries) or targets[-1].hint_for is not None:
            write.in_targets = any(t.node == name for t in targets)
            hinted = {t.hint_for for t in targets if t.hint_for is not None}
            for owner in primaries:
                # an unreachable primary no fallback stands in for keeps its hint here
                if owner != name and owner not in hinted and not self.reachable(owner):
                    self._keep_hint(owner, key, data)
        else:
            write.in_targets = name in primaries
        core = write.core
        if core.outcome == FAILED:
            self.stats["quorum_failures"] += 1
            raise CommandError(core.error())
        durable = write.durable = core.dw > 0   # replicas acknowledge once it is fsynced
        put_kind = _DURABLE_PUT if durable else m.REPLICA_PUT
        for t in targets:
            if t.node == name:
                try:
                    if t.hint_for is None:
                        self.replica.merge_in(key, data)
                    else:
                        self.hints.add(t.hint_for, key, data)
                    if durable:
                        # acknowledged by the turn's shared fsync, off the event loop
                        self.commits.wait_synced(_durable_locally, write, None)
                    else:
                        core.ack()
                except (StorageError, HintStoreFull) as exc:
                    if self.log:
                        self.log.warning("local replica write of %r failed: %s", key, exc)
                    core.fail()
            elif t.hint_for is None:
                self._send(t.node, put_kind, (key, data), write, t)
            else:
                self._send(t.node, m.HINT, (t.hint_for, key, data), write, t)
        write.settle()
        return write.result()

    def _write_to_receivers(self, key, data) -> None:
        """While a handoff moves key's partition, its writes also go to the nodes receiving
        it (they do not count towards W): the handoff's fold may have passed the key already."""
        pairs = self.members.moves.get(self.members.ring.partition(key))
        for _, receiver in pairs or ():
            if receiver == self.name:
                try:
                    self.replica.merge_in(key, data)
                except StorageError as exc:
                    if self.log:
                        self.log.warning("write of %r for a handoff failed: %s", key, exc)
            else:
                self._send(receiver, m.REPLICA_PUT, (key, data), _ignore, None)

    def _keep_hint(self, owner, key, data) -> bool:
        try:
            self.hints.add(owner, key, bytes(data))
        except (HintStoreFull, StorageError) as exc:
            if self.log:
                self.log.warning("no hint kept for %s: %s", owner, exc)
            return False
        self.stats["hints_stored"] += 1
        return True

    # -- decoding helpers ------------------------------------------------------------------
    def _winner(self, data):
        if data is None:
            return None
        return vo.lww_winner(vo.decode(data), self.clock(), self.replica.flush_epoch)

    def _object(self, data):
        return vo.NOTHING if data is None else vo.decode(data)

    # -- reads -----------------------------------------------------------------------------
    def get_entry(self, key):
        check_keys([key])
        return then(self._read(key), self._winner)

    # get(key): C (ext/_quorum.pyx) when every member is reachable; _get otherwise
    get = coordinator_get

    def _get(self, key):
        check_keys([key])
        return self._read(key, answer=self._value)

    def _value(self, data):
        if data is None:
            return None
        value = vo.plain_value(data, self.replica.flush_epoch)
        if value is not None:
            return value
        entry = self._winner(data)
        return None if entry is None else entry[0]

    def get_many(self, keys):
        return gather([self.get(k) for k in keys])

    def expiry(self, key):
        return then(self.get_entry(key), lambda e: None if e is None else e[1])

    def exists(self, keys):
        return then(gather([self.get_entry(k) for k in keys]),
                    lambda entries: sum(1 for e in entries if e is not None))

    def scan(self, cursor: int, count: int):
        """A page of the cluster's keys in hash order (keyspace.py): (next cursor, keys)."""
        return self._listing(cursor, count)

    def keys(self):
        return then(self._listing(0, _ALL), lambda result: result[1])

    def size(self):
        """DBSIZE: per partition, the largest of its replicas' counts of live keys, added up;
        each member counts afresh for it (replica.KeyCount.when_counted: a count that begins
        after the request, in C, 16,384 keys a turn), so the answer holds every write
        acknowledged before it. While a member cannot count (an older node, unreachable),
        every key of every member is listed instead."""
        ring, n = self.members.ring, self.quorum().n
        peers = self.members.peers()
        asked = [p for p in peers if self.reachable(p)]
        if len(peers) - len(asked) >= n:
            raise CommandError(f"ERR cannot count every key: {len(peers) - len(asked)} members "
                               f"are unreachable, so some keys may have no replica to answer")
        counts = {}
        pending, left = Pending(), [len(asked) + 1]

        def answered(member, result):
            if isinstance(result, np.ndarray) or result is None:
                counts[member] = result
            elif isinstance(result, Exception):
                counts[member] = None
            else:
                try:
                    counts[member] = np.array(m.unpack_counts(result), dtype=np.uint64)
                except ProtocolError:
                    counts[member] = None
            left[0] -= 1
            if not left[0]:
                pending.complete(None)

        def add_up(_):
            if any(c is None for c in counts.values()):   # a member cannot count: list
                return then(self.keys(), len)
            return _add_up_counts(counts, ring, n)
        payload = m.pack_count_request(ring.partition_count)
        for peer in asked:
            self.pool.request(self.members.address(peer), m.KEY_COUNTS, payload,
                              self.timeout_s, functools.partial(answered, peer))
        self.key_count.when_counted(functools.partial(answered, self.name))
        return then(pending, add_up)

    def local_size(self) -> int:
        """Live keys held by this node (INFO's keyspace line; replica.KeyCount)."""
        return self.key_count.counts()[0]

    def expires(self) -> int:
        """Of the live keys held by this node, those with a TTL (INFO's keyspace line)."""
        return self.key_count.counts()[1]

    def _listing(self, start: int, limit: int):
        peers = self.members.peers()
        asked = [p for p in peers if self.reachable(p)]
        n = self.quorum().n
        if len(peers) - len(asked) >= n:
            raise CommandError(f"ERR cannot list every key: {len(peers) - len(asked)} members "
                               f"are unreachable, so some keys may have no replica to answer")
        page = live_keys_from(self.store, start, limit, self.clock(), self.replica.flush_epoch)
        pages = [page]
        state = {"exhausted": len(page) < limit, "left": len(asked), "failed": 0}
        if not asked:
            return merge_pages(pages, limit, state["exhausted"])
        pending = Pending()

        def answered(result):
            if isinstance(result, Exception):
                state["failed"] += 1
            else:
                try:
                    keys = m.unpack_keys(result)
                except ProtocolError:
                    keys = None
                if keys is None:
                    state["failed"] += 1
                else:
                    pages.append([(hash64(k), k) for k in keys])
                    state["exhausted"] &= len(keys) < limit
            state["left"] -= 1
            if state["left"]:
                return
            if len(peers) - len(asked) + state["failed"] >= n:
                pending.complete(CommandError(
                    "ERR cannot list every key: members failed to answer during the listing"))
            else:
                pending.complete(merge_pages(pages, limit, state["exhausted"]))

        payload = m.pack_listing(start, min(limit, _ALL))
        for peer in asked:
            self.pool.request(self.members.address(peer), m.KEYS, payload,
                              self.timeout_s * 2, answered)
        return pending

    # -- writes ----------------------------------------------------------------------------
    def _lww(self, key, value, expiry_ms=0, tombstone=False, w=None, again=True):
        """A plain write. A replica holding a newer write answers it; the write is then stamped
        once more, above it: a write made after another was acknowledged wins over it even
        through a node whose clock is behind and had not seen it (VERSIONING.md)."""
        try:
            data = vo.encode_lww(self.node, value, self.hlc.now(), expiry_ms,
                                 tombstone=tombstone)
        except ValueError as exc:
            raise CommandError(f"ERR {exc}") from None

        def restamp(newer):
            self.hlc.observe(newer)
            self.stats["lww_restamps"] += 1
            return self._lww(key, value, expiry_ms, tombstone, w, again=False)

        return self._write(key, data, w=w, restamp=restamp if again else None)

    # put(key, value, expiry_ms=0): a plain SET is C (ext/_quorum.pyx), the rest _put
    put = coordinator_put

    def _put(self, key, value, expiry_ms=0):
        check_keys([key])
        if expiry_ms and expiry_ms <= self.clock():
            return self._lww(key, b"", tombstone=True)
        return self._lww(key, value, expiry_ms)

    def put_many(self, pairs):
        check_keys([k for k, _ in pairs])
        return then(gather([self._lww(k, v) for k, v in pairs]), lambda _: None)

    def delete(self, keys):
        check_keys(keys)

        def remove(entries):
            # a key named twice is deleted (and counted) once, as in Redis
            present = list(dict.fromkeys(k for k, e in zip(keys, entries) if e is not None))
            return then(gather([self._lww(k, b"", tombstone=True) for k in present]),
                        lambda _: len(present))

        return then(gather([self.get_entry(k) for k in keys]), remove)

    def flush(self):
        """FLUSHDB: a new flush epoch here, then at every member; Pending until every
        reachable member holds it (one that is not gets it when it is reachable again)."""
        epoch = self.hlc.now()
        self.replica.set_flush_epoch(epoch)
        self.hints.drop_all()
        peers = [p for p in self.members.peers() if self.reachable(p)]
        if not peers:
            return None
        pending = Pending()
        left = [len(peers)]

        def done(_result):
            left[0] -= 1
            if not left[0]:
                pending.complete(None)

        for peer in peers:
            self.send_epoch(peer, done)
        return pending

    def send_epoch(self, peer, callback=None):
        """Tell peer this node's flush epoch (it keeps the greater); learn the peer's."""
        def answered(result):
            if not isinstance(result, Exception):
                try:
                    theirs = m.unpack_epoch(result)
                except ProtocolError:
                    theirs = 0
                if theirs > self.replica.flush_epoch:
                    # hints stay: their receivers drop what the epoch covers
                    self.replica.set_flush_epoch(theirs)
            if callback is not None:
                callback(result)

        self.pool.request(self.members.address(peer), m.FLUSH,
                          m.pack_epoch(self.replica.flush_epoch), self.timeout_s, answered)

    def sweep_expired(self, max_keys: int) -> int:
        return self.store.sweep_expired(max_keys)

    # -- read-modify-write -----------------------------------------------------------------
    def update(self, key, fn):
        return then(self.update_many(key, [fn]), _only)

    def update_many(self, key, fns):
        """update(key, fn) of each fn in turn as one read and at most one write: each fn
        decides on the state the ones before it left. A list of replies (an exception in place
        of the reply of a fn that raised one)."""
        check_keys([key])

        def decide(entry):
            value, expiry = entry if entry is not None else (None, 0)
            now = self.clock()
            replies = []
            changed = False
            for fn in fns:
                try:
                    state, reply = fn(value, expiry, now)
                except Exception as exc:
                    replies.append(exc)
                    continue
                replies.append(reply)
                if state is KEEP:
                    continue
                if state is DELETE or (state[1] and state[1] <= now):
                    if value is not None:
                        value, expiry, changed = None, 0, True
                else:
                    (value, expiry), changed = state, True
            if not changed:
                return replies
            if value is None:
                return then(self._lww(key, b"", tombstone=True), lambda _: replies)
            return then(self._lww(key, value, expiry), lambda _: replies)

        return then(self.get_entry(key), decide)

    def incr(self, key, delta: int):
        return then(self.incr_many(key, [delta]), _only)

    def incr_many(self, key, deltas):
        """incr(key, delta) of each delta in turn as one read and one write: a list of the
        new values (a CommandError in place of an increment refused)."""
        check_keys([key])
        forwarded = self._forward(key, m.INCR, list(deltas), _counter_results)
        if forwarded is not None:
            return forwarded

        def add(data):
            obj = self._object(data)
            now, epoch = self.clock(), self.replica.flush_epoch
            replies = []
            added = False
            for delta in deltas:
                try:
                    result = vo.counter_add(obj, self.node, delta, now, epoch)
                except CommandError as exc:       # not an integer, or an overflow
                    replies.append(exc)
                    continue
                except (ValueError, BadObject) as exc:
                    replies.append(CommandError(f"ERR {exc}"))
                    continue
                obj, added = result.object, True
                replies.append(result.value)
            if not added:
                return replies
            return then(self._write(key, vo.encode(obj)), lambda _: replies)

        return then(self._read(key), add)

    def compound(self, keys, fn):
        """fn(self): the steps of one command (ordered by OrderedCoordinator)."""
        return fn(self)

    # -- forwarding --------------------------------------------------------------------------
    def _forward(self, key, op, args, decode):
        """A causal write or counter update adds a dot or counter entry of its coordinator's,
        which must follow every earlier one of that coordinator: only a node holding a replica
        of the key is sure to see them all (a read quorum may miss one under sloppy quorum). A
        node that is not among the key's N primaries hands the operation to the first reachable
        one (as Riak's put FSM forwards to a vnode); None: coordinate here (this node is a
        primary, or none is reachable)."""
        primaries = self.members.ring.primaries(key, self.quorum().n)
        if self.name in primaries:
            return None
        targets = [node for node in primaries if self.reachable(node)]
        if not targets:
            return None
        self.stats["forwarded"] += 1
        pending = Pending()
        payload = m.pack_coordinate(op, key, args)

        def ask(target):
            # the replica reads and writes quorums itself: twice a replica request's deadline
            self.pool.request(self.members.address(target), m.COORDINATE, payload,
                              self.timeout_s * 2, lambda result: answered(target, result))

        def answered(target, result):
            if isinstance(result, PeerUnreachable):
                # never sent: the next reachable primary may take it (a timeout may have
                # written, so it is not tried again: a counter would count twice)
                rest = [t for t in targets[targets.index(target) + 1:] if self.reachable(t)]
                if rest:
                    ask(rest[0])
                    return
            if isinstance(result, Exception):
                pending.complete(CommandError(
                    f"ERR the replica {target} this write was handed to failed: {result}"))
                return
            try:
                pending.complete(decode(m.unpack_results(result)))
            except (ProtocolError, ValueError) as exc:
                pending.complete(CommandError(f"ERR bad answer from {target}: {exc}"))

        ask(targets[0])
        return pending

    # -- causal (DYN.*) ----------------------------------------------------------------------
    def dyn_get(self, key, r=None):
        """[context bytes, [values]] of every live sibling."""
        check_keys([key])

        def answer(data):
            result = vo.read(self._object(data), self.clock(), self.replica.flush_epoch)
            return [encode_context(result.context), result.values]

        return then(self._read(key, r=r), answer)

    def dyn_put(self, key, context, value, w=None, dw=None, ttl_ms=0, tombstone=False):
        """The new context (bytes) after a causal write of value (or a tombstone)."""
        check_keys([key])
        try:
            ctx = decode_context(context)
        except (BadContext, ValueError) as exc:
            raise CommandError(f"ERR bad context: {exc}") from None
        forwarded = self._forward(key, m.DYN_PUT, (context, value, tombstone, w, dw, ttl_ms),
                                  _context_result)
        if forwarded is not None:
            return forwarded
        expiry = self.clock() + ttl_ms if ttl_ms else 0

        def write(data):
            try:
                result = vo.causal_write(self._object(data), ctx, self.node, value,
                                         self.hlc.now(), expiry, tombstone=tombstone,
                                         **self.limits)
            except SiblingLimitExceeded as exc:
                raise CommandError(f"ERR {exc}") from None
            except (BadContext, ValueError, BadObject) as exc:
                raise CommandError(f"ERR {exc}") from None
            if result.sibling_warning:
                self.stats["sibling_warnings"] += 1
                if self.log:
                    self.log.warning("key %r holds %d siblings", key,
                                     len(result.object.siblings))
            return then(self._write(key, vo.encode(result.object), w=w, dw=dw),
                        lambda _: encode_context(result.context))

        # the read before the write asks as many replicas as the write needs, so a write the
        # caller allows with W=1 is not refused by a read quorum it did not ask for
        return then(self._read(key, r=self.quorum(w=w).w), write)


def _context_result(results):
    """A forwarded DYN.PUT's one result: the new context, or the replica's error."""
    [(status, blob)] = results
    if status != m.OK:
        return CommandError(bytes(blob).decode(errors="replace"))
    return bytes(blob)


def _counter_results(results):
    """A forwarded INCR batch's results: each new value, or the replica's error for it."""
    return [int(bytes(blob)) if status == m.OK
            else CommandError(bytes(blob).decode(errors="replace"))
            for status, blob in results]


def _durable_locally(error, write, _unused) -> None:
    """The group commit's answer for the coordinator's own copy of a DW write."""
    if error is None:
        write.core.ack(True)
    else:
        write.core.fail()
    write.settle()


def _ignore(_arg, _result) -> None:
    pass


def _only(replies):
    """The reply of a batch of one operation (raised when it is an error)."""
    reply = replies[0]
    if isinstance(reply, Exception):
        raise reply
    return reply


_PACK = {m.REPLICA_GET: m.pack_keys, m.REPLICA_PUT: m.pack_puts, m.HINT: m.pack_hints}
def _add_up_counts(counts, ring, n) -> int:
    """The sum over partitions of the largest count among the members replicating each."""
    best = np.zeros(ring.partition_count, dtype=np.uint64)
    covered = np.zeros(ring.partition_count, dtype=bool)
    for member, mine in counts.items():
        if member not in ring.members or len(mine) != ring.partition_count:
            continue
        parts = np.asarray(ring.partitions_of(member, n), dtype=np.int64)
        best[parts] = np.maximum(best[parts], mine[parts])
        covered[parts] = True
    if not covered.all():
        raise CommandError("ERR cannot count every key: no replica of some partitions "
                           "answered")
    return int(best.sum())


_ALL = (1 << 32) - 1               # a listing "limit" that means every key
_DURABLE_PUT = -m.REPLICA_PUT     # outbox key of REPLICA_PUTs acknowledged after an fsync
