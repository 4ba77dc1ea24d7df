"""A node that holds no replica of a key hands its causal writes and counter updates to one
that does: the dot or counter entry they add is a replica's, which has seen every earlier one
of its own (a non-replica coordinator only knows what a read quorum showed it). Real
processes, 5 nodes, N=3."""
from conftest import dyn_get, dyn_put, info_fields

from fastdyn.cluster.dvv import decode_context, node_id


def _outside_key(cluster, node):
    """A key whose 3 primaries do not include cluster node `node`, and those primaries."""
    ring = cluster.ring()
    for i in range(1000):
        key = b"fwd:%d" % i
        owners = ring.preference_list(key, 3)
        if cluster.names[node] not in owners:
            return key, owners
    raise AssertionError("no key outside the node's partitions")


def _actors(context: bytes) -> set:
    ctx = decode_context(context)
    return {i for i, _ in ctx.vv} | {i for i, _ in ctx.cloud} | (
        {ctx.mark[1]} if ctx.mark[0] else set())


def test_causal_writes_through_a_non_replica_carry_a_replicas_dots(start_cluster):
    cluster = start_cluster(5)
    key, owners = _outside_key(cluster, 0)
    with cluster.client(0) as outside:
        first = dyn_put(outside, key, b"", b"v1")
        second = dyn_put(outside, key, first, b"v2")
        concurrent = dyn_put(outside, key, first, b"v3")
        ids = {node_id(name): name for name in cluster.names}
        assert {ids[i] for i in _actors(second) | _actors(concurrent)} <= set(owners)
        for i in range(5):
            with cluster.client(i) as c:
                assert dyn_get(c, key, "R", 3)[1] == [b"v2", b"v3"]
        # a write refused by the replica is refused to the client with the replica's reason
        reply = outside.call("DYN.PUT", key, b"\x00not-a-context", b"x")
        assert reply[0] == "error" and b"context" in reply[1]
    assert int(info_fields(cluster.ports[0], "cluster")["forwarded"]) >= 3


def test_counters_through_a_non_replica_count_every_increment(start_cluster):
    cluster = start_cluster(5)
    key, owners = _outside_key(cluster, 0)
    with cluster.client(0) as outside:
        # pipelined: the replica runs the queued increments of the key as one batch
        assert outside.pipeline([("INCRBY", key, 3)] * 20) == [("int", 3 * n)
                                                               for n in range(1, 21)]
        assert outside.call("DECR", key) == ("int", 59)
        for i in range(5):
            with cluster.client(i) as c:
                assert c.call("GET", key) == ("bulk", b"59"), i
        # an increment the replica refuses answers the replica's error
        assert outside.call("SET", key, "abc") == ("simple", b"OK")
        assert outside.call("INCR", key) == ("error",
                                             b"ERR value is not an integer or out of range")
    assert int(info_fields(cluster.ports[0], "cluster")["forwarded"]) >= 2


def test_a_killed_replica_leaves_the_write_to_the_next_one(start_cluster):
    cluster = start_cluster(5)
    key, owners = _outside_key(cluster, 0)
    with cluster.client(0) as outside:
        context = dyn_put(outside, key, b"", b"before")
        cluster.kill(cluster.names.index(owners[0]))
        context = dyn_put(outside, key, context, b"after")
        assert outside.call("INCRBY", key + b":n", 5) == ("int", 5)
        for i in range(1, 5):
            if cluster.names[i] != owners[0]:
                with cluster.client(i) as c:
                    assert dyn_get(c, key)[1] == [b"after"], i
