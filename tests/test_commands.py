"""Command semantics of `fastdyn serve` beyond the differential suite: active expiry, RESP3
shapes, SCAN/KEYS patterns, transactions, and the coordinator contract (replies completing out
of order still leave in request order)."""
import asyncio
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis

from conftest import HOST, free_port
from fastdyn.pending import Pending
from fastdyn.errors import CommandError
from resp_client import RawClient
from test_server_basic import raw


@pytest.fixture
def r(fastdyn_server):
    return redis.Redis(port=fastdyn_server.port)


def test_active_expiry_removes_keys_nobody_reads(r):
    r.mset({f"gone{i}": "x" for i in range(300)})
    for i in range(300):
        r.pexpire(f"gone{i}", 50)
    r.set("stays", "y")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        # INFO's keyspace counts keys in the index without touching them one by one
        if r.info("keyspace")["db0"]["keys"] == 1:
            break
        time.sleep(0.1)
    assert r.info("keyspace")["db0"] == {"keys": 1, "expires": 0, "avg_ttl": 0}


def test_expiry_on_access(r):
    r.set("k", "v", px=30)
    time.sleep(0.06)
    assert r.get("k") is None
    assert r.ttl("k") == -2
    assert r.exists("k") == 0


def test_resp3_reply_shapes(fastdyn_server):
    reply = raw(fastdyn_server.port, b"HELLO 3\r\nGET nokey\r\nMGET a nokey\r\nSET f 1.5\r\n"
                                     b"INCRBYFLOAT f 1\r\nCONFIG GET maxmemory\r\nTTL nokey\r\n")
    assert reply.startswith(b"%8\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
    tail = reply[reply.index(b"fastdyn_version"):]
    assert tail.split(b"\r\n", 3)[3] == (b"_\r\n*2\r\n_\r\n_\r\n+OK\r\n$3\r\n2.5\r\n"
                                         b"%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n:-2\r\n")


def test_scan_visits_every_key_once_with_match_and_count(r):
    keys = {f"user:{i}".encode() for i in range(1000)} | {f"other:{i}".encode() for i in range(50)}
    r.mset({k: b"v" for k in keys})
    seen = []
    cursor = 0
    while True:
        cursor, batch = r.scan(cursor, match="user:*", count=37)
        seen.extend(batch)
        if cursor == 0:
            break
    assert sorted(seen) == sorted(k for k in keys if k.startswith(b"user:"))
    assert sorted(r.keys("other:?")) == sorted(f"other:{i}".encode() for i in range(10))
    assert r.keys("user:[0-1]") == [b"user:0", b"user:1"] or \
        sorted(r.keys("user:[0-1]")) == [b"user:0", b"user:1"]
    assert r.scan(0, match="*", count=5000, _type="hash") == (0, [])


def test_transaction_pipeline(r):
    pipe = r.pipeline()  # MULTI ... EXEC
    pipe.set("a", 1).incr("a").get("a").expire("a", 100)
    assert pipe.execute() == [True, 2, b"2", True]
    assert 99 <= r.ttl("a") <= 100


def test_multi_errors(fastdyn_server):
    port = fastdyn_server.port
    assert raw(port, b"EXEC\r\nDISCARD\r\n") == \
        b"-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n"
    assert raw(port, b"MULTI\r\nMULTI\r\nSET a 1\r\nEXEC\r\nGET a\r\n") == \
        b"+OK\r\n-ERR MULTI calls can not be nested\r\n+QUEUED\r\n*1\r\n+OK\r\n$1\r\n1\r\n"
    assert raw(port, b"MULTI\r\nSET b 1\r\nGET\r\nEXEC\r\nGET b\r\n") == (
        b"+OK\r\n+QUEUED\r\n-ERR wrong number of arguments for 'get' command\r\n"
        b"-EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n")
    assert raw(port, b"MULTI\r\nINCR a\r\nINCRBY a x\r\nDISCARD\r\nGET a\r\n") == \
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+OK\r\n$1\r\n1\r\n"
    # a runtime error inside EXEC does not stop the other commands (Redis' rule)
    assert raw(port, b"MULTI\r\nINCRBY a x\r\nINCR a\r\nEXEC\r\n") == (
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n-ERR value is not an integer or out of range\r\n"
        b":2\r\n")


def test_client_setinfo_and_list(r):
    assert r.execute_command("CLIENT", "SETINFO", "LIB-NAME", "mylib") == b"OK"
    with pytest.raises(redis.ResponseError, match="Unrecognized option"):
        r.execute_command("CLIENT", "SETINFO", "COLOR", "red")
    r.client_setname("me")
    assert "lib-name=mylib" in r.execute_command("CLIENT", "INFO").decode()
    assert any(c["name"] == "me" for c in r.client_list())


def test_counters_keep_ttl_and_text(r):
    r.set("c", "10", ex=100)
    assert r.incrby("c", 5) == 15
    assert r.get("c") == b"15"
    assert r.append("c", "0") == 3
    assert r.incr("c") == 151
    assert 99 <= r.ttl("c") <= 100
    assert r.incrbyfloat("c", 0.5) == 151.5
    assert 99 <= r.ttl("c") <= 100
    r.set("big", str(2 ** 63 - 2))
    assert r.incr("big") == 2 ** 63 - 1
    with pytest.raises(redis.ResponseError, match="overflow"):
        r.incr("big")


def test_binary_safe_keys_and_values(r):
    key = b"\x00\r\n*1\r\n\xff"
    value = bytes(range(256))
    r.set(key, value)
    assert r.get(key) == value
    assert r.keys("\x00*") == [key]


def test_empty_key_gets_a_clear_error(r):
    with pytest.raises(redis.ResponseError, match="key"):
        r.set("", "v")
    assert r.ping()


# -- replies of results that arrive later ----------------------------------------------------

class DelayedCoordinator:
    """A coordinator whose GET results arrive later, in reverse order of the requests, as a
    quorum's would: exercises the reply slots of the command layer."""

    def __init__(self, inner, loop):
        self.inner = inner
        self.loop = loop
        self.delay = 0.2

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get(self, key):
        pending = Pending()
        value = self.inner.get(key)
        self.delay = max(self.delay - 0.02, 0.0)
        self.loop.call_later(self.delay, pending.complete, value)
        return pending

    def exists(self, keys):
        pending = Pending()
        self.loop.call_later(0.05, pending.complete, self.inner.exists(keys))
        return pending

    def size(self):
        pending = Pending()
        # counted when it completes, after the writes before it have landed
        self.loop.call_later(0.3, lambda: pending.complete(self.inner.size()))
        return pending

    def expiry(self, key):
        pending = Pending()
        # a replica refusing the key: the failure arrives as a ValueError, not a CommandError
        self.loop.call_later(0.05, pending.complete,
                             ValueError("key refused") if key == b"bad" else None)
        return pending

    def incr(self, key, delta):
        pending = Pending()
        self.loop.call_later(0.05, pending.complete,
                             CommandError("ERR value is not an integer or out of range"))
        return pending


def test_replies_keep_request_order_when_results_complete_out_of_order(tmp_path):
    from fastdyn.server.config import ServerConfig
    from fastdyn.server.assemble import assemble

    port = free_port()
    cfg = ServerConfig(port=port, data_dir=str(tmp_path / "d")).finish()
    node = assemble(cfg)
    started = threading.Event()
    loop = asyncio.new_event_loop()

    def run():
        asyncio.set_event_loop(loop)
        node.coord = DelayedCoordinator(node.coord, loop)
        original = loop.add_signal_handler
        loop.add_signal_handler = lambda *a: None  # signals belong to the main thread
        loop.call_soon(started.set)
        loop.run_until_complete(node.serve())
        loop.add_signal_handler = original

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(5)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                sock = socket.create_connection((HOST, port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        payload = b"SET a 1\r\nSET b 2\r\n" + b"".join(
            b"GET %s\r\nPING\r\n" % k for k in (b"a", b"b", b"nokey")) + \
            b"INCR a\r\nMSETNX a 9 c 3\r\nMSETNX c 3 d 4\r\nTTL bad\r\nDBSIZE\r\nECHO end\r\n"
        reply = raw(port, payload, wait=1.5, sock=sock)
        assert reply == (b"+OK\r\n+OK\r\n$1\r\n1\r\n+PONG\r\n$1\r\n2\r\n+PONG\r\n$-1\r\n+PONG\r\n"
                         b"-ERR value is not an integer or out of range\r\n:0\r\n:1\r\n"
                         b"-ERR key refused\r\n:4\r\n"
                         b"$3\r\nend\r\n")
        sock.close()
    finally:
        loop.call_soon_threadsafe(node.stopping.set)
        thread.join(10)



def test_command_docs_and_info_describe_every_command(fastdyn_server):
    with RawClient(fastdyn_server.port) as c:
        names = sorted(item[1] for item in c.call("COMMAND", "LIST")[1])
        kind, pairs = c.call("COMMAND", "DOCS")
        assert kind == "array" and len(names) > 30
        docs = {k[1]: dict((f[1], v) for f, v in zip(d[1][0::2], d[1][1::2]))
                for k, d in zip(pairs[0::2], pairs[1::2])}
        assert sorted(docs) == names
        assert [n for n, doc in docs.items() if not doc[b"summary"][1].strip()] == []
        get, mset, ping, missing = c.call("COMMAND", "INFO", "get", "MSET", "ping", "nosuch")[1]
    assert [x[1] for x in get[1][:2]] == [b"get", 2] and ("simple", b"readonly") in get[1][2][1]
    assert [x[1] for x in get[1][3:6]] == [1, 1, 1]
    assert [x[1] for x in mset[1][3:6]] == [1, -1, 2] and ("simple", b"write") in mset[1][2][1]
    assert [x[1] for x in ping[1][3:6]] == [0, 0, 0]
    assert missing == ("nullarray",)


def test_strings_cannot_grow_past_max_value_bytes(start_fastdyn):
    port = start_fastdyn("--max-value-bytes", "1024").port
    reply = raw(port, b"SETRANGE k 1023 x\r\nSETRANGE k 1024 x\r\nSETBIT k 8191 1\r\n"
                      b"SETBIT k 8192 1\r\nAPPEND k y\r\nSTRLEN k\r\nSETRANGE k 536870912 x\r\n"
                      b"SETBIT k 4294967296 1\r\n")
    too_big = b"-ERR string exceeds maximum allowed size (max-value-bytes)\r\n"
    assert reply == (b":1024\r\n" + too_big + b":0\r\n" + too_big + too_big + b":1024\r\n"
                     b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n"
                     b"-ERR bit offset is not an integer or out of range\r\n")


def test_reset_logs_out_even_inside_a_pipeline(start_fastdyn):
    port = start_fastdyn("--requirepass", "pw").port
    reply = raw(port, b"AUTH pw\r\nSET k v\r\n")
    assert reply == b"+OK\r\n+OK\r\n"
    with socket.create_connection((HOST, port)) as sock:
        assert raw(port, b"AUTH pw\r\n", sock=sock) == b"+OK\r\n"
        reply = raw(port, b"*1\r\n$5\r\nRESET\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", sock=sock)
        assert reply == b"+RESET\r\n-NOAUTH Authentication required.\r\n"
        assert raw(port, b"AUTH pw\r\nGET k\r\n", sock=sock) == b"+OK\r\n$1\r\nv\r\n"


def test_client_list_filters_by_id_in_the_order_given(fastdyn_server):
    port = fastdyn_server.port
    with RawClient(port) as me, RawClient(port) as other:
        my_id, other_id = me.call("CLIENT", "ID")[1], other.call("CLIENT", "ID")[1]
        listed = me.call("CLIENT", "LIST", "ID", other_id, 999999, my_id, other_id)[1]
        assert [line.split()[0] for line in listed.splitlines()] == \
            [b"id=%d" % other_id, b"id=%d" % my_id, b"id=%d" % other_id]
        normal = me.call("CLIENT", "LIST", "TYPE", "normal")[1]
        assert {line.split()[0] for line in normal.splitlines()} >= \
            {b"id=%d" % my_id, b"id=%d" % other_id}
        assert me.call("CLIENT", "LIST", "TYPE", "replica") == ("bulk", b"")


def test_the_server_does_not_load_numpy():
    # importing numpy made the dispatcher's GET path about a third slower in-process
    code = ("import sys, fastdyn.server.server, fastdyn.server.protocol; "
            "sys.exit('numpy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
