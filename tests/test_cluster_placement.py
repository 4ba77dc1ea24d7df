"""Where a real cluster keeps each key, and which write wins, checked on the nodes' own stores.

Every cluster here runs with W=3: an acknowledged write is then on every replica, so once the
nodes are stopped each store holds exactly what the acknowledgements promise (with W=2 the
third replica may still be receiving the write when the nodes stop, which is no bug).
"""
import random

import pytest


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
