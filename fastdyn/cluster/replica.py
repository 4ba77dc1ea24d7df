"""This node's replica of the keys it holds: versioned objects in the storage engine.

Every value in a cluster node's store is an encoded object (`object.py`); a replica write is a
sync of the incoming object into the stored one, so applying the same write twice, or writes
in any order, leaves the same bytes. The store's own expiry of a record is set only where it
cannot hide a newer write: a record expires when every value it holds has expired.

The flush epoch (FLUSHDB/FLUSHALL) is persisted beside the data (`FLUSH_EPOCH`): every value
stamped before it reads as absent and is pruned when its key is next written, so neither a
hint nor a stale replica can bring flushed data back.
"""
import asyncio
import os
import time

import numpy as np

from fastdyn._hash import hash64
from fastdyn._replica import ReplicaCore, answer_gets, apply_puts, census_step
from fastdyn.cluster import object as vo
from fastdyn.cluster.statefile import write_atomically
from fastdyn.errors import BadObject, StorageError

EPOCH_FILE = "FLUSH_EPOCH"


def record_expiry(obj) -> int:
    """The expiry the store may give the record: the latest expiry when every value has one
    and no counter or tombstone depends on the record; 0 (keep) otherwise."""
    if obj.counter is not None:
        return 0
    latest = 0
    for s in obj.siblings:
        if not s.expiry or s.flags & vo.TOMBSTONE:
            return 0
        latest = max(latest, s.expiry)
    return latest


class Replica(ReplicaCore):
    def __init__(self, store, data_dir: str, hlc):
        super().__init__(store, hlc)
        self.epoch_path = os.path.join(data_dir, EPOCH_FILE)
        try:
            with open(self.epoch_path) as f:
                self.flush_epoch = int(f.read().strip() or 0)
        except FileNotFoundError:
            self.flush_epoch = 0
        hlc.observe(self.flush_epoch)
        # keys whose stored object holds only tombstones (and values the store does not expire
        # by itself) -> when written here (ms): what anti-entropy may reap after the grace
        self.tombstones = {}

    def get(self, key: bytes):
        """The stored encoding of key, or None."""
        return self.store.get(key)

    def apply_puts(self, payload, slow):
        """A REPLICA_PUT batch: plain writes synced in C (ext/_replica.pyx), every other key
        by slow(key, object) (the general merge_in); a PutBatch of per-key results."""
        batch = apply_puts(self.store, payload, self.flush_epoch, self.hlc.accept_limit(), slow)
        if batch.max_ts:
            self.hlc.observe(batch.max_ts)
        self.write_seq += batch.writes
        return batch

    def answer_gets(self, payload, slow=None):
        """A REPLICA_GET batch answered as a results payload; slow(key) -> (status, blob)
        answers each key instead when given."""
        return answer_gets(self.store, payload, slow)

    def get_object(self, key: bytes):
        data = self.store.get(key)
        return None if data is None else vo.decode(data)

    def merge_in(self, key: bytes, data) -> bytes:
        """Sync an incoming encoded object into the stored one; returns the stored bytes.
        Raises BadObject for bytes that are not an object (nothing is written)."""
        if key.__class__ is bytes:
            # a plain write over nothing or over another plain write (the common case) is
            # decided in C from the two headers (ext/_replica.pyx)
            stored = self.merge_plain_in(key, data)
            if stored is not None:
                return stored
        incoming = vo.decode(data)
        self.hlc.observe(vo.max_timestamp(incoming))
        stored = self.store.get(key)
        merged = incoming if stored is None else vo.sync(vo.decode(stored), incoming)
        return self.store_object(key, merged, stored)

    def store_object(self, key: bytes, obj, stored=None) -> bytes:
        if self.flush_epoch:
            obj = vo.prune(obj, self.flush_epoch)
            if not obj.siblings and obj.counter is None:
                if stored is not None:
                    self.store.delete(key)
                    self.write_seq += 1
                return b""
        data = vo.encode(obj)
        if data != stored:
            expiry = record_expiry(obj)
            self.store.put(key, data, expiry)
            self.write_seq += 1
            if not expiry and vo.dead_since(obj) is not None:
                self.tombstones[key] = int(time.time() * 1000)
        return data

    def set_flush_epoch(self, epoch: int) -> bool:
        """Raise the flush epoch (never lowers it); True when it moved. Everything stamped
        before it goes: the whole store when nothing here is newer, else key by key."""
        if epoch <= self.flush_epoch:
            return False
        newer_here = epoch <= self.hlc.last
        self.hlc.observe(epoch)
        write_atomically(self.epoch_path, str(epoch).encode())
        self.flush_epoch = epoch
        if newer_here:
            for key, data, _ in list(self.store.items()):
                try:
                    self.store_object(key, vo.decode(data), data)
                except BadObject:
                    continue
        else:
            self.store.clear()
        self.write_seq += 1
        return True

    def count_step(self, cursor, max_entries: int, now_ms: int, per_partition):
        """A step of a count of the keys a plain GET finds here (`census_step`, the keys it
        leaves decided from their objects), each live key also added to its partition's
        count in `per_partition`: (restarted, next cursor or None, live, with TTL)."""
        restarted, cursor, live, ttl, others = census_step(self.store, cursor, max_entries,
                                                           now_ms, self.flush_epoch,
                                                           per_partition)
        bits = len(per_partition).bit_length() - 1
        for key in others:
            try:
                data = self.store.get(key)
                entry = None if data is None else vo.lww_winner(vo.decode(data), now_ms,
                                                                self.flush_epoch)
            except (BadObject, StorageError):
                continue
            if entry is not None:
                live += 1
                ttl += bool(entry[1])
                per_partition[hash64(key) >> (64 - bits) if bits else 0] += 1
        return restarted, cursor, live, ttl


