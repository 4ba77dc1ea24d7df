"""A node's cluster half: members, peer listener and pool, hints, and the quorum coordinator.

The server builds this when the node is given --seeds. It listens on the peer port, gossips
membership (first with every seed, then every round with a random member), suspects members
whose heartbeats stop (phi accrual; the peer pool then probes them until they answer), and
delivers hints to their owners whenever those are reachable. Background work (handoff, hint
delivery, anti-entropy, merges) is paced by admission control (`admission.py`), which keeps
the budget it leaves them low while clients' latency is high.

Data format: a cluster node stores versioned objects (`object.py`), a single node stores plain
values. The data directory's `FORMAT` file says which; a single node's directory started as a
cluster member is converted once (each value becomes an LWW register), and a cluster member's
directory is refused by a single node, with a message saying so.
"""
import logging
import os
import time

from fastdyn.cluster import object as vo
from fastdyn.cluster.anti_entropy import AntiEntropy
from fastdyn.cluster.admission import Admission, AdmissionController
from fastdyn.cluster.dvv import node_id
from fastdyn.cluster.failure_detector import PhiAccrual
from fastdyn.cluster.gossip import Gossip
from fastdyn.cluster.handoff import Handoff
from fastdyn.cluster.hints import HintStore
from fastdyn.cluster.hlc import HybridClock
from fastdyn.cluster.membership import JOINING, LEAVING, REMOVED, VALID, Members
from fastdyn.cluster.ordering import OrderedCoordinator
from fastdyn.cluster.quorum import QuorumCoordinator
from fastdyn.cluster.replica import Replica, record_expiry
from fastdyn.cluster.statefile import write_atomically
from fastdyn.errors import PeerRequestFailed, StorageError
from fastdyn.peer import messages as m
from fastdyn.peer.faults import Faults
from fastdyn.peer.handler import ReplicaHandler
from fastdyn.peer.pool import PeerPool, split_address
from fastdyn.peer.server import PeerServer

log = logging.getLogger("fastdyn.cluster")

FORMAT_FILE = "FORMAT"
OBJECTS_FORMAT = "objects 1"
GOSSIP_DEADLINE_S = 2.0
PROBE_DEADLINE_S = 1.0
HINT_PERIOD_S = 0.5
HANDOFF_PERIOD_S = 0.25
HINT_BATCH = 256


