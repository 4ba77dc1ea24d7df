"""Active anti-entropy: the replicas of a partition compare Merkle trees and repair what
differs, so they converge even when hints are lost and nobody reads the key (Dynamo 4.7).

Trees. The store keeps one per partition, updated on every change of a key (its digest is in
the keydir: `merkle.StoreTrees`); at start-up they are rebuilt from a fold of the store a step
at a time, and the node serves meanwhile. A node answers no exchange until its trees are whole.

Exchange. Every `interval_s` (jittered) this node takes each member that replicates some of
its partitions (`concurrency` members at a time) and:
1. compares the roots of all their trees in one message (AE_ROOTS: an exchange that finds
   nothing to repair costs one round trip and 12 bytes a partition), then, a group of the
   partitions whose roots differ per message, descends only below the nodes whose hashes
   differ (AE_TREE), a level per round trip (`MerkleDiff`), down to the differing leaf
   segments;
2. lists the keys of those segments on both sides with their digests (AE_LISTING) and keeps
   the keys whose digests differ (or that one side lacks);
3. fetches the peer's objects of those keys (REPLICA_GET) and syncs each into the local store
   with the sync that read repair uses (an exchange pulls; the peer's own exchange with this
   node pulls the other way, so no object crosses twice);
4. tells the peer (AE_DONE) that this node now holds everything the peer held when the
   exchange began.
Bytes therefore move in proportion to the differences, never to the data. Exchanges wait
while a membership change moves partitions (the handoff), and yield to clients by the delay
of their own answers (`_call`).

Tombstones and the grace period. A delete leaves a tombstone and an expired value is one
whose stamp is its expiry (object.py). A peer's AE_DONE tells this node that the peer holds
everything this node held when the peer's exchange began. So per partition, `confirmed` is
the oldest of those starts over the other replicas, and
a tombstone is reaped (deleted from the store) only when this node wrote it before
`confirmed` (every replica holds it) and it has been dead for longer than `grace_s`. Expired
values stay in the store the same way (`Store.expire_hold_ms`). A replica that is down, for
however long, holds back its partitions' reaping: when it returns, the tombstones are still
there and reach it by the next exchange. Hints older than the grace period are dropped (the
runtime), so no late delivery can bring back a value whose tombstone has gone.
"""
from __future__ import annotations

import asyncio
import collections
import random
import time

from fastdyn.cluster import object as vo
from fastdyn.cluster.merkle import MerkleDiff, StoreTrees
from fastdyn.errors import BadObject, MerkleFormatError, PeerRequestFailed, ProtocolError
from fastdyn.peer import messages as m

GROUP = 16                  # partitions per AE_TREE message
LISTING_GROUP = 64          # partitions per AE_LISTING: the peer walks its keydir once for each
REPAIR_BATCH = 128          # keys per REPLICA_GET of a repair
REBUILD_STEP = 16384        # keys folded into the trees per event-loop turn at start-up
REAP_STEP = 16384           # keydir entries the start-up search for tombstones reads per turn
REAP_BATCH = 1024           # tombstones the reaper checks per turn
LISTING_STEP = 16384        # keydir entries a listing walks per turn (under 1 ms)
COMPARE_STEP = 4096         # listed keys a puller looks up per turn (about 0.4 ms)
RTT_HISTORY = 64            # round trips to a peer whose least is its unloaded round trip
QUEUEING_TARGET_S = 0.0005  # extra delay of an answer that an exchange lets pass
YIELD = 4.0                 # an exchange waits this many times an answer's extra delay
MAX_YIELD_S = 0.5
# a peer's AE_DONE start is its clock, a record's write time this node's: a tombstone counts as
# held by the peer only if written this much (at most half the grace period) before the peer's
# exchange began
CLOCK_MARGIN_MS = 30_000
DEAD_TAGS = bytes((vo.TAG_REGISTER_TTL, vo.TAG_OBJECT, vo.TAG_DELETED))
MAX_DEAD_BYTES = 4096       # a tombstone-only object is small: larger ones hold values