class KeyCount:
    """The live keys a cluster member holds, those with a TTL (INFO's keyspace line), and per
    ring partition (DBSIZE). Deciding liveness reads every object (0.3-0.5 s at 100,000 keys
    when it was done in Python at each INFO), so a store of more than `step` keys is counted
    in the background, `step` keys per event-loop turn; a smaller store is counted at once.

    INFO must answer at once: `counts` shows the last count (the stored keys, tombstones not
    yet reaped included, until a first count ends), counted again every `max_age_s` for as
    long as someone asks at least once per `watched_s`. DBSIZE can wait: `when_counted` calls
    back with the per-partition counts of a count that began after it was called, so a DBSIZE
    sees every write acknowledged before it."""

    def __init__(self, replica, clock, partitions: int, step: int = 16384,
                 max_age_s: float = 2.0, watched_s: float = 60.0):
        self.replica = replica
        self.clock = clock
        self.partitions = partitions
        self.step = step
        self.max_age_s = max_age_s
        self.watched_s = watched_s
        self._counts = None        # (live, with TTL, per partition) of the last count
        self._asked = 0.0
        self._task = None
        self._waiters = []         # callbacks for the next count to begin
        self._wake = asyncio.Event()

    def counts(self) -> tuple[int, int]:
        """(live keys, live keys with a TTL) of the last count."""
        self._asked = time.monotonic()
        if self._count_now() is None and self._task is None:
            self._start()           # (a count under way or waiting its turn: not hurried)
        if self._counts is None:
            stats = self.replica.store.stats()
            return stats["keys"], stats["keys_with_expiry"]
        return self._counts[0], self._counts[1]

    def when_counted(self, callback) -> None:
        """callback(the live keys of each partition, a uint64 array) once a count that began
        now has ended; callback(None) if the store closed first."""
        self._asked = time.monotonic()
        counted = self._count_now()
        if counted is not None:
            callback(counted[2])
            return
        self._waiters.append(callback)
        self._start()

    def _count_now(self):
        """The count of a store of at most `step` keys, made now (None for a larger one)."""
        if self._task is not None or len(self.replica.store) > self.step:
            return None
        parts = np.zeros(self.partitions, dtype=np.uint64)
        _, cursor, live, ttl = self.replica.count_step(None, self.step, self.clock(), parts)
        if cursor is not None:
            return None
        self._counts = live, ttl, parts
        return self._counts

    def _start(self) -> None:
        """Count now: a new task, or the waiting one woken (an INFO polled often must not
        keep the counts going; only a DBSIZE waits for one)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._count())
        else:
            self._wake.set()

    async def _count(self) -> None:
        waiting = []
        try:
            while True:
                waiting, self._waiters = self._waiters, []
                cursor, live, ttl = None, 0, 0
                parts = np.zeros(self.partitions, dtype=np.uint64)
                while True:
                    restarted, cursor, more, more_ttl = self.replica.count_step(
                        cursor, self.step, self.clock(), parts)
                    if restarted:     # the step counted from the start (parts too)
                        live = ttl = 0
                    live, ttl = live + more, ttl + more_ttl
                    if cursor is None:
                        break
                    await asyncio.sleep(0)
                self._counts = live, ttl, parts
                for callback in waiting:
                    callback(parts)
                waiting = []
                if self._waiters:
                    continue        # asked during this count: count again at once
                if time.monotonic() - self._asked > self.watched_s:
                    return          # nobody looks: the next ask starts counting again
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.max_age_s)
                except asyncio.TimeoutError:
                    pass
        except StorageError:        # a closed store: the node is stopping
            for callback in waiting + self._waiters:
                callback(None)
            self._waiters = []
        finally:
            self._task = None
