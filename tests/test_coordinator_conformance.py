"""One suite, every coordinator: the `Coordinator` Protocol's contract run against the single
node's `LocalCoordinator` and against the cluster coordinator as a cluster member builds it
(`Cluster(config, store).coordinator`: the `QuorumCoordinator` behind per-key ordering), and
the bare `QuorumCoordinator` too, in a cluster of three members in this process, on one uvloop
event loop, talking over real loopback peer sockets.

A result may be direct or a `Pending`: `Env.call` runs the loop until it completes and raises
the failure it carries, so each case reads the same for every coordinator. Where they
legitimately differ (a SCAN cursor's shape, `keys()` as an iterator or a list), only the shared
contract is asserted.
"""
import asyncio
import collections
import re
import time
from pathlib import Path

import pytest
import uvloop

from fastdyn.cluster.coordinator import (DELETE, KEEP, MAX_KEY_BYTES, ClusterCoordinator,
                                         Coordinator, LocalCoordinator)
from fastdyn.cluster.runtime import Cluster
from fastdyn.errors import BadKey, CounterOverflow, NotAnInteger
from fastdyn.pending import Pending
from fastdyn.server.config import ServerConfig
from fastdyn.server.assemble import listen_sockets
from fastdyn.server.group_commit import GroupCommit
from fastdyn.storage import Store

HOST = "127.0.0.1"
MEMBERS = 3
LLONG_MAX = (1 << 63) - 1
LLONG_MIN = -(1 << 63)
BAD_KEYS = [b"", b"k" * (MAX_KEY_BYTES + 1)]


class Env:
    """A coordinator and the event loop its Pending results complete on."""

    def __init__(self, coord, runner, stores=()):
        self.coord = coord
        self.runner = runner
        self.stores = stores     # a cluster's: their expiry is held by anti-entropy

    def resolve(self, result, timeout=10.0):
        """The result itself, or what a Pending completes with (a failure is raised)."""
        if result.__class__ is Pending:
            result = self.runner.run(asyncio.wait_for(_completion(result), timeout))
        if isinstance(result, Exception):
            raise result
        return result

    def call(self, name, *args):
        return self.resolve(getattr(self.coord, name)(*args))


async def _completion(pending):
    future = asyncio.get_running_loop().create_future()
    pending.add_done_callback(lambda result: future.done() or future.set_result(result))
    return await future


def _local(tmp_path, runner):
    store = Store(str(tmp_path / "single"), sync="never")
    return Env(LocalCoordinator(store), runner), store.close


def _cluster(tmp_path, runner, ordered=True):
    """Three members, each built as a node with --seeds builds its cluster half (stores
    without fsync: durability is not under test); the first one's coordinator (or, not
    ordered, the QuorumCoordinator inside it)."""
    sockets = [listen_sockets(HOST, 0) for _ in range(MEMBERS)]
    addresses = [f"{HOST}:{s[0].getsockname()[1]}" for s in sockets]
    members, stores = [], []
    for i, address in enumerate(addresses):
        config = ServerConfig(host=HOST, port=0, peer_port=int(address.rsplit(":", 1)[1]),
                              data_dir=str(tmp_path / f"node{i}"), name=address,
                              seeds=list(addresses), sync="never").finish()
        stores.append(Store(config.data_dir, sync="never",
                            max_value_bytes=config.max_bulk_bytes))
        members.append(Cluster(config, stores[-1]))

    async def start():
        loop = asyncio.get_running_loop()
        for member, store, socks in zip(members, stores, sockets):
            await member.start(loop, GroupCommit(store, member.coordinator, False), socks)
        deadline = loop.time() + 10
        while any(len(m.members) < MEMBERS for m in members):
            assert loop.time() < deadline, "the members did not learn each other's names"
            await asyncio.sleep(0.005)

    async def stop():
        for member in members:
            await member.close()

    def close():
        runner.run(stop())
        for store in stores:
            store.close()

    try:
        runner.run(start())
    except BaseException:
        close()
        raise
    first = members[0]
    return (Env(first.coordinator if ordered else first.quorum_coordinator, runner, stores),
            close)


BUILDERS = {"local": _local, "cluster": _cluster,
            "quorum": lambda tmp_path, runner: _cluster(tmp_path, runner, ordered=False)}


@pytest.fixture(params=list(BUILDERS))
def env(request, tmp_path):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        built, close = BUILDERS[request.param](tmp_path, runner)
        try:
            yield built
        finally:
            close()


def wait_past(env, expiry_ms):
    while env.coord.clock() <= expiry_ms:
        time.sleep(0.005)


