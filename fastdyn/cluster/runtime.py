"""A node's cluster half: members, peer listener and pool, hints, and the quorum coordinator.

The server builds this when the node is given --seeds. It listens on the peer port, asks every
seed for its name (HELLO) until each has answered, and delivers hints to their owners whenever
those are reachable.

Data format: a cluster node stores versioned objects (`object.py`), a single node stores plain
values. The data directory's `FORMAT` file says which; a single node's directory started as a
cluster member is converted once (each value becomes an LWW register), and a cluster member's
directory is refused by a single node, with a message saying so.
"""
import logging
import os

from fastdyn.cluster import object as vo
from fastdyn.cluster.dvv import node_id
from fastdyn.cluster.hints import HintStore
from fastdyn.cluster.hlc import HybridClock
from fastdyn.cluster.membership import Members
from fastdyn.cluster.ordering import OrderedCoordinator
from fastdyn.cluster.quorum import QuorumCoordinator
from fastdyn.cluster.replica import Replica, record_expiry
from fastdyn.errors import StorageError
from fastdyn.peer import messages as m
from fastdyn.peer.faults import Faults
from fastdyn.peer.handler import ReplicaHandler
from fastdyn.peer.pool import PeerPool
from fastdyn.peer.server import PeerServer

log = logging.getLogger("fastdyn.cluster")

FORMAT_FILE = "FORMAT"
OBJECTS_FORMAT = "objects 1"
HELLO_RETRY_S = 1.0
HINT_PERIOD_S = 0.5
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
    path = os.path.join(data_dir, FORMAT_FILE)
    with open(path + ".tmp", "w") as f:
        f.write(OBJECTS_FORMAT + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    return converted


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
        self.members = Members(config.data_dir, config.name,
                               f"{config.advertise}:{config.peer_port}", config.partitions)
        self.faults = Faults()
        self.pool = None
        self.server = None
        self.quorum_coordinator = QuorumCoordinator(
            config.name, self.replica, self.hints, self.members, None, self.hlc,
            n=config.n, r=config.r, w=config.w, timeout_s=config.peer_timeout_ms / 1000,
            log=log)
        self.coordinator = OrderedCoordinator(self.quorum_coordinator)
        self._unnamed = set(config.seeds)
        self._delivering = set()
        self._timers = []

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
        self.server = PeerServer(handler, self.name, loop=loop, faults=self.faults)
        if sockets:
            for sock in sockets:
                await self.server.start(cfg.host, cfg.peer_port, sock=sock)
        else:
            await self.server.start(cfg.host, cfg.peer_port)
        self.loop = loop
        self._ask_seeds()
        self._every(HINT_PERIOD_S, self._deliver_hints)
        log.info("cluster member %s, peer port %d, %d members known", self.name,
                 cfg.peer_port, len(self.members))

    def _every(self, period, fn):
        def tick():
            try:
                fn()
            except Exception:
                log.exception("cluster timer failed")
            self._timers[index] = self.loop.call_later(period, tick)
        index = len(self._timers)
        self._timers.append(self.loop.call_later(period, tick))

    # -- learning members from the seeds --------------------------------------------------
    def _ask_seeds(self) -> None:
        for seed in list(self._unnamed):
            self.pool.request(seed, m.HELLO, m.pack_name(self.name), 2.0,
                              lambda result, seed=seed: self._seed_answered(seed, result))

    def _seed_answered(self, seed, result) -> None:
        if isinstance(result, Exception):
            if not self.loop.is_closed():
                self.loop.call_later(HELLO_RETRY_S, self._retry_seed, seed)
            return
        name = m.unpack_name(result)
        self._unnamed.discard(seed)
        if name == self.name:
            return
        if self.members.add(name, seed):
            log.info("member %s at %s joined the ring (%d members)", name, seed,
                     len(self.members))
        self.coordinator.send_epoch(name)

    def _retry_seed(self, seed) -> None:
        if seed in self._unnamed and self.pool is not None:
            self.pool.request(seed, m.HELLO, m.pack_name(self.name), 2.0,
                              lambda result: self._seed_answered(seed, result))

    def _reachable_again(self, address) -> None:
        # flush epochs first, so no hint or repair carries flushed data to a node that missed
        # a FLUSHDB; then the hints
        for name in self.members.peers():
            if self.members.address(name) == address:
                self.coordinator.send_epoch(name)
        self._deliver_hints()

    # -- hinted handoff -------------------------------------------------------------------
    def _deliver_hints(self) -> None:
        for owner in self.hints.owners():
            if owner in self._delivering or owner not in self.members.names():
                continue
            address = self.members.address(owner)
            if not self.pool.reachable(address):
                continue
            batch = self.hints.pending(owner, HINT_BATCH)
            if not batch:
                continue
            self._delivering.add(owner)
            self.pool.request(address, m.REPLICA_PUT, m.pack_puts(batch), 5.0,
                              lambda result, owner=owner, batch=batch:
                              self._hints_delivered(owner, batch, result))

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
               "cluster_flush_epoch": self.replica.flush_epoch}
        hints = self.hints.stats()
        out.update({k: v for k, v in hints.items() if k != "hints_by_owner"})
        out.update(self.coordinator.stats)
        return out

    def members_view(self) -> list:
        """DYN.MEMBERS: one entry per member (name, address, status, partitions owned)."""
        ring = self.members.ring
        out = []
        for name in ring.members:
            address = self.members.address(name)
            up = name == self.name or self.pool is None or self.pool.reachable(address)
            out.append({"name": name, "address": address, "status": "up" if up else "down",
                        "partitions": len(ring.partitions_of(name, 1))})
        return out

    async def close(self) -> None:
        for t in self._timers:
            t.cancel()
        if self.server is not None:
            self.server.close()
        if self.pool is not None:
            self.pool.close()
        self.hints.close()
