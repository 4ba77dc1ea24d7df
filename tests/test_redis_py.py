"""redis-py 8 (sync and asyncio) against a real `fastdyn serve`, as an application uses it.

Most tests run against a single node, against one node of a 3-node cluster ("cluster" ids),
and against a real redis-server ("redis" ids) as a control: a test that fails there is wrong,
a test that fails only on fastdyn found a difference.
"""
import asyncio
import datetime
import time

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from resp_client import RawClient
from resp_servers import (alive, checked_server, cluster_node, paired_servers,  # noqa: F401
                          start_fastdyn, start_redis)


@pytest.fixture(params=["fastdyn", "cluster", "redis"])
def server(request, paired_servers):
    yield from checked_server(request, paired_servers)


@pytest.fixture
def fastdyn(paired_servers):
    s = paired_servers["fastdyn"]
    assert alive(s), s.log()[-2000:]
    with RawClient(s.port) as c:
        c.call("FLUSHALL")
    return s


def _client(server, **kw):
    # No retries: an authentication error must surface at once, not after backoffs.
    return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=10,
                       retry=Retry(NoBackoff(), 0), **kw)


# --- connection setup ----------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 3])
def test_connection_setup_and_basic_commands(server, protocol):
    r = _client(server, protocol=protocol, client_name="app-1")
    try:
        assert r.ping() is True
        assert r.client_getname() in (b"app-1", "app-1")  # redis-py decodes it for RESP2
        assert isinstance(r.client_id(), int)
        assert r.set("k", b"v") is True
        assert r.get("k") == b"v"
        assert r.get("missing") is None
        assert r.echo(b"x\r\ny") == b"x\r\ny"
        assert r.dbsize() == 1
        assert r.execute_command("SELECT", 0) in (b"OK", "OK", True)
        info = r.info()
        assert info["redis_version"] >= "7"
        assert r.info("keyspace")["db0"]["keys"] == 1
        conn = r.connection_pool.get_connection()
        assert conn.protocol == protocol
        r.connection_pool.release(conn)
    finally:
        r.close()


def test_hello_3_is_what_redis_py_negotiates(server):
    r = _client(server, protocol=3)
    try:
        r.ping()
        conn = r.connection_pool.get_connection()
        meta = {k.decode() if isinstance(k, bytes) else k: v
                for k, v in conn.handshake_metadata.items()}
        assert meta["proto"] == 3
        assert {"server", "version", "id", "mode", "role", "modules"} <= set(meta)
        r.connection_pool.release(conn)
    finally:
        r.close()


def test_client_setinfo_is_accepted(fastdyn):
    """redis-py sends CLIENT SETINFO on every connection (Redis >= 7.2 accepts it)."""
    with RawClient(fastdyn.port) as c:
        assert c.call("CLIENT", "SETINFO", "LIB-NAME", "redis-py") == ("simple", b"OK")
        assert c.call("CLIENT", "SETINFO", "LIB-VER", "8.1.0") == ("simple", b"OK")
        assert c.call("CLIENT", "SETINFO", "LIB-NAME", "bad name")[0] == "error"
        assert c.call("CLIENT", "SETINFO", "NOSUCH", "x")[0] == "error"
        assert c.call("PING") == ("simple", b"PONG")


