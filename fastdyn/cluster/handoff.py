"""Partition handoff: the data of a membership change moves to the nodes that enter the
preference lists, and is dropped by the nodes that leave them.

While a change is pending (membership.py: `change`, `next_ring`, `moves`) every node that gives
partitions (the node each receiver replaces in a preference list) streams them to their
receivers: one pass over its keys per receiver (SCAN pages), the objects of those partitions sent as
REPLICA_PUT batches (the receiver syncs them in as it syncs a replica write, so data it
already has costs nothing and newer data is never overwritten), then HANDOFF_DONE naming the
partitions. The receiver records them (persisted, so a restart of either side resumes with
the partitions not yet acknowledged) and answers; the giver records the acknowledgement.

Meanwhile coordinators send every write of a moving partition to its receivers too
(quorum.py), so a write the fold passed before it landed still arrives. A giver waits
`settle_s` after it learns of a change before it folds, so the coordinators have heard of the
change (gossip) and already copy their writes to the receivers.

The subject of the change (the joining or leaving node) ends it once every receiver — a
reshuffle of the ring moves partitions between other members too — answers HANDOFF_STATUS with
nothing left to await: a joiner turns itself valid, a leaver removed (and then exits). Once
no change is pending (and `settle_s` more, for coordinators still writing to the old replicas),
each node deletes the keys of partitions it no longer replicates (only then: their receivers
have acknowledged them; and only after a change this node took part in,
never for members learnt at start-up).

Transfers are throttled, like Riak's handoff_concurrency and Cassandra's stream throughput:
at most `concurrency` receivers at a time, one batch in flight per receiver, and every batch
(and every SCAN page of the drop) paced by `pace` (admission.py: the node's handoff rate
scaled by the budget admission control leaves to background work).
"""
from __future__ import annotations

import asyncio
import json
import os
import time

from fastdyn.cluster.membership import JOINING, LEAVING, REMOVED, VALID
from fastdyn.cluster.statefile import StateFile, write_atomically
from fastdyn.peer import messages as m

FILE = "handoff.json"
# small steps: a giver's turn (a scan page, a batch to pack) and a receiver's (a batch to sync
# in) each delay the clients queued behind them. With 256 keys and 1,024-key pages the
# clients' p99 during a join was 1.80-2.02x its p99 before it; with these, 1.47-2.0x
# (bench/bench_membership.py --only handoff --under-load-only), the stream still about 0.2 s
BATCH_KEYS = 64
BATCH_BYTES = 64 * 1024
SCAN_PAGE = 256             # keys looked at between two yields to the event loop
RETRY_S = 1.0
DROP_PAUSE_S = 0.005        # between SCAN pages of the drop: nothing waits for it


