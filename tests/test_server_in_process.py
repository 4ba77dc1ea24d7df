"""Several nodes in one process: each keeps its own store, coordinator and statistics.

The nodes are built by `assemble` (as `fastdyn serve` builds its one node) and served on one
event loop in a thread; clients talk to them over real sockets.
"""
import asyncio
import contextlib
import socket
import threading

import pytest
import redis

from conftest import HOST, free_port
from fastdyn.errors import ListenError
from fastdyn.server.assemble import assemble
from fastdyn.server.config import ServerConfig


@contextlib.contextmanager
def serving(*nodes):
    """Serve `nodes` on one event loop in a thread; stop them all on exit."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failures = []

    async def serve_all():
        tasks = [asyncio.ensure_future(node.serve()) for node in nodes]
        while any(node.stopping is None for node in nodes):
            await asyncio.sleep(0.01)
        ready.set()
        return await asyncio.gather(*tasks)

    def run():
        try:
            failures.extend(code for code in loop.run_until_complete(serve_all()) if code)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
            ready.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert ready.wait(10) and not failures, failures
        yield
    finally:
        for node in nodes:
            if node.stopping is not None:
                loop.call_soon_threadsafe(node.stopping.set)
        thread.join(20)
        loop.close()
    assert not thread.is_alive()
    assert failures == []


def node_config(tmp_path, name, **options):
    return ServerConfig(port=free_port(), data_dir=str(tmp_path / name), **options).finish()


def test_two_nodes_in_one_process_keep_their_own_data(tmp_path):
    a = assemble(node_config(tmp_path, "a"))
    b = assemble(node_config(tmp_path, "b"))
    with serving(a, b):
        ra = redis.Redis(HOST, a.config.port)
        rb = redis.Redis(HOST, b.config.port)
        ra.set("k", "on a")
        rb.mset({"k": "on b", "other": "1"})
        assert ra.get("k") == b"on a" and rb.get("k") == b"on b"
        assert (ra.dbsize(), rb.dbsize()) == (1, 2)
        ra.close()
        rb.close()


def test_a_busy_port_fails_before_the_data_directory_exists(tmp_path):
    cfg = node_config(tmp_path, "busy")
    with socket.socket() as busy:
        busy.bind((HOST, cfg.port))
        busy.listen()
        with pytest.raises(ListenError, match="Address already in use"):
            assemble(cfg)
    assert not (tmp_path / "busy").exists()
    # nothing of the refused node stays open: the same configuration builds a node now
    node = assemble(cfg)
    with serving(node):
        with redis.Redis(HOST, cfg.port) as r:
            assert r.ping()


def keyspace_counts(r):
    stats = r.info("stats")
    return stats["keyspace_hits"], stats["keyspace_misses"]


def test_each_node_counts_its_own_keyspace_hits_and_misses(tmp_path):
    a = assemble(node_config(tmp_path, "a"))
    b = assemble(node_config(tmp_path, "b"))
    with serving(a, b), redis.Redis(HOST, a.config.port) as ra, \
            redis.Redis(HOST, b.config.port) as rb:
        ra.set("k", "1")
        rb.set("k", "1")
        ra.get("k")                                 # the fast path: a hit
        ra.get("nokey")                             # a miss
        ra.mget("k", "k", "nokey")                  # a command's encoder: 2 hits, 1 miss
        assert ra.pipeline().get("k").getrange("k", 0, 0).strlen("nokey").execute() \
            == [b"1", b"1", 0]                      # pipelined, through EXEC: 2 hits, 1 miss
        rb.get("nokey")
        assert keyspace_counts(ra) == (5, 3)
        assert keyspace_counts(rb) == (0, 1)
        rb.config_resetstat()
        assert keyspace_counts(rb) == (0, 0)
        assert keyspace_counts(ra) == (5, 3)
        rb.get("k")
        ra.config_resetstat()
        assert keyspace_counts(ra) == (0, 0)
        assert keyspace_counts(rb) == (1, 0)
