"""Quorum parameters through the wire on a real 3-node cluster: DW, R and W overrides, and the
quorum error when too few replicas are reachable."""
import json
import os
import signal
import time

import pytest

from conftest import info_fields, wait_until
from resp_client import RawClient
from test_cluster_cli import consecutive_free_ports, fastdyn


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = consecutive_free_ports(3)
    root = tmp_path_factory.mktemp("quorum")
    r = fastdyn("cluster", "up", "--nodes", "3", "--base-port", str(base), "--data-dir",
                str(root), "--detach")
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 30
    for i in range(3):
        while True:
            with RawClient(base + i) as c:
                info = c.call("INFO", "cluster")[1].decode()
            if "cluster_members:3" in info:
                break
            assert time.monotonic() < deadline, info
            time.sleep(0.1)
    yield base, root
    fastdyn("cluster", "down", "--data-dir", str(root))


def test_durable_writes_and_quorum_overrides(cluster):
    base, _ = cluster
    with RawClient(base) as c:
        ctx = c.call("DYN.PUT", "dw", "", "v1", "W", "3", "DW", "3")
        assert ctx[0] == "bulk"
        with RawClient(base + 2) as other:
            kind, (read_ctx, values) = other.call("DYN.GET", "dw", "R", "3")
            assert read_ctx[0] == "bulk" and values == ("array", [("bulk", b"v1")])
        assert c.call("DYN.PUT", "dw", "", "v", "W", "4")[0] == "error"
        assert c.call("DYN.GET", "dw", "R", "0")[0] == "error"


def scan_all(client, count):
    cursor, seen = b"0", []
    while True:
        kind, (cur, keys) = client.call("SCAN", cursor, "COUNT", count)
        seen += [k for _, k in keys[1]]
        cursor = cur[1]
        if cursor == b"0":
            return seen


def test_scan_keys_and_dbsize_cover_the_cluster_once(cluster):
    base, root = cluster
    with RawClient(base) as c:
        c.call("FLUSHDB")
        for i in range(300):
            assert c.call("SET", f"list:{i}", "v") == ("simple", b"OK")
        c.call("DEL", "list:7")
    want = sorted(f"list:{i}".encode() for i in range(300) if i != 7)
    with RawClient(base + 1) as c:
        assert c.call("DBSIZE") == ("int", 299)
        assert sorted(k for _, k in c.call("KEYS", "list:*")[1]) == want
        for count in (1, 7, 1000):
            seen = scan_all(c, count)
            assert sorted(seen) == want and len(seen) == len(set(seen))
        # a member down: every key still has a replica that answers
        nodes = json.loads((root / "cluster.json").read_text())["nodes"]
        os.kill(nodes[2]["pid"], signal.SIGSTOP)
        try:
            seen = scan_all(c, 50)
            assert sorted(seen) == want
        finally:
            os.kill(nodes[2]["pid"], signal.SIGCONT)


def test_dbsize_and_info_of_a_large_cluster_come_from_counts_kept_in_the_background(cluster):
    """Past 16,384 keys a member counts its live keys in the background (replica.KeyCount):
    INFO shows the last count; DBSIZE has every member count afresh and adds up, per
    partition, the counts of its replicas."""
    base, _ = cluster
    keys = [b"big:%d" % i for i in range(20_000)]
    with RawClient(base) as c:
        c.call("FLUSHDB")
        for start in range(0, len(keys), 1000):
            replies = c.pipeline([("SET", k, b"v") for k in keys[start:start + 1000]])
            assert replies == [("simple", b"OK")] * 1000
        assert c.call("DEL", *keys[:500]) == ("int", 500)
        c.call("SET", "big:ttl", "v", "EX", 100)
    for port in (base, base + 1, base + 2):
        with RawClient(port) as c:
            # every member counts afresh for a DBSIZE: the writes above are all in it
            assert c.call("DBSIZE") == ("int", 19_501), port
            wait_until(lambda: info_fields(port, "keyspace").get("db0")
                       == "keys=19501,expires=1,avg_ttl=0", 20, f"INFO keyspace on {port}")
    with RawClient(base) as c:
        c.call("FLUSHDB")


def test_info_keyspace_counts_the_keys_a_node_holds_and_those_with_a_ttl(cluster):
    base, _ = cluster
    with RawClient(base) as c:
        c.call("FLUSHDB")
        for i in range(12):
            c.call("SET", f"ttl:{i}", i, *(("EX", 100) if i < 5 else ()))
        c.call("PERSIST", "ttl:0")
        c.call("PEXPIREAT", "ttl:5", 9223372036854775807)
        assert c.call("INCR", "ttl:5") == ("int", 6)   # a counter keeps its value's TTL
        c.call("SET", "gone", "v", "PX", 1)
        c.call("DEL", "ttl:11")
        time.sleep(0.05)
    # N = 3 on 3 nodes: every node holds every key once the writes have reached it
    for port in (base, base + 1, base + 2):
        wait_until(lambda: info_fields(port, "keyspace").get("db0")
                   == "keys=11,expires=5,avg_ttl=0", 10, f"INFO keyspace on {port}")


def test_too_few_replicas_answer_a_quorum_error_then_recover(cluster, tmp_path):
    base, root = cluster
    nodes = json.loads((root / "cluster.json").read_text())["nodes"]
    victims = nodes[1:]
    for n in victims:
        os.kill(n["pid"], signal.SIGSTOP)
    try:
        with RawClient(base) as c:
            deadline = time.monotonic() + 30
            while True:      # until the paused peers' requests time out and they are skipped
                reply = c.call("SET", "q", "1")
                if reply[0] == "error":
                    break
                assert time.monotonic() < deadline
            assert b"quorum not reached" in reply[1] and b"of 2 required" in reply[1]
            assert c.call("DYN.PUT", "q", "", "x", "W", "1")[0] == "bulk"   # W=1 still works
    finally:
        for n in victims:
            os.kill(n["pid"], signal.SIGCONT)
    with RawClient(base) as c:
        deadline = time.monotonic() + 30
        while c.call("SET", "q", "2") != ("simple", b"OK"):
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_a_cluster_under_sync_always_acknowledges_durable_and_plain_writes(start_cluster):
    """--sync always: every replica answers a write once its group commit has fsynced it. With
    W=3 each write waits for all three replicas' answers, so every acknowledged write is on all
    three stores after a kill -9 of the whole cluster."""
    cluster = start_cluster(3, "--sync", "always", "--w", "3")
    expected = {}
    for i in range(3):
        with cluster.client(i) as c:
            key = f"dw:{i}"
            reply = c.call("DYN.PUT", key, "", f"durable {i}", "DW", "3")
            assert reply[0] == "bulk", reply
            expected[key.encode()] = f"durable {i}".encode()
            batch = {f"set:{i}:{j}".encode(): f"plain {i} {j}".encode() for j in range(50)}
            replies = c.pipeline([("SET", k, v) for k, v in batch.items()])
            assert replies == [("simple", b"OK")] * len(batch)
            expected.update(batch)
    cluster.kill_all()
    assert cluster.misplaced(expected) == {}