def _chunks(items, size):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _dead_since(data):
    """object.dead_since of an encoded object; None for bytes that are not one."""
    try:
        return vo.dead_since(vo.decode(data))
    except BadObject:
        return None


def wall_ms() -> int:
    return int(time.time() * 1000)


class AntiEntropy:
    def __init__(self, name, replica, members, pool, partitions, *, n, interval_s=10.0,
                 concurrency=1, grace_s=600.0, timeout_s=10.0, yield_to_clients=True,
                 log=None):
        """n(): the replication factor now (clamped to the members); yield_to_clients: wait
        after answers that come back late (the node's admission control, `_call`)."""
        self.name = name
        self.replica = replica
        self.store = replica.store
        self.members = members
        self.pool = pool
        self.n = n
        self.interval_s = interval_s
        self.concurrency = max(1, concurrency)
        self.grace_ms = int(grace_s * 1000)
        self.clock_margin_ms = min(CLOCK_MARGIN_MS, self.grace_ms // 2)
        self.timeout_s = timeout_s
        self.yield_to_clients = yield_to_clients
        self.log = log
        self.trees = StoreTrees(self.store, partitions)
        # nothing expires until an exchange round says every replica has seen it
        self.store.expire_hold_ms = 1
        # (partition, peer) -> the peer holds everything this node held then (ms): the start
        # of the peer's last complete exchange with this node (AE_DONE)
        self.exchanged = {}
        self.last_exchange = {}    # partition -> end (ms) of its last complete exchange
        self.rng = random.Random()
        self.stats = {"anti_entropy_exchanges": 0, "anti_entropy_failures": 0,
                      "anti_entropy_keys_repaired": 0,
                      "anti_entropy_bytes_sent": 0, "anti_entropy_bytes_received": 0,
                      "anti_entropy_rounds": 0, "anti_entropy_tombstones_reaped": 0,
                      "anti_entropy_yield_ms": 0}
        self._rtts = {}            # peer address -> its recent round trips (s)
        self.rebuild_keys_per_s = 0
        self._wake = asyncio.Event()

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            if not self.trees.ready:
                await self._rebuild()
            try:
                await self.round()
            except Exception as exc:                 # a bug must not end anti-entropy
                self._say("anti-entropy round failed: %r", exc)
            try:
                await asyncio.wait_for(self._wake.wait(),
                                       self.interval_s * self.rng.uniform(0.8, 1.2))
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    def wake(self) -> None:
        """Start the next round now (DYN.ANTIENTROPY NOW)."""
        self._wake.set()

    def rebuild_trees(self) -> None:
        """Forget the trees and rebuild them from the store before the next round
        (DYN.ANTIENTROPY REBUILD, for trees suspected stale); exchanges wait until then."""
        self.trees = StoreTrees(self.store, self.trees.partitions)
        self._wake.set()

    async def _rebuild(self) -> None:
        started = time.monotonic()
        while not self.trees.rebuild(REBUILD_STEP):
            await asyncio.sleep(0)
        await self._find_tombstones()
        took = time.monotonic() - started
        self.trees.rebuild_s = took
        self.rebuild_keys_per_s = int(self.trees.rebuilt_keys / took) if took > 0 else 0
        self._say("Merkle trees rebuilt from the store: %d keys in %.2f s",
                  self.trees.rebuilt_keys, took)

    async def round(self) -> None:
        """Exchange with every member that shares partitions with this node, then reap."""
        if self.members.change is not None:
            return               # partitions are moving: their owners are about to change
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(peer, partitions):
            async with semaphore:
                await self.exchange(peer, partitions)
        await asyncio.gather(*(one(peer, parts) for peer, parts in self._shared().items()))
        self.stats["anti_entropy_rounds"] += 1
        await self.reap()

    def _mine(self, ring, n) -> list:
        """The partitions this node replicates: none while it is joining or once removed."""
        return ring.partitions_of(self.name, n) if self.name in ring.members else []

    def _shared(self) -> dict:
        """{peer: [partition, ...]} for the partitions this node replicates."""
        ring, n = self.members.ring, self.n()
        out = {}
        for p in self._mine(ring, n):
            for node in ring.preference_list(p, n):
                if node != self.name:
                    out.setdefault(node, []).append(p)
        return out

    # -- one exchange ----------------------------------------------------------------------
    async def exchange(self, peer: str, partitions) -> bool:
        """Compare and repair `partitions` with `peer`; True when complete."""
        address = self.members.address(peer)
        if not self.pool.reachable(address):
            return False
        start = wall_ms()
        try:
            differing = {}
            for group in _chunks(await self._differing_roots(address, partitions), GROUP):
                differing.update(await self._compare(address, group))
            parts = list(differing)
            for group in _chunks(parts, LISTING_GROUP):
                await self._repair(address, {p: differing[p] for p in group})
        except Exception as exc:
            self.stats["anti_entropy_failures"] += 1
            self._say("exchange with %s stopped: %s", peer, exc)
            return False
        end = wall_ms()
        for p in partitions:
            self.last_exchange[p] = end
        self.stats["anti_entropy_exchanges"] += 1
        # the peer learns that this node now holds all it held at `start`: its tombstones
        # from before then may go once every replica has said so (best effort: a lost
        # message only delays that)
        try:
            await self._call(address, m.AE_DONE,
                             m.pack_exchanged((self.name, start, partitions)))
        except Exception as exc:
            self._say("telling %s of the exchange failed: %s", peer, exc)
        return True

    async def _call(self, address, kind, payload) -> bytes:
        """One request of an exchange, paced by the queueing delay its answer shows: the
        admission control of anti-entropy (Dynamo 6.5), as LEDBAT paces background traffic
        (RFC 6817). A peer busy with its clients answers late, and this node's own loop, busy
        with them, reads the answer late; either way the exchange waits a few times that extra
        delay before its next request, so a repair slows where clients wait and runs at full
        speed where nobody does. It reacts within a round trip; pacing by the node-wide
        controller as well (a one-second window) stretched a wiped replica's repair from 2 s
        to 5 s and raised the clients' p99 during it instead (docs/benchmarks.md)."""
        self.stats["anti_entropy_bytes_sent"] += len(payload)
        started = time.monotonic()
        answer = await self.pool.call(address, kind, payload, self.timeout_s)
        rtt = time.monotonic() - started
        self.stats["anti_entropy_bytes_received"] += len(answer)
        rtts = self._rtts.setdefault(address, collections.deque(maxlen=RTT_HISTORY))
        rtts.append(rtt)
        extra = rtt - min(rtts)
        if extra > QUEUEING_TARGET_S and self.yield_to_clients:
            waited = min(extra * YIELD, MAX_YIELD_S)
            self.stats["anti_entropy_yield_ms"] += int(waited * 1000)
            await asyncio.sleep(waited)
        return answer

    async def _differing_roots(self, address, partitions) -> list:
        """The partitions whose roots differ on the peer (all of them for a peer that does
        not know AE_ROOTS: it answers with an error naming the unknown kind)."""
        partitions = list(partitions)
        try:
            theirs = m.unpack_roots(await self._call(address, m.AE_ROOTS,
                                                     m.pack_partitions(partitions)))
        except PeerRequestFailed as exc:
            if not exc.reason.startswith("unknown message kind"):
                raise
            return partitions
        if len(theirs) != len(partitions):
            raise ProtocolError(f"AE_ROOTS answered {len(theirs)} of {len(partitions)}")
        ours = self.trees.roots(partitions)
        return [p for p, mine, other in zip(partitions, ours.tolist(), theirs) if mine != other]

    async def _compare(self, address, group) -> dict:
        """{partition: [differing segment, ...]} after descending both trees together."""
        walks = {p: MerkleDiff(self.trees.tree(p)) for p in group}
        pending = list(group)
        while pending:
            requests = [(p, walks[p].next_request()) for p in pending]
            replies = m.unpack_blobs(await self._call(address, m.AE_TREE,
                                                      m.pack_tree_requests(requests)))
            if len(replies) != len(requests):
                raise ProtocolError(f"AE_TREE answered {len(replies)} of {len(requests)}")
            self.trees.refresh()
            for p, reply in zip(pending, replies):
                if not reply:
                    raise RuntimeError("the peer's trees are not rebuilt yet")
                walks[p].feed(reply)
            pending = [p for p in pending if not walks[p].done]
        return {p: w.segments for p, w in walks.items() if w.segments}

    async def _repair(self, address, differing) -> None:
        """Pull: sync in the peer's objects of the keys whose digests differ. The peer pulls
        what this node has in its own exchange, so no object crosses twice (a wiped replica
        fetches everything once, instead of having every other replica push it)."""
        listing = await self._call(address, m.AE_LISTING, m.pack_segments(differing))
        # a pull needs only this node's digests of the keys the peer listed (0: absent),
        # compared in the store a step per turn: a whole listing at once stalled clients
        # for 20 ms at 25,000 keys
        view = memoryview(listing)
        if len(view) < 4:
            raise ProtocolError("peer AE_LISTING answer has no count")
        count, at, seen, ours = int.from_bytes(view[:4], "little"), 4, 0, {}
        while at < len(view):
            try:
                at, step, found = self.store.listing_differences(view, at, COMPARE_STEP)
            except ValueError as exc:
                raise ProtocolError(f"peer AE_LISTING answer: {exc}") from None
            seen += step
            ours.update(found)
            await asyncio.sleep(0)
        if seen != count:
            raise ProtocolError(f"peer AE_LISTING answer lists {seen} keys, says {count}")
        now = wall_ms()
        wanted = list(ours)
        for chunk in _chunks(wanted, REPAIR_BATCH):
            answer = await self._call(address, m.REPLICA_GET, m.pack_keys(chunk))
            for key, (status, blob) in zip(chunk, m.unpack_results(answer)):
                if status == m.ERROR:
                    raise RuntimeError(f"the peer cannot read {key!r}: "
                                       f"{bytes(blob).decode(errors='replace')}")
                if status != m.OK:
                    continue           # gone since it listed it
                blob = bytes(blob)
                if not ours[key] and self._long_dead(blob, now):
                    continue           # a tombstone past its grace: absent here is the same
                before = self.store.digest_of(key)
                self.replica.merge_in(key, blob)
                if self.store.digest_of(key) != before:
                    self.stats["anti_entropy_keys_repaired"] += 1

    def _long_dead(self, data, now_ms: int) -> bool:
        """Whether an encoded object is a tombstone (or expired) for longer than the grace."""
        if not data or data[0] not in DEAD_TAGS:
            return False
        dead = _dead_since(data)
        return dead is not None and dead + self.grace_ms < now_ms

    # -- the answering side ----------------------------------------------------------------
    def answer_roots(self, payload) -> bytes:
        partitions = m.unpack_partitions(payload)
        if not self.trees.ready:
            raise ValueError("the Merkle trees are not rebuilt yet")
        if any(p >= self.trees.partitions for p in partitions):
            raise MerkleFormatError(f"AE_ROOTS names a partition past {self.trees.partitions}")
        return m.pack_roots(self.trees.roots(partitions).tolist())

    def answer_tree(self, payload) -> bytes:
        self.trees.refresh()
        out = []
        for p, request in m.unpack_tree_requests(payload):
            if not self.trees.ready or p >= self.trees.partitions:
                out.append(b"")
            else:
                out.append(self.trees.tree(p).answer(request))
        return m.pack_blobs(out)

    def exchanged_with(self, payload) -> None:
        """AE_DONE: the sender holds everything this node held at `start`."""
        peer, start, partitions = m.unpack_exchanged(payload)
        for p in partitions:
            if p < self.trees.partitions:
                key = (p, peer)
                self.exchanged[key] = max(self.exchanged.get(key, 0), start)

    async def answer_listing(self, payload) -> bytes:
        wanted = m.unpack_segments(payload)
        for p, segments in wanted.items():
            if p >= self.trees.partitions or any(s >= self.trees.segment_count
                                                 for s in segments):
                raise MerkleFormatError(f"AE_LISTING names a segment outside partition {p}")
        # a step of the walk and its part of the answer per event-loop turn: a million keys
        # take about 20 ms to walk and longer to pack
        parts, count = [], 0
        for step, listing in self.trees.listing_steps(wanted, LISTING_STEP):
            parts.append(listing)
            count += step
            await asyncio.sleep(0)
        return b"".join([count.to_bytes(4, "little")] + parts)

    # -- tombstones ------------------------------------------------------------------------
    def confirmed(self, partition: int, ring=None, n=None, now_ms=None) -> int:
        """The time (ms) before which everything this node held of the partition is held by
        every replica: the oldest start of the last complete exchange with each other one."""
        ring = ring or self.members.ring
        others = [r for r in ring.preference_list(partition, n or self.n()) if r != self.name]
        if not others:
            return now_ms or wall_ms()
        return min(self.exchanged.get((partition, r), 0) for r in others)

    async def _find_tombstones(self) -> None:
        """Once, at start-up: the stored tombstones, for the reaper (the replica notes those
        written from now on, replica.tombstones). A step of the keydir per event-loop turn."""
        found, cursor = self.replica.tombstones, None
        while True:
            cursor, records = self.store.small_records(
                cursor, REAP_STEP, bytes((vo.TAG_OBJECT, vo.TAG_DELETED)), MAX_DEAD_BYTES)
            for key, data, written_ms in records:
                if key not in found and _dead_since(data) is not None:
                    found[key] = written_ms
            if cursor is None:
                return
            await asyncio.sleep(0)

    async def reap(self) -> int:
        """Delete the tombstones every replica holds that are dead for longer than the grace
        period, and let expired values go on the same terms. Returns how many were reaped."""
        now = wall_ms()
        ring, n = self.members.ring, self.n()
        confirmed = {p: self.confirmed(p, ring, n, now) for p in self._mine(ring, n)}
        self.store.expire_hold_ms = max(1, min(now - self.grace_ms,
                                               min(confirmed.values(), default=now)))
        reaped = 0
        tombstones = self.replica.tombstones
        for i, key in enumerate(list(tombstones)):
            if i and i % REAP_BATCH == 0:
                await asyncio.sleep(0)
            written_ms = tombstones.get(key)
            if written_ms is None:
                continue
            data = self.store.get(key)
            dead = None if data is None else _dead_since(data)
            if dead is None:
                del tombstones[key]       # deleted, or written again since
                continue
            since = confirmed.get(ring.partition(key))
            if (since is not None and written_ms < since - self.clock_margin_ms
                    and dead + self.grace_ms < now):
                self.store.delete(key)
                del tombstones[key]
                reaped += 1
        self.stats["anti_entropy_tombstones_reaped"] += reaped
        return reaped

    # -- introspection ---------------------------------------------------------------------
    def info(self) -> dict:
        now = wall_ms()
        ring, n = self.members.ring, self.n()
        mine = self._mine(ring, n)
        ages = [now - self.last_exchange[p] for p in mine if p in self.last_exchange]
        out = dict(self.stats)
        out.update({
            "anti_entropy_trees_ready": int(self.trees.ready),
            "anti_entropy_tree_keys_rebuilt": self.trees.rebuilt_keys,
            "anti_entropy_rebuild_keys_per_s": self.rebuild_keys_per_s,
            "anti_entropy_partitions": len(mine),
            "anti_entropy_partitions_never_exchanged": len(mine) - len(ages),
            "anti_entropy_oldest_exchange_s": round(max(ages) / 1000, 1) if ages else -1,
            "anti_entropy_expire_hold_lag_s":
                round((now - self.store.expire_hold_ms) / 1000, 1),
            "anti_entropy_grace_s": self.grace_ms / 1000,
        })
        return out

    def partition_status(self) -> list:
        """[(partition, root, seconds since its last complete exchange or -1), ...] for the
        partitions this node replicates (`fastdyn cluster status --anti-entropy`)."""
        now = wall_ms()
        ring = self.members.ring
        return [(p, self.trees.root(p),
                 round((now - self.last_exchange[p]) / 1000, 1) if p in self.last_exchange
                 else -1) for p in self._mine(ring, self.n())]

    def _say(self, text, *args) -> None:
        if self.log is not None:
            self.log.info(text, *args)