def data_format(data_dir: str) -> str | None:
    try:
        with open(os.path.join(data_dir, FORMAT_FILE)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def check_single_node_format(data_dir: str) -> None:
    """A single node cannot read a cluster member's objects as plain values."""
    fmt = data_format(data_dir)
    if fmt is not None:
        raise StorageError(f"{data_dir} holds a cluster member's data (format {fmt!r}); "
                           "start it with --seeds as a cluster member")


def convert_to_objects(store, data_dir: str, node: int, hlc) -> int:
    """Once: every plain value becomes the LWW register it is. Returns how many."""
    if data_format(data_dir) == OBJECTS_FORMAT:
        return 0
    converted = 0
    ts = hlc.now()
    for key, value, expiry in list(store.items()):
        obj = vo.decode_legacy(value, expiry, node, ts)
        store.put(key, vo.encode(obj), record_expiry(obj))
        converted += 1
    store.flush_buffer()
    store.fsync()
    write_atomically(os.path.join(data_dir, FORMAT_FILE), (OBJECTS_FORMAT + "\n").encode())
    return converted


def _ignore(result) -> None:
    pass


def merge_bytes(a, b) -> bytes:
    return vo.encode(vo.sync(vo.decode(a), vo.decode(b)))


class Cluster:
    def __init__(self, config, store):
        self.config = config
        self.name = config.name
        self.hlc = HybridClock()    # DYN.FAULT CLOCK shifts it through hlc.skew_us
        converted = convert_to_objects(store, config.data_dir, node_id(config.name), self.hlc)
        if converted:
            log.info("converted %d single-node values to versioned objects", converted)
        self.replica = Replica(store, config.data_dir, self.hlc)
        self.hints = HintStore(os.path.join(config.data_dir, "hints"), merge_bytes,
                               max_bytes=config.hint_max_bytes, sync=config.sync
                               if config.sync != "always" else "always")
        address = f"{config.advertise}:{config.peer_port}"
        # a new node that is not one of its own seeds joins the seeds' cluster and receives
        # its partitions before it serves them; seeds (as `cluster up` starts every node)
        # form the cluster at once, as in Cassandra
        self.members = Members(config.data_dir, config.name, address, config.partitions,
                               replicas=config.n, background=True,
                               first_status=VALID if address in config.seeds else JOINING)
        # joining by itself (not by DYN.JOIN), and nothing learnt yet
        self._auto_join = self.members.own().status == JOINING and len(self.members.records) == 1
        self.faults = Faults()
        self.pool = None
        self.server = None
        self.quorum_coordinator = QuorumCoordinator(
            config.name, self.replica, self.hints, self.members, None, self.hlc,
            n=config.n, r=config.r, w=config.w, timeout_s=config.peer_timeout_ms / 1000,
            log=log)
        self.coordinator = OrderedCoordinator(self.quorum_coordinator)
        self.detector = PhiAccrual(config.phi_threshold,
                                   first_interval_s=config.gossip_interval_ms / 1000)
        self.gossip = Gossip(self.members, config.seeds,
                             up=lambda name: self.pool.reachable(self.members.address(name)))
        self.gossip_interval_s = config.gossip_interval_ms / 1000
        self.join_error = ""
        self.handoff = None
        self.anti_entropy = None
        self._tasks = []
        self.on_removed = None      # set by the server: stops the node
        self._verifying = set()
        self._delivering = set()
        self._hints_waiting = {}    # owner -> the timer of its next batch, paced
        self._timers = []
        self.admission = Admission(
            AdmissionController(config.admission_p99_ms, config.admission_control),
            {"handoff": config.handoff_bytes_per_s, "hints": config.background_bytes_per_s},
            stores=(self.replica.store, self.hints.store))

    async def start(self, loop, commits, sockets=()) -> None:
        """Serve peers on `sockets` (bound by the caller), or bind the peer port here; replica
        writes are answered through the node's group commit `commits`."""
        cfg = self.config
        self.pool = PeerPool(self.name, loop=loop, faults=self.faults,
                             on_reachable=self._reachable_again)
        self.quorum_coordinator.pool = self.pool
        self.quorum_coordinator.commits = commits
        handler = ReplicaHandler(self.replica, self.hints, commits)
        handler.coordinator = self.coordinator
        handler.membership = self
        self.server = PeerServer(handler, self.name, loop=loop, faults=self.faults)
        if sockets:
            for sock in sockets:
                await self.server.start(cfg.host, cfg.peer_port, sock=sock)
        else:
            await self.server.start(cfg.host, cfg.peer_port)
        self.loop = loop
        self.admission.start(loop)
        self.handoff = Handoff(self.members, self.replica.store, self.pool, cfg.data_dir,
                               concurrency=cfg.handoff_concurrency,
                               pace=self.admission.pace,
                               settle_s=cfg.handoff_settle_ms / 1000,
                               timeout_s=max(cfg.peer_timeout_ms / 1000, 5.0), log=log,
                               on_removed=self._removed)
        self._gossip_round(first=True)
        self._every(lambda: self.gossip_interval_s * self.gossip.rng.uniform(0.8, 1.2),
                    self._gossip_round)
        self._every(HANDOFF_PERIOD_S, self.handoff.step)
        self._every(HINT_PERIOD_S, self._deliver_hints)
        if cfg.anti_entropy_interval_ms:
            self.anti_entropy = AntiEntropy(
                self.name, self.replica, self.members, self.pool, cfg.partitions,
                n=lambda: self.quorum_coordinator.quorum().n,
                interval_s=cfg.anti_entropy_interval_ms / 1000,
                concurrency=cfg.anti_entropy_concurrency, grace_s=cfg.tombstone_grace_s,
                timeout_s=max(cfg.peer_timeout_ms / 1000, 5.0),
                yield_to_clients=cfg.admission_control, log=log)
            self._tasks.append(loop.create_task(self.anti_entropy.run()))
        log.info("cluster member %s, peer port %d, %d members known", self.name,
                 cfg.peer_port, len(self.members))
        if self.members.own().status == REMOVED:
            log.warning("this node was removed from the cluster: it holds no replica and only "
                        "forwards clients' commands; DYN.JOIN joins it again")

    def _every(self, period, fn):
        """fn() every `period` seconds (a number, or a function giving each wait)."""
        wait = period if callable(period) else lambda: period

        def tick():
            try:
                fn()
            except Exception:
                log.exception("cluster timer failed")
            self._timers[index] = self.loop.call_later(wait(), tick)
        index = len(self._timers)
        self._timers.append(self.loop.call_later(wait(), tick))

    # -- membership: gossip and failure detection -----------------------------------------
    def _gossip_round(self, first: bool = False) -> None:
        """Check members whose heartbeats stopped, then start this round's exchanges (the
        first round of a start asks every seed, so a new cluster forms at once)."""
        now = self.loop.time()
        for name in self.members.peers():
            address = self.members.address(name)
            if (name not in self._verifying and self.pool.reachable(address)
                    and self.detector.suspects(name, now)):
                self._verify(name, address, now)
        targets = self.gossip.targets()
        if first:
            targets = list(dict.fromkeys(targets + self.gossip.seeds))
        syn = self.gossip.syn()
        for address in targets:
            self._send_syn(address, syn)

    def _send_syn(self, address, syn) -> None:
        self.pool.request(address, m.GOSSIP_SYN, syn, GOSSIP_DEADLINE_S,
                          lambda result: self._acked(address, result))

    def _verify(self, name, address, now) -> None:
        """A member whose heartbeats stopped is asked directly before it is treated as down:
        heartbeats travel through random peers and can be late while the member answers."""
        reason = "no heartbeat for %.1f s (phi %.1f) and no answer to a probe" % (
            self.detector.silence(name, now), self.detector.phi(name, now))
        self._verifying.add(name)

        def answered(result):
            self._verifying.discard(name)
            if isinstance(result, Exception):
                self.pool.suspect(address, reason)
            else:
                self.detector.alive(name, self.loop.time())
        self.pool.request(address, m.PING, b"", PROBE_DEADLINE_S, answered)

    # -- explicit membership changes ---------------------------------------------------------
    def join(self, seed: str) -> None:
        """DYN.JOIN: this node, alone so far, joins the cluster `seed` (a peer address) is in.
        It turns valid by itself once it has received its partitions."""
        split_address(seed)
        others = [n for n, r in self.members.records.items()
                  if n != self.name and r.status != REMOVED]
        if others and self.members.own().status != REMOVED:
            raise ValueError(f"this node is already a member of a cluster of "
                             f"{len(others) + 1}; DYN.LEAVE it first")
        if self.members.own().status == JOINING:
            raise ValueError("this node is already joining a cluster")
        self.members.set_status(self.name, JOINING)
        self._auto_join = False
        if seed not in self.gossip.seeds:
            self.gossip.seeds.append(seed)
        self._send_syn(seed, self.gossip.syn())
        log.info("joining the cluster of %s", seed)

    def leave(self, name: str | None = None, force: bool = False) -> str:
        """DYN.LEAVE: `name` (default this node) hands its partitions off, then exits.
        force: remove it at once, without a handoff (a dead member: its keys' other replicas
        still hold them, and read repair copies them to the new ones)."""
        name = name or self.name
        record = self.members.records.get(name)
        if record is None or record.status == REMOVED:
            raise ValueError(f"{name} is not a member")
        if force:
            if name == self.name:
                raise ValueError("a node cannot force itself out; DYN.LEAVE without FORCE")
            self.members.set_status(name, REMOVED)
            log.warning("member %s removed without a handoff", name)
            return name
        if record.status != VALID:
            raise ValueError(f"{name} is {record.status}, not valid (DYN.LEAVE {name} FORCE "
                             f"removes it without a handoff)")
        if name != self.name and not self.pool.reachable(record.address):
            raise ValueError(f"{name} is down and cannot hand its partitions off (DYN.LEAVE "
                             f"{name} FORCE removes it without a handoff)")
        if len([n for n in self.members.ring.members if n != name]) < 1:
            raise ValueError("the last member cannot leave")
        self.members.set_status(name, LEAVING)
        log.info("member %s is leaving", name)
        return name

    def _removed(self) -> None:
        """This node has handed off everything: once the others have heard (a few gossip
        rounds), it stops."""
        delay = max(3 * self.gossip_interval_s, 1.0)
        log.info("removed from the cluster: stopping in %.1f s", delay)
        if self.on_removed is not None:
            self.loop.call_later(delay, self.on_removed)

    def _acked(self, address, result) -> None:
        if isinstance(result, PeerRequestFailed) and "partitions" in result.reason:
            if self.join_error != result.reason:
                log.error("cannot join through %s: %s", address, result.reason)
            self.join_error = result.reason
            return
        if isinstance(result, Exception):
            return
        responder, push, beating, changed = self.gossip.on_ack(result)
        if responder == self.name:
            self.gossip.forget_seed(address)     # a seed that is this node itself
            if self._auto_join and len(self.members.records) == 1:
                # it is a seed after all (named another way): it forms the cluster
                self.members.set_status(self.name, VALID)
            return
        self.join_error = ""
        self._learned(beating, changed)
        if push is not None:
            self.pool.request(address, m.GOSSIP_PUSH, push, GOSSIP_DEADLINE_S, _ignore)

    def answer_syn(self, payload) -> bytes:
        return self.gossip.answer_syn(payload)

    def apply_push(self, payload) -> None:
        self._learned(*self.gossip.on_push(payload))

    def _learned(self, beating, changed) -> None:
        now = self.loop.time()
        for name in beating:
            self.detector.heartbeat(name, now)
            # news of it: if this node holds it down, ask it now rather than after a backoff
            self.pool.probe_now(self.members.address(name))
        for name in changed:
            if name == self.name:
                continue
            record = self.members.records[name]
            log.info("member %s at %s is %s (%d members)", name, record.address,
                     record.status, len(self.members))
            self.detector.heartbeat(name, now)
            self.pool.probe_now(record.address)
            self.coordinator.send_epoch(name)

    def _reachable_again(self, address) -> None:
        # a direct answer clears suspicion; flush epochs first, so no hint or repair carries
        # flushed data to a node that missed a FLUSHDB; then the hints
        for name in self.members.peers():
            if self.members.address(name) == address:
                self.detector.alive(name, self.loop.time())
                self.coordinator.send_epoch(name)
        self._deliver_hints()

    # -- hinted handoff -------------------------------------------------------------------
    def _deliver_hints(self) -> None:
        for owner in self.hints.owners():
            if owner in self._delivering:
                continue
            record = self.members.records.get(owner)
            if record is not None and record.status == REMOVED:
                self._rehome_hints(owner)
                continue
            if owner not in self.members.names():
                continue
            address = self.members.address(owner)
            if not self.pool.reachable(address):
                continue
            batch = self._without_old_hints(owner, self.hints.pending(owner, HINT_BATCH))
            if not batch:
                continue
            self._delivering.add(owner)
            payload = m.pack_puts(batch)
            wait = self.admission.delay("hints", len(payload))
            if wait > 0:
                self._hints_waiting[owner] = self.loop.call_later(
                    wait, self._send_hints, owner, address, batch, payload)
            else:
                self._send_hints(owner, address, batch, payload)

    def _send_hints(self, owner, address, batch, payload) -> None:
        self._hints_waiting.pop(owner, None)
        self.pool.request(address, m.REPLICA_PUT, payload, 5.0,
                          lambda result: self._hints_delivered(owner, batch, result))

    def _without_old_hints(self, owner, batch) -> list:
        """The batch less the hints older than the tombstone grace period, which are dropped,
        not delivered: their key's tombstone may have been reaped everywhere since (and
        anti-entropy brings the owner up to date anyway)."""
        if not self.anti_entropy:
            return batch
        oldest_us = (int(time.time() * 1000) - self.config.tombstone_grace_s * 1000) * 1000
        kept = []
        for key, obj in batch:
            if vo.newest_stamp(obj) >= oldest_us:
                kept.append((key, obj))
            else:
                self.hints.acknowledged(owner, key, obj)
        if len(kept) < len(batch):
            log.warning("dropped %d hints for %s older than the tombstone grace period",
                        len(batch) - len(kept), owner)
        return kept

    def _rehome_hints(self, owner) -> None:
        """Hints for a member that has left go to the keys' replicas now (best effort: a
        replica that misses one is brought up to date by read repair)."""
        ring = self.members.ring
        n = self.quorum_coordinator.quorum().n
        for key, obj in self.hints.pending(owner, HINT_BATCH):
            for node in ring.primaries(key, n):
                if node == self.name:
                    try:
                        self.replica.merge_in(key, obj)
                    except StorageError as exc:
                        log.warning("hint for %r not kept: %s", key, exc)
                else:
                    self.pool.request(self.members.address(node), m.REPLICA_PUT,
                                      m.pack_puts([(key, obj)]), 5.0, _ignore)
            self.hints.acknowledged(owner, key, obj)

    def _hints_delivered(self, owner, batch, result) -> None:
        self._delivering.discard(owner)
        if isinstance(result, Exception):
            return
        delivered = 0
        for (key, obj), (status, _) in zip(batch, m.unpack_results(result)):
            if status == m.OK and self.hints.acknowledged(owner, key, obj):
                delivered += 1
        if delivered:
            log.info("delivered %d hints to %s", delivered, owner)
            self.loop.call_soon(self._deliver_hints)

    # -- introspection ----------------------------------------------------------------------
    def info(self) -> dict:
        pool = self.pool
        members = self.members.names()
        reachable = [n for n in members if n == self.name or pool is None
                     or pool.reachable(self.members.address(n))]
        # cluster_enabled stays 0 (fastdyn is not a Redis Cluster: no slots, no redirects)
        out = {"cluster_members": len(members), "cluster_reachable": len(reachable),
               "cluster_unreachable": ",".join(sorted(set(members) - set(reachable))),
               "cluster_flush_epoch": self.replica.flush_epoch,
               "cluster_generation": self.members.own().generation,
               "cluster_heartbeat": self.members.own().heartbeat,
               "cluster_join_error": self.join_error}
        hints = self.hints.stats()
        out.update({k: v for k, v in hints.items() if k != "hints_by_owner"})
        if self.handoff is not None:
            out.update(self.handoff.info())
        if self.anti_entropy is not None:
            out.update(self.anti_entropy.info())
        out.update(self.coordinator.stats)
        out.update(self.admission.info())
        return out

    def members_view(self) -> list:
        """DYN.MEMBERS: one entry per member (name, address, status, partitions owned)."""
        ring = self.members.ring
        out = []
        for name in sorted(n for n, r in self.members.records.items() if r.status != REMOVED):
            address = self.members.address(name)
            up = name == self.name or self.pool is None or self.pool.reachable(address)
            status = self.members.status(name)
            out.append({"name": name, "address": address,
                        "status": "down" if not up else "up" if status == VALID else status,
                        "partitions": len(ring.partitions_of(name, 1))
                        if name in ring.members else 0})
        return out

    async def close(self) -> None:
        for t in self._timers + list(self._hints_waiting.values()):
            t.cancel()
        for task in self._tasks:
            task.cancel()
        self.admission.close()
        if self.handoff is not None:
            self.handoff.close()
        self.members.flush()
        if self.server is not None:
            self.server.close()
        if self.pool is not None:
            self.pool.close()
        self.hints.close()