def all_keys(env):
    return sorted(env.call("keys"))


# -- the interface ---------------------------------------------------------------------------

def protocol_members(protocol) -> set:
    names = set()
    for cls in protocol.__mro__:
        if cls.__module__ == LocalCoordinator.__module__:
            names |= {n for n in vars(cls) if not n.startswith("_")}
            names |= set(vars(cls).get("__annotations__", {}))
    return names


def test_the_protocol_states_what_the_command_layer_uses():
    root = Path(__file__).resolve().parent.parent
    sources = [*(root / "fastdyn" / "server").rglob("*.py"), root / "ext" / "_commands.pyx"]
    used = {name for path in sources
            for name in re.findall(r"\bcoord\.(\w+)", path.read_text())}
    assert {"get", "put", "update", "write_seq"} <= used
    assert used <= protocol_members(ClusterCoordinator)
    assert protocol_members(Coordinator) < protocol_members(ClusterCoordinator)


def test_implements_the_protocol(env):
    assert isinstance(env.coord, Coordinator)
    # the DYN.* commands answer on a cluster member only: they look for these members
    assert isinstance(env.coord, ClusterCoordinator) == (env.coord.__class__ is not
                                                         LocalCoordinator)


def test_replication_and_clock(env):
    rep = env.call("replication")
    assert rep["r_effective"] <= rep["n_effective"] <= rep["n"]
    assert rep["w_effective"] <= rep["n_effective"]
    assert len(rep["members"]) >= rep["n_effective"] >= 1
    before = int(time.time() * 1000)
    now = env.coord.clock()
    assert before <= now <= int(time.time() * 1000)


# -- reads and plain writes ------------------------------------------------------------------

def test_absent_key(env):
    assert env.call("get", b"nope") is None
    assert env.call("get_entry", b"nope") is None
    assert env.call("expiry", b"nope") is None
    assert env.call("exists", [b"nope"]) == 0
    assert env.call("get_many", [b"nope", b"nope2"]) == [None, None]


def test_put_then_get(env):
    seq = env.coord.write_seq
    assert env.call("put", b"k", b"v1") is None
    assert env.coord.write_seq > seq
    seq = env.coord.write_seq
    assert env.call("get", b"k") == b"v1"
    assert env.call("get_entry", b"k") == (b"v1", 0)
    assert env.call("expiry", b"k") == 0
    assert env.coord.write_seq == seq   # reads are not writes
    env.call("put", b"k", b"v2")
    assert env.call("get", b"k") == b"v2"


def test_put_with_expiry(env):
    expiry = env.coord.clock() + 60_000
    env.call("put", b"k", b"v", expiry)
    assert env.call("get_entry", b"k") == (b"v", expiry)
    assert env.call("expiry", b"k") == expiry
    env.call("put", b"k", b"w")   # a plain write drops the TTL
    assert env.call("get_entry", b"k") == (b"w", 0)


def test_put_with_past_expiry_deletes(env):
    env.call("put", b"k", b"v")
    env.call("put", b"k", b"w", env.coord.clock() - 1)
    assert env.call("get", b"k") is None
    assert env.call("size") == 0


def test_expired_key_reads_absent(env):
    env.call("put", b"stays", b"x")
    expiry = env.coord.clock() + 30
    env.call("put", b"k", b"v", expiry)
    wait_past(env, expiry)
    assert env.call("get", b"k") is None
    assert env.call("get_entry", b"k") is None
    assert env.call("expiry", b"k") is None
    assert env.call("exists", [b"k", b"stays"]) == 1
    assert env.call("get_many", [b"k", b"stays"]) == [None, b"x"]
    assert env.call("size") == 1
    assert all_keys(env) == [b"stays"]
    assert env.call("update", b"k", lambda v, e, now: (KEEP, (v, e))) == (None, 0)
    assert env.call("delete", [b"k"]) == 0


def test_sweep_expired(env):
    expiry = env.coord.clock() + 30
    env.call("put", b"k", b"v", expiry)
    env.call("put", b"stays", b"x")
    wait_past(env, expiry)
    if env.stores:
        # a cluster member keeps an expired value (a tombstone) until anti-entropy has seen
        # every replica hold it and the grace period has passed
        assert env.coord.sweep_expired(100) == 0
        for store in env.stores:
            store.expire_hold_ms = 0
    assert env.coord.sweep_expired(100) == 1
    assert env.coord.sweep_expired(100) == 0
    assert env.call("get", b"stays") == b"x"