def test_select_other_db_is_refused_at_connect(server):
    r = _client(server, db=1)
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.ping()
    r.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_decode_responses(server, protocol):
    r = _client(server, protocol=protocol, decode_responses=True)
    try:
        r.mset({"a": "1", "b": "héllo"})
        assert r.mget("a", "b", "c") == ["1", "héllo", None]
        assert r.incr("a", 41) == 42
        assert r.get("a") == "42"
        assert sorted(r.keys("*")) == ["a", "b"]
        assert sorted(r.scan_iter(match="?")) == ["a", "b"]
        assert r.type("a") == "string"
        assert r.getdel("b") == "héllo"
        assert r.exists("a", "b") == 1
    finally:
        r.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_binary_values_round_trip(server, protocol):
    r = _client(server, protocol=protocol)
    try:
        every_byte = bytes(range(256))
        r.set(b"bin\x00key\r\n", every_byte)
        assert r.get(b"bin\x00key\r\n") == every_byte
        r.set(b"empty", b"")
        assert r.get(b"empty") == b""
        assert r.strlen(b"empty") == 0
        big = every_byte * 4096  # 1 MiB
        r.set(b"big", big)
        assert r.get(b"big") == big
        assert r.append(b"big", b"\r\n") == len(big) + 2
        assert r.mget([b"bin\x00key\r\n", b"empty", b"nope"]) == [every_byte, b"", None]
    finally:
        r.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_set_options_and_expiry(server, protocol):
    r = _client(server, protocol=protocol)
    try:
        assert r.set("k", "v", nx=True) is True
        assert r.set("k", "v", nx=True) is None
        assert r.set("k", "w", xx=True, get=True) == b"v"
        assert r.set("k", "x", ex=100) is True
        assert 99 <= r.ttl("k") <= 100
        assert r.set("k", "y", keepttl=True) is True
        assert 99 <= r.ttl("k") <= 100
        assert r.getex("k", px=50000) == b"y"
        assert 49000 <= r.pttl("k") <= 50000
        assert r.getex("k", persist=True) == b"y"
        assert r.ttl("k") == -1
        assert r.expire("k", 100, nx=True) is True
        assert r.expire("k", 50, gt=True) is False
        assert r.expire("k", 50, lt=True) is True
        assert abs(r.expiretime("k") - (time.time() + 50)) <= 2
        assert r.persist("k") is True
        assert r.pexpire("missing", 100) is False
        assert r.setex("s", 100, "v") is True
        assert r.psetex("p", 100000, "v") is True
        assert r.setnx("s", "other") is False
        assert r.getset("s", "new") == b"v"
        assert r.ttl("s") == -1
        r.set("gone", "v", px=100)
        r.set("gone2", "v", px=100)
        r.expire("k", 1)
        time.sleep(1.3)
        assert r.get("gone") is None
        assert r.exists("gone", "gone2", "k") == 0
        with pytest.raises(redis.ResponseError, match="invalid expire time"):
            r.set("k", "v", ex=0)
        with pytest.raises(redis.ResponseError):
            r.incr("s")
    finally:
        r.close()


def test_counters(server):
    r = _client(server)
    try:
        assert r.incr("c") == 1
        assert r.incrby("c", 10) == 11
        assert r.decr("c") == 10
        assert r.decrby("c", 20) == -10
        assert r.get("c") == b"-10"
        r.set("c", 2**63 - 1)
        with pytest.raises(redis.ResponseError, match="overflow"):
            r.incr("c")
        assert r.get("c") == str(2**63 - 1).encode()
    finally:
        r.close()


# --- pipelines -----------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 3])
def test_pipeline_without_transaction(server, protocol):
    r = _client(server, protocol=protocol)
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(500):
            pipe.set(f"key:{i}", i)
            pipe.incr("counter")
            pipe.get(f"key:{i}")
        pipe.get("missing")
        pipe.incr("key:1")
        results = pipe.execute(raise_on_error=False)
        assert len(results) == 1502
        assert results[0:3] == [True, 1, b"0"]
        assert results[-5:-2] == [True, 500, b"499"]
        assert results[-2] is None
        assert results[-1] == 2
        assert r.get("counter") == b"500"
        assert r.dbsize() == 501
        # an error in the middle of a pipeline is returned in place; the rest still runs
        pipe = r.pipeline(transaction=False)
        pipe.set("s", "text").incr("s").get("s")
        out = pipe.execute(raise_on_error=False)
        assert out[0] is True and isinstance(out[1], redis.ResponseError) and out[2] == b"text"
    finally:
        r.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_pipeline_with_transaction(server, protocol):
    """redis-py's default pipeline() wraps the batch in MULTI/EXEC."""
    r = _client(server, protocol=protocol)
    try:
        pipe = r.pipeline()  # transaction=True
        pipe.set("tx", "1").incr("tx").get("tx").expire("tx", 100).ttl("tx")
        assert pipe.execute() == [True, 2, b"2", True, 100]
        # a runtime error inside EXEC does not undo the other commands (Redis semantics)
        pipe = r.pipeline()
        pipe.set("s", "text").incr("s").set("after", "ok")
        with pytest.raises(redis.ResponseError):
            pipe.execute()
        assert r.mget("s", "after") == [b"text", b"ok"]
        out = r.pipeline().incr("s").get("after").execute(raise_on_error=False)
        assert isinstance(out[0], redis.ResponseError) and out[1] == b"ok"
        assert r.ping() is True
    finally:
        r.close()


