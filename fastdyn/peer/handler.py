"""The replica side of the peer protocol: what a node does for another node's coordinator.

REPLICA_GET answers the stored object of each key, merged with any hint this node keeps for
it (a fallback answers what it stands in for); REPLICA_PUT syncs each object into the store
(a plain write that lost to a newer value is answered with that value) and answers once the
node's group commit has written the records, fsynced for a DW put or under --sync always (one
fsync covers the turn's client and replica writes); HINT keeps each object for its intended
owner; FLUSH raises the flush epoch and answers the epoch it holds then; KEYS answers a page of
this node's live keys in hash order; COORDINATE runs a causal write or counter update that a
node holding no replica of the key hands over, through this node's coordinator; KEY_COUNTS
answers a fresh count of this node's live keys per partition (DBSIZE); GOSSIP_SYN and
GOSSIP_PUSH go to the node's membership, HANDOFF_DONE and HANDOFF_STATUS to its handoff, AE_ROOTS,
AE_TREE, AE_LISTING and AE_DONE to its anti-entropy (fastdyn/cluster/runtime.py). A key whose object is bad
gets an ERROR result of its own; the rest of the batch is served.
"""
import asyncio
import time

from fastdyn.cluster import object as vo
from fastdyn.cluster.keyspace import live_keys_from
from fastdyn.errors import BadObject, HintStoreFull, ProtocolError, StorageError
from fastdyn.peer import messages as m
from fastdyn.pending import Pending, each, then

_OK_EMPTY = (m.OK, b"")


def _attempt(fn, *args):
    """fn(*args), or the exception it raises."""
    try:
        return fn(*args)
    except Exception as exc:
        return exc


def _answer_task(conn, frame, task) -> None:
    """Reply with what a task returned, or with its error."""
    if task.cancelled():
        return
    error = task.exception()
    if error is None:
        conn.reply(frame, task.result())
    else:
        conn.reply_error(frame, str(error))


def _coordinated(result):
    """One COORDINATE result: a context (bytes), a counter value (int) or the client's error."""
    if isinstance(result, Exception):
        return (m.ERROR, str(result).encode())
    if isinstance(result, int):
        return (m.OK, b"%d" % result)
    return (m.OK, result)