class Handoff:
    def __init__(self, members, store, pool, data_dir, *, pace, concurrency=2,
                 settle_s=3.0, timeout_s=10.0, log=None, on_removed=None):
        self.members = members
        self.store = store
        self.pool = pool
        self.path = os.path.join(data_dir, FILE)
        self._file = StateFile(self.path, background=True)
        self.concurrency = concurrency
        self.pace = pace
        self.settle_s = settle_s
        self.timeout_s = timeout_s
        self.log = log
        self.on_removed = on_removed
        self.change = None
        self.given: dict[str, set] = {}
        self.received: set = set()
        self._load()
        self._learned_at = time.monotonic()
        self._sessions: dict[str, asyncio.Task] = {}
        self._remaining: dict[str, int] = {}   # receiver -> partitions it still awaits
        self._asking: set = set()
        self._retry_at: dict[str, float] = {}
        self._drop_after = False    # drop foreign partitions once no change is pending
        self._drop_at = 0.0
        self._cleaning = None
        self.stats = {"handoff_keys_sent": 0, "handoff_bytes_sent": 0,
                      "handoff_partitions_given": 0, "handoff_partitions_received": 0,
                      "handoff_keys_dropped": 0, "handoff_stream_ms": 0}

    # -- persisted progress ----------------------------------------------------------------
    def _load(self) -> None:
        try:
            with open(self.path) as f:
                saved = json.load(f)
            self.change = tuple(saved["change"]) if saved["change"] else None
            self.given = {r: set(ps) for r, ps in saved["given"].items()}
            self.received = set(saved["received"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path}: unreadable handoff state: {exc}") from None

    def _save(self, durable: bool = False) -> None:
        """durable: on disk before this returns (what a receiver acknowledges must be)."""
        data = json.dumps({"change": self.change,
                           "given": {r: sorted(ps) for r, ps in self.given.items()},
                           "received": sorted(self.received)}).encode()
        if durable:
            self._file.flush()
            write_atomically(self.path, data)
        else:
            self._file.save(data)

    # -- what this node owes and awaits ------------------------------------------------------
    def to_give(self) -> dict[str, set]:
        """receiver -> partitions this node still has to give it in the pending change: those
        it is the giver of, and those whose giver is unreachable and for which it is the first
        reachable other replica (a fallback giver: a join does not wait for a dead node; if
        two nodes both stream a partition, the receiver syncs the same objects twice)."""
        me = self.members.name
        out: dict[str, set] = {}
        for p, pairs in self.members.moves.items():
            for giver, receiver in pairs:
                if receiver == me or p in self.given.get(receiver, ()):
                    continue
                if giver == me or (giver in self.members.records
                                   and self._fallback(p, giver, receiver) == me):
                    out.setdefault(receiver, set()).add(p)
        return out

    def _fallback(self, partition, giver, receiver):
        """The replica that gives `partition` in place of an unreachable giver: the first
        reachable one of its current preference list; None while the giver is reachable."""
        members = self.members
        if self.pool.reachable(members.address(giver)):
            return None
        for node in members.ring.preference_list(partition, members.replicas):
            if node not in (giver, receiver) and (
                    node == members.name or self.pool.reachable(members.address(node))):
                return node
        return None

    def to_receive(self) -> set:
        me = self.members.name
        return {p for p, pairs in self.members.moves.items()
                if any(receiver == me and giver != me for giver, receiver in pairs)
                and p not in self.received}

    # -- the periodic step -----------------------------------------------------------------
    def step(self) -> None:
        members = self.members
        change = members.change
        if change != self.change:
            if self.change is not None:
                # a change this node saw through has ended: its receivers hold what it gave.
                # Coordinators that have not heard yet still write to the old replicas: the
                # drop waits for them as the streams waited
                self._drop_after = True
                self._drop_at = time.monotonic() + self.settle_s
            self.change = change
            self.given, self.received = {}, set()
            self._remaining, self._asking = {}, set()
            self._learned_at = time.monotonic()
            self._save()
        if change is None:
            if self._drop_after and time.monotonic() >= self._drop_at:
                self._drop_foreign()
            return
        name, status = change[0], change[1]
        if name == members.name:
            others = [n for n in members.ring.members if n != name]
            if status == JOINING and others and not self.to_receive() and self._all_received():
                members.set_status(name, VALID)
                self._say("every receiver has its partitions: valid")
                return
            if status == LEAVING and not self.to_give() and self._all_received():
                members.set_status(name, REMOVED)
                self._say("every receiver has its partitions: removed")
                if self.on_removed is not None:
                    self.on_removed()
                return
        if time.monotonic() - self._learned_at < self.settle_s:
            return
        now = time.monotonic()
        for receiver, partitions in sorted(self.to_give().items()):
            if len(self._sessions) >= self.concurrency:
                break
            if receiver in self._sessions or self._retry_at.get(receiver, 0) > now:
                continue
            if receiver not in members.records or not self.pool.reachable(
                    members.address(receiver)):
                continue
            task = asyncio.get_running_loop().create_task(
                self._give(change, receiver, partitions))
            self._sessions[receiver] = task

    def _all_received(self) -> bool:
        """The subject of the change asks every other receiver how many partitions it still
        awaits (HANDOFF_STATUS): True once all have answered 0 for this very change."""
        me = self.members.name
        receivers = {r for pairs in self.members.moves.values() for _, r in pairs} - {me}
        change = self.change
        for receiver in receivers:
            if self._remaining.get(receiver) == 0 or receiver in self._asking:
                continue
            if receiver not in self.members.records:
                continue
            self._asking.add(receiver)

            def answered(result, receiver=receiver):
                self._asking.discard(receiver)
                if self.change != change:
                    return
                if isinstance(result, Exception):
                    self._remaining.pop(receiver, None)
                else:
                    self._remaining[receiver] = m.unpack_remaining(result)
            self.pool.request(self.members.address(receiver), m.HANDOFF_STATUS,
                              m.pack_change(change), self.timeout_s, answered)
        return all(self._remaining.get(r) == 0 for r in receivers)

    def _say(self, text, *args) -> None:
        if self.log is not None:
            self.log.info("handoff: " + text, *args)

    # -- giving ----------------------------------------------------------------------------
    async def _give(self, change, receiver, partitions) -> None:
        address = self.members.address(receiver)
        partition = self.members.ring.partition
        started = time.monotonic()
        keys = sent = 0
        try:
            batch, size = [], 0
            async for key in self._keys():
                if self.members.change != change:
                    return
                if partition(key) not in partitions:
                    continue
                data = self.store.get(key)
                if data is None:
                    continue            # deleted or expired since the scan listed it
                batch.append((key, data))
                size += len(key) + len(data)
                if len(batch) >= BATCH_KEYS or size >= BATCH_BYTES:
                    sent += await self._send_batch(address, batch, size)
                    keys += len(batch)
                    batch, size = [], 0
            if batch:
                sent += await self._send_batch(address, batch, size)
                keys += len(batch)
            await self._request(address, m.HANDOFF_DONE, m.pack_done(change, partitions))
        except Exception as exc:
            self._retry_at[receiver] = time.monotonic() + RETRY_S
            self._say("giving %d partitions to %s stopped (%s); will resume",
                      len(partitions), receiver, exc)
            return
        finally:
            self._sessions.pop(receiver, None)
        if self.members.change == change == self.change:
            self.given.setdefault(receiver, set()).update(partitions)
            self._save()
        self.stats["handoff_partitions_given"] += len(partitions)
        self.stats["handoff_stream_ms"] += int((time.monotonic() - started) * 1000)
        self._say("gave %d partitions to %s: %d keys, %d bytes in %.2f s", len(partitions),
                  receiver, keys, sent, time.monotonic() - started)

    async def _send_batch(self, address, batch, size) -> int:
        await self.pace("handoff", size)
        result = await self._request(address, m.REPLICA_PUT, m.pack_puts(batch))
        for status, blob in m.unpack_results(result):
            if status == m.ERROR:
                raise RuntimeError(f"receiver refused a key: {bytes(blob).decode(errors='replace')}")
        self.stats["handoff_keys_sent"] += len(batch)
        self.stats["handoff_bytes_sent"] += size
        return size

    def _request(self, address, kind, payload):
        return self.pool.call(address, kind, payload, self.timeout_s)

    async def _keys(self, paced: bool = False):
        """Every key of the store, a SCAN page at a time with the event loop served between
        pages (no pass over the whole store at once: a fold of a million keys would stall
        the node's clients); `paced` (nothing waits on it): DROP_PAUSE_S more between pages,
        and the page's key bytes paced as handoff traffic."""
        cursor = 0
        while True:
            cursor, keys = self.store.scan(cursor, SCAN_PAGE)
            for key in keys:
                yield key
            if cursor == 0:
                return
            await asyncio.sleep(DROP_PAUSE_S if paced else 0)
            if paced:
                await self.pace("handoff", sum(map(len, keys)))

    # -- receiving -------------------------------------------------------------------------
    def receive_done(self, payload) -> None:
        """HANDOFF_DONE from a giver: the partitions it names are all here."""
        (name, version, crc), partitions = m.unpack_done(payload)
        self._check_change(name, version, crc)
        if self.members.change != self.change:
            self.step()
        self.received.update(partitions)
        self.stats["handoff_partitions_received"] += len(partitions)
        self._save(durable=True)

    def status(self, payload) -> bytes:
        """HANDOFF_STATUS: how many partitions this node still awaits in the change."""
        self._check_change(*m.unpack_change(payload))
        if self.members.change != self.change:
            self.step()
        return m.pack_remaining(len(self.to_receive()))

    def _check_change(self, name, version, crc) -> None:
        change = self.members.change
        if change is None or (change[0], change[2], change[3]) != (name, version, crc):
            raise ValueError(f"the change of {name} (version {version}) is not pending here "
                             f"from the same ring")

    # -- dropping what this node no longer replicates ------------------------------------------
    def _drop_foreign(self) -> None:
        ring = self.members.ring
        if self._cleaning is not None:
            return
        if self.members.status(self.members.name) != VALID:
            return
        self._cleaning = asyncio.get_running_loop().create_task(self._drop(ring))

    async def _drop(self, ring) -> None:
        me = self.members.name
        n = min(self.members.replicas, len(ring))
        mine = set(ring.partitions_of(me, n))
        dropped = 0
        try:
            async for key in self._keys(paced=True):
                if self.members.ring is not ring or self.members.change is not None:
                    return
                if ring.partition(key) not in mine:
                    self.store.delete(key)
                    dropped += 1
            self._drop_after = False
        finally:
            self._cleaning = None
        if dropped:
            self.stats["handoff_keys_dropped"] += dropped
            self._say("dropped %d keys of partitions this node no longer replicates", dropped)

    def info(self) -> dict:
        change = self.members.change
        out = {"handoff_change": "" if change is None else f"{change[0]} {change[1]}",
               "handoff_partitions_to_give": sum(len(p) for p in self.to_give().values()),
               "handoff_partitions_to_receive": len(self.to_receive()),
               "handoff_active": len(self._sessions),
               "handoff_drop_pending": int(self._drop_after)}
        out.update(self.stats)
        return out

    def close(self) -> None:
        for task in list(self._sessions.values()):
            task.cancel()
        if self._cleaning is not None:
            self._cleaning.cancel()