# --- authentication ------------------------------------------------------------------------

@pytest.fixture(params=["fastdyn", "redis"])
def password_server(request, tmp_path):
    if request.param == "fastdyn":
        s = start_fastdyn(tmp_path, "--requirepass", "s3cret pw")
    else:
        s = start_redis(tmp_path, "--requirepass", "s3cret pw")
    yield s
    s.kill()


@pytest.mark.parametrize("protocol", [2, 3])
def test_password_auth(password_server, protocol):
    good = _client(password_server, protocol=protocol, password="s3cret pw")
    good_user = _client(password_server, protocol=protocol, username="default",
                        password="s3cret pw")
    wrong = _client(password_server, protocol=protocol, password="nope")
    missing = _client(password_server, protocol=2)
    try:
        assert good.set("k", "v") is True
        assert good_user.get("k") == b"v"
        with pytest.raises(redis.AuthenticationError):
            wrong.get("k")
        with pytest.raises(redis.AuthenticationError):
            missing.get("k")
        assert good.get("k") == b"v"
    finally:
        for c in (good, good_user, wrong, missing):
            c.close()


# --- asyncio -------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 3])
def test_asyncio_client(server, protocol):
    async def main():
        r = redis.asyncio.Redis(host="127.0.0.1", port=server.port, protocol=protocol,
                                max_connections=400)
        try:
            assert await r.ping() is True
            await asyncio.gather(*(r.set(f"k{i}", f"v{i}") for i in range(200)))
            values = await asyncio.gather(*(r.get(f"k{i}") for i in range(200)))
            assert values == [f"v{i}".encode() for i in range(200)]
            counts = await asyncio.gather(*(r.incr("n") for _ in range(100)))
            assert sorted(counts) == list(range(1, 101))
            async with r.pipeline(transaction=False) as pipe:
                pipe.mset({"a": 1, "b": 2}).mget("a", "b", "zz").delete("a", "zz")
                assert await pipe.execute() == [True, [b"1", b"2", None], 1]
            assert await r.set("e", "v", px=100) is True
            await asyncio.sleep(0.3)
            assert await r.get("e") is None
            keys = {k async for k in r.scan_iter(match="k1*", count=10)}
            assert keys == {f"k{i}".encode() for i in range(200) if str(i).startswith("1")}
        finally:
            await r.aclose()

    asyncio.run(main())


def test_asyncio_password(password_server):
    async def main():
        r = redis.asyncio.Redis(host="127.0.0.1", port=password_server.port,
                                password="s3cret pw")
        bad = redis.asyncio.Redis(host="127.0.0.1", port=password_server.port,
                                  password="wrong", retry=redis.asyncio.retry.Retry(NoBackoff(), 0))
        try:
            assert await r.set("k", "v") is True
            assert await r.get("k") == b"v"
            with pytest.raises(redis.AuthenticationError):
                await bad.get("k")
        finally:
            await r.aclose()
            await bad.aclose()

    asyncio.run(main())


# --- concurrency ---------------------------------------------------------------------------

def test_concurrent_counters_and_set_nx(server):
    """Read-modify-write commands from many connections at once: no lost increment, exactly
    one winner per SET NX, GETSET hands each old value to exactly one client."""
    import threading

    r = _client(server)
    r.set("token", "0")
    results = {"nx": [], "getset": []}
    lock = threading.Lock()

    def worker(n):
        c = _client(server)
        try:
            pipe = c.pipeline(transaction=False)
            for i in range(200):
                pipe.incr("hits")
                pipe.incrby("bytes", 3)
                pipe.set(f"lock:{i}", n, nx=True)
                pipe.getset("token", f"{n}:{i}")
            out = pipe.execute()
            with lock:
                results["nx"] += [(i, n) for i in range(200) if out[4 * i + 2]]
                results["getset"] += [out[4 * i + 3] for i in range(200)]
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert r.get("hits") == b"3200"
        assert r.get("bytes") == b"9600"
        winners = {}
        for i, n in results["nx"]:
            assert i not in winners, f"lock:{i} won twice"
            winners[i] = n
        assert sorted(winners) == list(range(200))
        assert all(r.get(f"lock:{i}") == str(n).encode() for i, n in winners.items())
        handed = results["getset"] + [r.get("token")]
        assert len(handed) == len(set(handed)) == 3201  # every value seen exactly once
    finally:
        r.close()