class ReplicaHandler:
    def __init__(self, replica, hints, commits):
        """commits: the node's GroupCommit (fastdyn/server/group_commit.py), which answers a
        REPLICA_PUT once its records are written, or fsynced for a DW put or --sync always."""
        self.replica = replica
        self.hints = hints
        self.commits = commits
        self.coordinator = None   # this node's coordinator, for COORDINATE (set by the runtime)
        self.membership = None    # answers gossip: answer_syn(payload), apply_push(payload)

    def handle(self, conn, frame) -> None:
        kind = frame.kind
        if kind == m.REPLICA_GET:
            slow = self._get_hinted if self.hints.owners() else None
            conn.reply(frame, self.replica.answer_gets(frame.payload, slow))
            return
        if kind == m.REPLICA_PUT:
            batch = self.replica.apply_puts(frame.payload, self._put)
            wait = self.commits.wait_synced if batch.durable else self.commits.wait
            wait(self._answer_put, conn, (frame, batch.results))
            return
        elif kind == m.HINT:
            results = [self._hint(owner, key, obj)
                       for owner, key, obj in m.unpack_hints(frame.payload)]
        elif kind == m.KEYS:
            start, limit = m.unpack_listing(frame.payload)
            page = live_keys_from(self.replica.store, start, limit, int(time.time() * 1000),
                                  self.replica.flush_epoch)
            conn.reply(frame, m.pack_keys([key for _, key in page]))
            return
        elif kind == m.FLUSH:
            self.replica.set_flush_epoch(m.unpack_epoch(frame.payload))
            conn.reply(frame, m.pack_epoch(self.replica.flush_epoch))
            return
        elif kind == m.COORDINATE and self.coordinator is not None:
            self._coordinate(conn, frame)
            return
        elif kind == m.KEY_COUNTS and self.coordinator is not None:
            key_count = self.coordinator.key_count
            try:
                wanted = m.unpack_count_request(frame.payload)
            except ProtocolError as exc:
                conn.reply_error(frame, str(exc))
                return
            if wanted != key_count.partitions:
                conn.reply_error(frame, f"this node has {key_count.partitions} partitions, "
                                        f"not {wanted}")
                return

            def counted(parts):     # a count that began now: it holds every earlier write
                if parts is None:
                    conn.reply_error(frame, "this node's store is closed")
                else:
                    conn.reply(frame, m.pack_counts(parts.tolist()))
            key_count.when_counted(counted)
            return
        elif kind in (m.GOSSIP_SYN, m.GOSSIP_PUSH, m.HANDOFF_DONE, m.HANDOFF_STATUS,
                      m.AE_TREE, m.AE_LISTING, m.AE_DONE, m.AE_ROOTS) \
                and self.membership is not None:
            try:
                if kind in (m.AE_TREE, m.AE_LISTING, m.AE_DONE, m.AE_ROOTS):
                    ae = self.membership.anti_entropy
                    if ae is None:
                        raise ValueError("anti-entropy is off on this node")
                    if kind == m.AE_DONE:
                        ae.exchanged_with(frame.payload)
                        conn.reply(frame)
                    elif kind == m.AE_ROOTS:
                        conn.reply(frame, ae.answer_roots(frame.payload))
                    elif kind == m.AE_TREE:
                        conn.reply(frame, ae.answer_tree(frame.payload))
                    else:       # a walk of the keydir, a step per event-loop turn
                        asyncio.ensure_future(ae.answer_listing(frame.payload)) \
                            .add_done_callback(lambda task: _answer_task(conn, frame, task))
                elif kind == m.GOSSIP_SYN:
                    conn.reply(frame, self.membership.answer_syn(frame.payload))
                elif kind == m.GOSSIP_PUSH:
                    self.membership.apply_push(frame.payload)
                    conn.reply(frame)
                elif kind == m.HANDOFF_DONE:
                    self.membership.handoff.receive_done(frame.payload)
                    conn.reply(frame)
                else:
                    conn.reply(frame, self.membership.handoff.status(frame.payload))
            except (ValueError, ProtocolError) as exc:
                conn.reply_error(frame, str(exc))
            return
        else:
            conn.reply_error(frame, f"unknown message kind {kind}")
            return
        conn.reply(frame, m.pack_results(results))

    def _coordinate(self, conn, frame) -> None:
        """Run a write another node handed over because it holds no replica of the key (its
        own dot or counter entry could repeat one it cannot see); answer its results."""
        op, key, args = m.unpack_coordinate(frame.payload)
        coord = self.coordinator
        try:
            if op == m.DYN_PUT:
                context, value, tombstone, w, dw, ttl_ms = args
                result = then(coord.dyn_put(key, context, value, w=w, dw=dw, ttl_ms=ttl_ms,
                                            tombstone=tombstone), lambda ctx: [ctx])
            else:
                result = each([_attempt(coord.incr, key, delta) for delta in args])
        except Exception as exc:
            result = exc

        def answer(results):
            if isinstance(results, Exception):
                results = [results] * (1 if op == m.DYN_PUT else len(args))
            conn.reply(frame, m.pack_results([_coordinated(r) for r in results]))

        if result.__class__ is Pending:
            result.add_done_callback(answer)
        else:
            answer(result)

    def _get_hinted(self, key):
        try:
            data = self._with_hints(key, self.replica.get(key))
        except (StorageError, BadObject) as exc:
            return (m.ERROR, str(exc).encode())
        return (m.NOT_FOUND, b"") if data is None else (m.OK, data)

    def _with_hints(self, key, data):
        for owner in self.hints.owners():
            hinted = self.hints.get(owner, key)
            if hinted is not None:
                data = hinted if data is None else vo.encode(
                    vo.sync(vo.decode(data), vo.decode(hinted)))
        return data

    def _put(self, key, obj):
        try:
            plain = vo.register_write(obj)
            stored = self.replica.merge_in(key, obj)
            if plain is not None and stored and vo.newest_stamp(stored) > plain[1]:
                # a plain write that lost to a newer one here: the answer carries the stored
                # object, so the coordinator can stamp the write again above it
                return (m.OK, stored)
        except (StorageError, BadObject, ValueError) as exc:
            return (m.ERROR, str(exc).encode())
        return _OK_EMPTY

    @staticmethod
    def _answer_put(error, conn, answer):
        """The batch's records are handed to the OS (a kill -9 of this process then loses no
        write it acknowledges) and, when asked, fsynced; if that failed, no write of the
        batch is acknowledged."""
        frame, results = answer
        if error is not None:
            results = [(m.ERROR, str(error).encode())] * len(results)
        conn.reply(frame, m.pack_results(results))

    def _hint(self, owner, key, obj):
        try:
            vo.decode(obj)
            self.hints.add(owner, key, bytes(obj))
        except (StorageError, BadObject, HintStoreFull, ValueError) as exc:
            return (m.ERROR, str(exc).encode())
        return _OK_EMPTY
