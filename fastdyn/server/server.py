"""A running node: the store, the coordinator, the client listener and the node's timers.

Durability: the node decides when the log is written (fastdyn/server/group_commit.py).
Replies produced after a write are held until the end of the event-loop turn, when one write()
hands every connection's records to the OS. With `--sync always` the store is opened without
its own fsync and the node does group commit: the held replies wait for one fsync, run in a
worker thread so the event loop keeps parsing and executing; one fsync covers every write made
before it started. `--sync interval` leaves the periodic fsync to the store.

When the data directory cannot take a turn's records (disk full, I/O error, failed fsync), the
writers of that turn are disconnected unanswered (their writes may or may not persist), and
from then on the store refuses writes, which clients see as `-MISCONF`, while reads go on.
"""
import asyncio
import collections
import logging
import signal
import threading
import time

from fastdyn import __version__
from fastdyn._commands import KeyspaceStats, configure as configure_dispatcher
from fastdyn.errors import PersistFailed
from fastdyn.server.commands import REGISTRY
from fastdyn.server.group_commit import GroupCommit

log = logging.getLogger("fastdyn.server")

REDIS_VERSION = "7.2.0"
EXPIRE_PERIOD = 0.1          # active expiry runs every 100 ms, like Redis' serverCron
EXPIRE_BUDGET = 0.025        # ... for at most 25 ms
EXPIRE_BATCH = 200
BACKLOG = 511


class Node:
    """One node: what `assemble` built from the configuration (fastdyn/server/assemble.py) -
    the open store, the coordinator over it, the cluster runtime of a member (else None) and
    the bound listening sockets, client and peer - served by serve() until stopped."""

    def __init__(self, config, store, coordinator, *, cluster=None, sockets=(),
                 peer_sockets=()):
        self.config = config
        self.redis_version = REDIS_VERSION
        self.store = store
        self.coord = coordinator
        self.cluster = cluster
        self.sockets = list(sockets)
        self.peer_sockets = list(peer_sockets)
        # Replies that follow a write leave only once that write is handed to the OS (sync
        # interval/never: a killed process loses no acknowledged write) or fsynced (sync
        # always); one write() and at most one fsync serve every connection of a turn, and
        # the replica writes of a cluster member's peer listener too.
        self.commits = GroupCommit(store, coordinator, config.sync == "always")
        self.commands = REGISTRY
        configure_dispatcher(REGISTRY)
        self.clients = set()
        self.started = time.time()
        self.stats = collections.Counter()
        self.keyspace = KeyspaceStats()      # INFO keyspace_hits/misses, counted by commands
        self._client_ids = 0
        self.commands_processed = 0
        self.ops_samples = collections.deque(maxlen=16)  # (time, commands) every 100 ms
        self.expired_base = 0                # the store's expiry count at CONFIG RESETSTAT
        self.loop = None
        self.listeners = []
        self.stopping = None
        self.signals = ()                    # the signals whose handlers serve() installed
        self.expire_timer = None

    def next_client_id(self) -> int:
        self._client_ids += 1
        return self._client_ids

    def reset_stats(self):
        self.stats.clear()
        self.commands_processed = 0
        self.expired_base = self.store.stats()["expired_removed"]
        self.ops_samples.clear()
        self.keyspace.reset()

    def ops_per_sec(self) -> int:
        """Commands per second over the last ~1.6 s (INFO's instantaneous_ops_per_sec)."""
        if len(self.ops_samples) < 2:
            return 0
        (t0, c0), (t1, c1) = self.ops_samples[0], self.ops_samples[-1]
        return int((c1 - c0) / (t1 - t0)) if t1 > t0 else 0

    def config_view(self) -> dict:
        """Settings CONFIG GET shows, as Redis names them where Redis has the setting."""
        c = self.config
        return {b"port": str(c.port), b"bind": c.host, b"requirepass": c.requirepass,
                b"maxclients": str(c.maxclients), b"protected-mode": "yes" if c.protected_mode
                else "no", b"proto-max-bulk-len": str(c.max_bulk_bytes),
                b"client-query-buffer-limit": str(c.max_query_bytes),
                b"client-output-buffer-limit": f"normal {c.max_output_bytes} 0 0",
                b"max-value-bytes": str(c.max_value_bytes), b"databases": "1",
                b"save": "", b"appendonly": "yes" if c.sync != "never" else "no",
                b"appendfsync": {"always": "always", "interval": "everysec",
                                 "never": "no"}[c.sync],
                b"maxmemory": "0", b"maxmemory-policy": "noeviction", b"dir": c.data_dir}

    # -- timers -----------------------------------------------------------------------------
    def _active_expire(self):
        """Every 100 ms: sweep expired keys (bounded work) and sample the command rate."""
        now = time.monotonic()
        self.ops_samples.append((now, self.commands_processed))
        deadline = now + EXPIRE_BUDGET
        try:
            while self.coord.sweep_expired(EXPIRE_BATCH) >= EXPIRE_BATCH \
                    and time.monotonic() < deadline:
                pass
        except Exception:
            log.exception("active expiry failed")
        self.expire_timer = self.loop.call_later(EXPIRE_PERIOD, self._active_expire)

    # -- run --------------------------------------------------------------------------------
    async def serve(self) -> int:
        from fastdyn.server.protocol import ClientConnection

        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        # only the main thread may handle signals; a node run in another thread is stopped by
        # setting `stopping`
        if threading.current_thread() is threading.main_thread():
            self.signals = (signal.SIGTERM, signal.SIGINT)
        for sig in self.signals:
            self.loop.add_signal_handler(sig, self.stopping.set)
        cfg = self.config
        self.listeners = [await self.loop.create_server(lambda: ClientConnection(self),
                                                        sock=sock, backlog=BACKLOG)
                          for sock in self.sockets]
        self.expire_timer = self.loop.call_later(EXPIRE_PERIOD, self._active_expire)
        if self.cluster is not None:
            self.cluster.on_removed = self.stopping.set    # a member that left exits
            await self.cluster.start(self.loop, self.commits, self.peer_sockets)
        rep = self.coord.replication()
        log.info("fastdyn %s listening on %s:%d (data %s, sync %s, n=%d r=%d w=%d effective "
                 "n=%d r=%d w=%d)", __version__, cfg.host, cfg.port, cfg.data_dir, cfg.sync,
                 rep["n"], rep["r"], rep["w"], rep["n_effective"], rep["r_effective"],
                 rep["w_effective"])
        await self.stopping.wait()
        return await self.shutdown()

    async def shutdown(self) -> int:
        """Stop accepting, finish pending fsyncs, close clients, flush and close the store.
        Returns the exit status: 1 when the last writes could not be persisted."""
        log.info("shutting down")
        # a second SIGTERM/SIGINT must not cut the shutdown short (nor exit by the signal)
        for sig in self.signals:
            self.loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        for listener in self.listeners:
            listener.close()
        self.expire_timer.cancel()
        # read no more requests: the commands already run get their replies, nothing new starts
        for conn in list(self.clients):
            conn.closing = True
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.pause_reading()
        while self.commits.busy:
            await asyncio.sleep(0.01)
        for conn in list(self.clients):
            if conn.transport is not None:
                conn.transport.close()
        for listener in self.listeners:
            await listener.wait_closed()
        if self.cluster is not None:
            await self.cluster.close()
        try:
            self.store.close()      # writes and fsyncs what is still pending first
        except PersistFailed as exc:
            log.error("shut down without persisting the last writes: %s", exc)
            return 1
        log.info("data flushed and closed")
        return 0