@pytest.mark.parametrize("sync", ["always", "interval"])
def test_reply_order_with_group_commit(tmp_path, sync):
    """With --sync always replies wait for the batch's fsync; on every connection they must
    still come back in request order, reads seeing the writes before them."""
    node = start_fastdyn(tmp_path, "--sync", sync)

    async def client(n, r):
        for round_no in range(15):
            pipe = r.pipeline(transaction=False)
            for i in range(20):
                pipe.set(f"c{n}:k{i}", f"{round_no}:{i}")
                pipe.incr(f"c{n}:counter")
                pipe.get(f"c{n}:k{i}")
                pipe.getset(f"c{n}:last", f"{round_no}:{i}")
            out = await pipe.execute()
            for i in range(20):
                base = round_no * 20 + i
                assert out[4 * i:4 * i + 3] == [True, base + 1, f"{round_no}:{i}".encode()]
                previous = out[4 * i + 3]
                expected = None if base == 0 else (
                    f"{round_no}:{i - 1}" if i else f"{round_no - 1}:19").encode()
                assert previous == expected

    async def main():
        r = redis.asyncio.Redis(host="127.0.0.1", port=node.port, max_connections=100)
        try:
            await asyncio.gather(*(client(n, r) for n in range(30)))
        finally:
            await r.aclose()

    try:
        asyncio.run(main())
    finally:
        node.kill()


@pytest.mark.parametrize("protocol", [2, 3])
def test_client_introspection(server, protocol):
    r = _client(server, protocol=protocol, client_name="introspect")
    other = _client(server, client_name="other")
    try:
        other.ping()
        me = r.client_info()
        assert me["name"] == "introspect"
        assert int(me["id"]) == r.client_id()
        assert me["addr"].startswith("127.0.0.1:")
        listed = {c["name"]: c for c in r.client_list()}
        assert {"introspect", "other"} <= set(listed)
        assert int(listed["introspect"]["id"]) == int(me["id"])
        assert r.command_count() > 20
        config = r.config_get("maxclients")
        assert int(config["maxclients"]) > 0
    finally:
        r.close()
        other.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_time_and_string_commands_through_redis_py(server, protocol):
    r = _client(server, protocol=protocol)
    try:
        seconds, micros = r.time()  # redis-py parses TIME into a tuple of two ints
        assert isinstance(seconds, int) and 0 <= micros < 1_000_000
        assert abs(seconds + micros / 1e6 - time.time()) < 5
        assert isinstance(r.lastsave(), datetime.datetime)
        r.set("s", "Hello World", ex=100)
        assert r.getrange("s", 0, 4) == b"Hello" and r.substr("s", -5) == b"World"
        assert r.setrange("s", 6, "Redis") == 11 and r.get("s") == b"Hello Redis"
        assert r.setbit("b", 7, 1) == 0 and r.getbit("b", 7) == 1 and r.get("b") == b"\x01"
        assert r.bitcount("s") == r.bitcount("s", 0, -1, "BIT") and r.bitpos("b", 1) == 7
        r.mset({"key1": "ohmytext", "key2": "mynewtext"})
        assert r.lcs("key1", "key2") == b"mytext" and r.lcs("key1", "key2", len=True) == 6
        assert r.rename("s", "t") is True and 99 <= r.ttl("t") <= 100
        assert r.renamenx("t", "key1") is False
        assert r.copy("t", "u") is True and r.get("u") == b"Hello Redis"
        assert r.randomkey() in {b"t", b"u", b"b", b"key1", b"key2"}
        assert r.memory_usage("u") > len(b"Hello Redis") and r.memory_usage("nokey") is None
        with pytest.raises(redis.ResponseError, match="no such key"):
            r.rename("nokey", "x")
        me = r.client_id()
        assert [int(c["id"]) for c in r.client_list(client_id=[me])] == [me]
        assert r.client_list(_type="pubsub") == []
    finally:
        r.close()


def test_no_exception_was_logged(paired_servers):
    """Runs last in this module: nothing redis-py sent above raised inside fastdyn."""
    log = paired_servers["fastdyn"].log()
    assert "Traceback" not in log and "Exception in callback" not in log, log[-5000:]
