"""Where a real cluster keeps each key and which write wins, checked on the nodes' own stores;
multi-key and whole-keyspace commands across nodes; DYN.RING and DYN.MEMBERS.

The tests that read the stores run with W=3: an acknowledged write is then on every replica,
so once the nodes are stopped each store holds exactly what the acknowledgements promise
(with W=2 the third replica may still be receiving the write when the nodes stop, which is
no bug).
"""
import random

import pytest

from cluster_bugs import LOCAL_KEYSPACE, cluster_bug
from conftest import wait_until


def _write_through_random_nodes(cluster, items, rng):
    """SET each (key, value) through a random node, pipelined per node; every reply OK."""
    by_node = {}
    for key, value in items:
        by_node.setdefault(cluster.random_node(rng), []).append(("SET", key, value))
    for i, commands in by_node.items():
        with cluster.client(i) as c:
            replies = c.pipeline(commands)
        bad = [(cmd, r) for cmd, r in zip(commands, replies) if r != ("simple", b"OK")]
        assert not bad, f"node {i}: {bad[:5]}"


@pytest.mark.parametrize("k", [3, 5])
def test_every_key_lives_on_exactly_its_preference_list(start_cluster, k):
    cluster = start_cluster(k, "--w", "3")
    rng = random.Random(k)
    items = [(b"key:%d" % i, b"value-%d" % i) for i in range(500)]
    _write_through_random_nodes(cluster, items, rng)
    assert cluster.stop_all() == [0] * k
    wrong = cluster.misplaced(dict(items))
    assert not wrong, f"{len(wrong)} keys misplaced, e.g. {list(wrong.items())[:3]}"
    with cluster.stores() as stores:
        extra = {name: sorted(set(store.keys()) - {key for key, _ in items})
                 for name, store in stores.items()}
    assert all(not keys for keys in extra.values()), f"keys nobody wrote: {extra}"


def test_second_write_through_another_node_wins_everywhere(start_cluster):
    """A client writes a key via node A, gets the acknowledgement, then writes it via node B:
    B's value wins on every replica and on every read (hybrid logical clocks, VERSIONING.md)."""
    cluster = start_cluster(3, "--w", "3")
    rng = random.Random(7)
    clients = [cluster.client(i) for i in range(3)]
    last = {}
    try:
        for round_ in range(60):
            key = b"lww:%d" % (round_ % 6)
            a, b = rng.sample(range(3), 2)
            assert clients[a].call("SET", key, b"first-%d" % round_) == ("simple", b"OK")
            assert clients[b].call("SET", key, b"second-%d" % round_) == ("simple", b"OK")
            last[key] = b"second-%d" % round_
            for c in clients:
                assert c.call("GET", key) == ("bulk", last[key]), (round_, a, b)
    finally:
        for c in clients:
            c.close()
    assert cluster.stop_all() == [0, 0, 0]
    assert cluster.misplaced(last) == {}


def test_multi_key_commands_span_every_node(start_cluster):
    """On five nodes no node holds every key: MSET/MGET/EXISTS/DEL with many keys fan out to
    the keys' own replicas, through any node."""
    cluster = start_cluster(5)
    keys = [b"m:%d" % i for i in range(100)]
    pairs = [x for i, key in enumerate(keys) for x in (key, b"v%d" % i)]
    assert cluster.call(0, "MSET", *pairs) == ("simple", b"OK")
    for i in range(5):
        reply = cluster.call(i, "MGET", *keys, b"m:none")
        assert reply == ("array", [("bulk", b"v%d" % n) for n in range(100)] + [("nullbulk",)])
        assert cluster.call(i, "EXISTS", *keys[:50], b"m:none") == ("int", 50)
    assert cluster.call(3, "DEL", *keys[:30], b"m:none") == ("int", 30)
    assert cluster.call(1, "EXISTS", *keys) == ("int", 70)


@cluster_bug(LOCAL_KEYSPACE)
def test_dbsize_keys_and_scan_cover_the_whole_cluster(start_cluster):
    from resp_client import scan_all

    cluster = start_cluster(5)
    keys = {b"s:%d" % i for i in range(200)}
    with cluster.client(0) as c:
        assert c.pipeline([("SET", key, b"v") for key in keys]) == [("simple", b"OK")] * 200
    for i in range(5):
        with cluster.client(i) as c:
            assert c.call("DBSIZE") == ("int", 200), i
            assert {item[1] for item in c.call("KEYS", "*")[1]} == keys, i
            assert scan_all(c, "COUNT", 7) == ("keyset", frozenset(keys)), i


def test_dyn_ring_and_dyn_members_describe_the_ring(start_cluster):
    cluster = start_cluster(3)
    ring = cluster.ring()
    reply = cluster.call(1, "DYN.RING")
    assert reply[0] == "array" and len(reply[1]) == 256
    for _, (partition, owners) in reply[1]:
        assert [o[1].decode() for o in owners[1]] == ring.preference_list(partition[1], 3)
    members = cluster.call(2, "DYN.MEMBERS")
    fields = [{item[0][1]: item[1] for item in zip(m[1][0::2], m[1][1::2])} for m in members[1]]
    assert sorted((f[b"name"][1].decode(), f[b"address"][1].decode(), f[b"status"][1])
                  for f in fields) == sorted(
        (name, address, b"up") for name, address in zip(cluster.names, cluster.peer_addresses))
    assert sum(f[b"partitions"][1] for f in fields) == 256


def test_an_expiry_travels_with_its_value(start_cluster):
    """SET PX and DYN.PUT TTL through one node: every node reports the expiry, and once it
    passes no node and no store shows the value."""
    cluster = start_cluster(3, "--w", "3")
    assert cluster.call(0, "SET", b"t", b"v", "PX", 800) == ("simple", b"OK")
    assert cluster.call(1, "DYN.PUT", b"d", b"", b"v", "TTL", 1)[0] == "bulk"
    for i in range(3):
        assert 0 < cluster.call(i, "PTTL", b"t")[1] <= 800, i
        assert 0 < cluster.call(i, "PTTL", b"d")[1] <= 1000, i
    for i in range(3):
        wait_until(lambda: cluster.call(i, "MGET", b"t", b"d") == ("array", [("nullbulk",)] * 2),
                   10, f"node {i} still shows an expired value")
        assert cluster.call(i, "EXISTS", b"t", b"d") == ("int", 0)
    assert cluster.stop_all() == [0, 0, 0]
    stored = cluster.stored_values([b"t", b"d"])
    assert all(value is None for per_node in stored.values() for value in per_node.values()), \
        stored