def test_expires_counts_keys_with_a_ttl(env):
    now = env.coord.clock()
    env.call("put", b"a", b"1", now + 60_000)
    env.call("put", b"b", b"2")
    env.call("incr", b"c", 1)
    assert env.call("expires") == 1
    env.call("put", b"short", b"3", now + 30)
    assert env.call("expires") == 2
    wait_past(env, now + 30)
    assert env.call("expires") == 1
    env.call("update", b"b", lambda v, e, now: ((v, now + 60_000), None))
    assert env.call("expires") == 2


def test_put_many_get_many(env):
    pairs = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    assert env.call("put_many", pairs) is None
    assert env.call("get_many", [b"c", b"x", b"a", b"a"]) == [b"3", None, b"1", b"1"]
    assert env.call("size") == 3


def test_exists_counts_a_key_each_time_it_is_named(env):
    env.call("put_many", [(b"a", b"1"), (b"b", b"2")])
    assert env.call("exists", [b"a", b"a", b"b", b"x"]) == 3


def test_delete_counts_keys_that_existed(env):
    env.call("put_many", [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    # a key named twice is deleted once, as Redis' DEL counts it
    assert env.call("delete", [b"a", b"b", b"a", b"x"]) == 2
    assert env.call("get_many", [b"a", b"b", b"c"]) == [None, None, b"3"]
    assert env.call("delete", [b"a"]) == 0


def test_flush_empties(env):
    env.call("put_many", [(b"k%d" % i, b"v") for i in range(10)])
    env.call("put", b"t", b"v", env.coord.clock() + 60_000)
    assert env.call("flush") is None
    assert env.call("size") == 0
    assert all_keys(env) == []
    assert env.call("get", b"k1") is None
    assert env.call("get_entry", b"t") is None
    env.call("put", b"k1", b"after")   # a write after the flush stays
    assert env.call("get", b"k1") == b"after"


def test_size_keys_and_scan_cover_every_key_once(env):
    keys = {b"key:%d" % i for i in range(60)}
    env.call("put_many", [(k, b"v") for k in keys])
    env.call("delete", [b"key:0"])
    keys.discard(b"key:0")
    assert env.call("size") == len(keys)
    assert all_keys(env) == sorted(keys)
    seen = collections.Counter()
    cursor, calls = 0, 0
    while True:
        cursor, page = env.call("scan", cursor, 7)
        assert isinstance(cursor, int) and cursor >= 0
        seen.update(page)
        calls += 1
        assert calls <= len(keys), "the scan does not end"
        if cursor == 0:
            break
    assert set(seen) == keys
    assert max(seen.values()) == 1
    assert calls > 1


# -- read-modify-write -----------------------------------------------------------------------

def test_update_sees_the_state_and_answers_its_reply(env):
    expiry = env.coord.clock() + 60_000
    env.call("put", b"k", b"v", expiry)
    seen = []

    def keep(value, expiry_ms, now_ms):
        seen.append((value, expiry_ms, now_ms))
        return KEEP, "kept"

    before = env.coord.clock()
    assert env.call("update", b"k", keep) == "kept"
    (value, expiry_seen, now), = seen
    assert (value, expiry_seen) == (b"v", expiry)
    assert before <= now <= env.coord.clock()
    assert env.call("get_entry", b"k") == (b"v", expiry)
    seen.clear()
    assert env.call("update", b"absent", keep) == "kept"
    assert seen[0][:2] == (None, 0)
    assert env.call("get", b"absent") is None


def test_update_writes_a_new_state(env):
    expiry = env.coord.clock() + 60_000
    assert env.call("update", b"k", lambda v, e, now: ((b"new", expiry), v)) is None
    assert env.call("get_entry", b"k") == (b"new", expiry)
    # the value handed back unchanged with another expiry: only the TTL changes
    assert env.call("update", b"k", lambda v, e, now: ((v, 0), e)) == expiry
    assert env.call("get_entry", b"k") == (b"new", 0)
    assert env.call("update", b"k", lambda v, e, now: ((v + b"!", e), len(v))) == 3
    assert env.call("get", b"k") == b"new!"


def test_update_deletes(env):
    env.call("put_many", [(b"a", b"1"), (b"b", b"2")])
    assert env.call("update", b"a", lambda v, e, now: (DELETE, v)) == b"1"
    assert env.call("get", b"a") is None
    assert env.call("update", b"a", lambda v, e, now: (DELETE, v)) is None
    # a new state that has already expired is a delete too
    assert env.call("update", b"b", lambda v, e, now: ((b"x", now - 1), "gone")) == "gone"
    assert env.call("get", b"b") is None
    assert env.call("size") == 0


def test_incr_and_decr(env):
    assert env.call("incr", b"n", 5) == 5
    assert env.call("incr", b"n", -7) == -2
    assert env.call("get", b"n") == b"-2"
    env.call("put", b"m", b"10")
    assert env.call("incr", b"m", 1) == 11
    assert env.call("get", b"m") == b"11"
    env.call("put", b"m", b"100")   # a plain write replaces the counter
    assert env.call("incr", b"m", 0) == 100


def test_incr_keeps_the_ttl(env):
    expiry = env.coord.clock() + 60_000
    env.call("put", b"n", b"1", expiry)
    assert env.call("incr", b"n", 1) == 2
    assert env.call("expiry", b"n") == expiry


def test_incr_refuses_a_non_integer(env):
    for i, value in enumerate([b"abc", b"1.5", b" 1", b"", b"99999999999999999999"]):
        key = b"n%d" % i
        env.call("put", key, value)
        with pytest.raises(NotAnInteger, match="^ERR value is not an integer or out of range$"):
            env.call("incr", key, 1)
        assert env.call("get", key) == value


def test_incr_overflow(env):
    for i, (start, delta) in enumerate([(LLONG_MAX, 1), (LLONG_MIN, -1), (-5, LLONG_MIN)]):
        key = b"n%d" % i
        env.call("put", key, b"%d" % start)
        with pytest.raises(CounterOverflow, match="^ERR increment or decrement would overflow$"):
            env.call("incr", key, delta)
        assert env.call("get", key) == b"%d" % start


# -- keys out of range -----------------------------------------------------------------------

def test_bad_key(env):
    for bad in BAD_KEYS:
        message = f"^key must be 1 to {MAX_KEY_BYTES} bytes long, got {len(bad)}$"
        for op, *args in [("get",), ("get_entry",), ("expiry",), ("put", b"v"), ("incr", 1),
                          ("update", lambda v, e, now: ((b"v", 0), None))]:
            with pytest.raises(BadKey, match=message):
                env.call(op, bad, *args)


def test_bad_key_among_many_changes_nothing(env):
    env.call("put", b"a", b"1")
    for bad in BAD_KEYS:
        for op, arg in (("put_many", [(b"b", b"2"), (bad, b"3")]), ("delete", [b"a", bad]),
                        ("exists", [b"a", bad]), ("get_many", [b"a", bad])):
            with pytest.raises(BadKey):
                env.call(op, arg)
    assert env.call("get_many", [b"a", b"b"]) == [b"1", None]


def test_longest_key(env):
    key = b"k" * MAX_KEY_BYTES
    env.call("put", key, b"v")
    assert env.call("get", key) == b"v"
    assert all_keys(env) == [key]


# -- counters meet the other writes ----------------------------------------------------------

def test_incr_after_delete_flush_and_expiry_starts_from_zero(env):
    env.call("incr", b"n", 5)
    env.call("delete", [b"n"])
    assert env.call("incr", b"n", 1) == 1
    env.call("flush")
    assert env.call("incr", b"n", 2) == 2
    env.call("update", b"n", lambda v, e, now: (DELETE, v))
    assert env.call("incr", b"n", 3) == 3
    expiry = env.coord.clock() + 30
    env.call("put", b"t", b"7", expiry)
    wait_past(env, expiry)
    assert env.call("incr", b"t", 1) == 1
    assert env.call("get_entry", b"t") == (b"1", 0)


def test_counter_reads_and_overwrites_as_a_string(env):
    env.call("incr", b"n", 41)
    assert env.call("get_entry", b"n") == (b"41", 0)
    assert env.call("update", b"n", lambda v, e, now: ((v + b"0", e), v)) == b"41"
    assert env.call("incr", b"n", 1) == 411
    env.call("put", b"n", b"text")
    assert env.call("get", b"n") == b"text"
    assert env.call("exists", [b"n"]) == 1
    assert env.call("delete", [b"n"]) == 1
    assert env.call("size") == 0


def test_values_are_bytes_as_given(env):
    values = [b"\x00", b"\r\n\x00\xff" * 1000, bytes(range(256)) * 4096]
    env.call("put_many", [(b"v%d" % i, v) for i, v in enumerate(values)])
    assert env.call("get_many", [b"v%d" % i for i in range(len(values))]) == values


def test_empty_put_many(env):
    assert env.call("put_many", []) is None
    assert env.call("size") == 0


def test_scan_with_a_large_count_ends_at_once(env):
    env.call("put_many", [(b"a", b"1"), (b"b", b"2")])
    cursor, page = env.call("scan", 0, 1000)
    assert cursor == 0 and sorted(page) == [b"a", b"b"]
