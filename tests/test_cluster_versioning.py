"""VERSIONING.md's invariants through the wire of real clusters: DYN.GET/DYN.PUT/DYN.DEL
contexts and siblings, the sibling limit, partitions made with DYN.FAULT and healed, lossy
links."""
import random
import threading


from conftest import cluster_view, dyn_get, dyn_put, info_fields, wait_until

OK = ("simple", b"OK")



class Writer:
    """One client of the hot key: each DYN.PUT goes through a random node with the context its
    own previous put returned; right after it, a read through a random node must hold the
    value just written (R + W > N), and the writer notes how many siblings it saw."""

    def __init__(self, cluster, key, me, rng):
        self.key, self.me, self.rng = key, me, rng
        self.clients = [cluster.client(i) for i in range(len(cluster))]
        self.context = b""
        self.puts = 0
        self.last = None
        self.max_siblings = 0
        self.missing = []

    def put(self):
        value = b"client%d-%d" % (self.me, self.puts)
        self.context = dyn_put(self.rng.choice(self.clients), self.key, self.context, value)
        self.puts += 1
        self.last = value
        _, values = dyn_get(self.rng.choice(self.clients), self.key)
        self.max_siblings = max(self.max_siblings, len(values))
        if value not in values:
            self.missing.append((value, values))

    def close(self):
        for c in self.clients:
            c.close()


def _check_writers(cluster, key, writers):
    """Invariants 1 and 3: no acknowledged put went missing, never more siblings than
    writers, and the key ends with exactly every writer's last value, read through any node."""
    assert not [w.missing for w in writers if w.missing], \
        [(w.me, w.missing[:3]) for w in writers if w.missing]
    assert max(w.max_siblings for w in writers) <= len(writers)
    for i in range(len(cluster)):
        with cluster.client(i) as c:
            _, values = dyn_get(c, key, "R", 3)
        assert values == sorted(w.last for w in writers), i


def test_seven_writers_taking_turns_never_make_more_than_seven_siblings(start_cluster):
    """Seven clients, each writing one key with the context of its own previous DYN.PUT, in
    random order one put at a time (Riak 1.4 reached 21 siblings here, Riak 2.0 seven)."""
    cluster = start_cluster(3)
    rng = random.Random(1)
    writers = [Writer(cluster, b"hot", me, random.Random(me)) for me in range(7)]
    try:
        for _ in range(7 * 25):
            rng.choice(writers).put()
    finally:
        for w in writers:
            w.close()
    _check_writers(cluster, b"hot", writers)


def test_seven_concurrent_writers_never_make_more_than_seven_siblings(start_cluster):
    """The same seven writers, each in its own thread, all at once."""
    cluster = start_cluster(3)
    writers = [Writer(cluster, b"hot", me, random.Random(me)) for me in range(7)]

    def run(writer):
        try:
            for _ in range(30):
                writer.put()
        finally:
            writer.close()

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    _check_writers(cluster, b"hot", writers)


def test_blind_puts_pile_up_as_siblings_up_to_the_limit(start_cluster):
    """Invariant 2 with one client: each DYN.PUT with an empty context adds a sibling, through
    whichever node; the 101st is refused (limit 100) and the 25th raised a warning."""
    cluster = start_cluster(3)
    rng = random.Random(5)
    clients = [cluster.client(i) for i in range(3)]
    try:
        for n in range(100):
            dyn_put(rng.choice(clients), b"pile", b"", b"v%d" % n)
        assert dyn_get(clients[0], b"pile", "R", 3)[1] == sorted(b"v%d" % n for n in range(100))
        reply = clients[1].call("DYN.PUT", b"pile", b"", b"one-too-many")
        assert reply[0] == "error" and b"siblings (limit 100)" in reply[1], reply
        context, values = dyn_get(clients[2], b"pile")
        assert len(values) == 100
        dyn_put(clients[2], b"pile", context, b"merged")
        assert dyn_get(clients[0], b"pile", "R", 3)[1] == [b"merged"]
    finally:
        for c in clients:
            c.close()
    warnings = sum(int(cluster_view(port)["fields"]["sibling_warnings"])
                   for port in cluster.ports)
    assert warnings == 100 - 25 + 1


def test_pipelined_blind_puts_are_all_siblings(start_cluster):
    cluster = start_cluster(3)
    with cluster.client(0) as c:
        replies = c.pipeline([("DYN.PUT", b"k", b"", b"v%d" % n) for n in range(20)])
        assert all(reply[0] == "bulk" for reply in replies), replies
        assert dyn_get(c, b"k", "R", 3)[1] == sorted(b"v%d" % n for n in range(20))


def test_concurrent_blind_puts_are_siblings_and_a_delete_with_the_read_context_removes_them(
        start_cluster):
    cluster = start_cluster(3)
    c0, c1, c2 = (cluster.client(i) for i in range(3))
    try:
        ctx_a = dyn_put(c0, b"k", b"", b"a")
        dyn_put(c1, b"k", b"", b"b")                      # empty context: concurrent with a
        assert dyn_get(c2, b"k")[1] == [b"a", b"b"]
        assert c2.call("GET", b"k")[0] == "bulk"          # one of them, by (timestamp, node)
        dyn_put(c2, b"k", ctx_a, b"a2")                   # replaces a only
        context, values = dyn_get(c0, b"k", "R", 3)
        assert values == [b"a2", b"b"]
        dyn_put(c1, b"k", b"", b"c")                      # concurrent with the delete below
        assert c1.call("DYN.DEL", b"k", context) == OK
        for c in (c0, c1, c2):
            assert dyn_get(c, b"k", "R", 3)[1] == [b"c"]  # the delete did not cover c
        context, _ = dyn_get(c2, b"k")
        assert c0.call("DYN.DEL", b"k", context) == OK
        for c in (c0, c1, c2):
            assert dyn_get(c, b"k", "R", 3)[1] == []
            assert c.call("GET", b"k") == ("nullbulk",)
            assert c.call("EXISTS", b"k") == ("int", 0)
    finally:
        for c in (c0, c1, c2):
            c.close()


def _fault(cluster, i, *args):
    assert cluster.call(i, "DYN.FAULT", *args) == OK, args


def test_partition_then_heal_keeps_every_acknowledged_write(start_cluster):
    """Nodes A and B stop talking to each other (both directions) while C reaches both; writes
    on both sides, then heal: both sides' causal writes are siblings on every node, every LWW
    key holds the same winner on every replica — the later write — and the replicas' objects
    are byte-identical."""
    # a deadline a loaded machine does not miss: only the partitioned peer may time out,
    # or the hint count below would include hints for a slow healthy node
    cluster = start_cluster(3, "--fault-injection", "yes", "--peer-timeout-ms", "1000")
    a, b = 0, 1
    ca, cb = cluster.client(a), cluster.client(b)
    try:
        base = dyn_put(ca, b"causal", b"", b"base")
        dyn_put(ca, b"causal", base, b"base2")
        _fault(cluster, a, "PARTITION", cluster.peer_addresses[b])
        _fault(cluster, b, "PARTITION", cluster.peer_addresses[a])
        # both sides read before either writes: neither write has seen the other
        ctx_a, seen_a = dyn_get(ca, b"causal")
        ctx_b, seen_b = dyn_get(cb, b"causal")
        assert seen_a == seen_b == [b"base2"]
        dyn_put(ca, b"causal", ctx_a, b"from-a")
        dyn_put(cb, b"causal", ctx_b, b"from-b")
        side = {}
        for n in range(40):
            side[b"only-a:%d" % n] = dyn_put(ca, b"only-a:%d" % n, b"", b"a%d" % n)
            side[b"only-b:%d" % n] = dyn_put(cb, b"only-b:%d" % n, b"", b"b%d" % n)
        lww = {}
        for n in range(40):
            first, second = (ca, cb) if n % 2 else (cb, ca)
            assert first.call("SET", b"lww:%d" % n, b"first-%d" % n) == OK
            assert second.call("SET", b"lww:%d" % n, b"second-%d" % n) == OK
            lww[b"lww:%d" % n] = b"second-%d" % n
        # every write's request to the other side times out and becomes a hint (one per
        # key); healing earlier would leave requests in flight whose hints come later
        written = 1 + len(side) // 2 + len(lww)
        wait_until(lambda: cluster.hints_pending(a) == cluster.hints_pending(b) == written, 30,
                   f"not one hint per key written ({written}) on each side: "
                   f"{cluster.hints_pending(a)}, {cluster.hints_pending(b)}")
    finally:
        ca.close()
        cb.close()
    _fault(cluster, a, "HEAL")
    _fault(cluster, b, "HEAL")
    cluster.wait_joined()      # R=3 below needs every node to reach every other again
    cluster.wait_hints_delivered()
    for i in range(3):
        with cluster.client(i) as c:
            assert dyn_get(c, b"causal", "R", 3)[1] == [b"from-a", b"from-b"], i
            for key in side:
                expected = key.split(b":")[0][-1:] + key.split(b":")[1]
                assert dyn_get(c, key, "R", 3)[1] == [expected], (i, key)
    assert cluster.stop_all() == [0, 0, 0]
    assert cluster.misplaced(lww) == {}
    # invariant 5: replicas that have exchanged everything hold byte-identical objects
    with cluster.stores() as stores:
        for key in [b"causal", *side, *lww]:
            encodings = {name: store.get(key) for name, store in stores.items()}
            assert len(set(encodings.values())) == 1, (key, encodings)


def test_lossy_links_lose_no_acknowledged_causal_write(start_cluster):
    """Every link drops a tenth of its frames: a put may fail (quorum not reached), but once
    the links heal, a key whose last put was acknowledged reads that value, and a key never
    reads a value nobody wrote."""
    cluster = start_cluster(3, "--fault-injection", "yes", "--peer-timeout-ms", "200")
    for i in range(3):
        for peer in range(3):
            if peer != i:
                _fault(cluster, i, "DROP", cluster.peer_addresses[peer], "0.1")
    attempts = {}
    rng = random.Random(3)
    clients = [cluster.client(i) for i in range(3)]
    try:
        for n in range(90):
            key = b"lossy:%d" % (n % 15)
            c = rng.choice(clients)
            reply = c.call("DYN.GET", key)
            if reply[0] != "array":
                assert reply[1].startswith(b"ERR quorum not reached"), reply
                continue
            reply = c.call("DYN.PUT", key, reply[1][0][1], b"v%d" % n)
            if reply[0] != "bulk":
                assert reply[1].startswith(b"ERR quorum not reached"), reply
            attempts.setdefault(key, []).append((b"v%d" % n, reply[0] == "bulk"))
    finally:
        for c in clients:
            c.close()
    for i in range(3):
        _fault(cluster, i, "HEAL")
    cluster.wait_joined()
    cluster.wait_hints_delivered()
    decided = 0
    for key, tried in attempts.items():
        with cluster.client(rng.randrange(3)) as c:
            _, now = dyn_get(c, key, "R", 3)
        assert set(now) <= {value for value, _ in tried}, (key, tried, now)
        last, acknowledged = tried[-1]
        if acknowledged:
            decided += 1
            assert last in now, (key, tried, now)
    assert decided


def _read_context(client, key):
    """(context,) of a DYN.GET that reached its quorum, None if it did not."""
    reply = client.call("DYN.GET", key)
    if reply[0] == "error":
        assert reply[1].startswith(b"ERR quorum not reached"), reply
        return None
    return (reply[1][0][1],)


def test_split_of_five_nodes_heals_to_the_preference_lists(start_cluster):
    """Five nodes split into {0, 1} and {2, 3, 4}: with sloppy quorum both sides take every
    write (fallbacks keep hints for the primaries they cannot reach). After the heal, every
    key lives on exactly its three preference-list nodes, concurrent DYN.PUTs from the two
    sides are siblings, and each LWW key holds the later write on all its replicas."""
    cluster = start_cluster(5, "--fault-injection", "yes", "--peer-timeout-ms", "1000")  # as above
    small, large = [0, 1], [2, 3, 4]
    for i in small:
        for j in large:
            _fault(cluster, i, "PARTITION", cluster.peer_addresses[j])
            _fault(cluster, j, "PARTITION", cluster.peer_addresses[i])
    # every node learns that the other side is gone (its requests or gossip time out, or
    # the failure detector hears no heartbeat): a causal write through a node that holds no
    # replica of its key is then coordinated by a replica on the same side
    for side, other in ((small, large), (large, small)):
        gone = ",".join(sorted(cluster.names[j] for j in other))
        for i in side:
            wait_until(lambda: info_fields(cluster.ports[i], "cluster")["cluster_unreachable"]
                       == gone, 30, f"node {i} still reaches the other side")
    cs, cl = cluster.client(0), cluster.client(3)
    try:
        # until then a read may miss its quorum, and the client reads again
        for i in range(5):
            with cluster.client(i) as c:
                for n in range(20):
                    wait_until(lambda: _read_context(c, b"causal:%d" % n), 30,
                               f"no read through node {i} succeeds")
        contexts = {}
        for n in range(20):
            key = b"causal:%d" % n
            contexts[key] = tuple(wait_until(lambda: _read_context(c, key), 30,
                                             f"no read of {key!r} succeeds")
                                  for c in (cs, cl))
        for key, (ctx_s, ctx_l) in contexts.items():
            dyn_put(cs, key, ctx_s[0], b"small")
            dyn_put(cl, key, ctx_l[0], b"large")
        lww = {}
        for n in range(40):
            key = b"lww:%d" % n
            first, second = (cs, cl) if n % 2 else (cl, cs)
            assert first.call("SET", key, b"first") == OK
            assert second.call("SET", key, b"second-%d" % n) == OK
            lww[key] = b"second-%d" % n
    finally:
        cs.close()
        cl.close()
    # each side keeps one hint per (key, primary on the other side), once every request to
    # the other side has timed out
    ring = cluster.ring()
    names = [set(cluster.names[i] for i in side) for side in (small, large)]
    written = list(contexts) + list(lww)
    expected = [sum(len(set(ring.preference_list(key, 3)) - mine) for key in written)
                for mine in names]
    wait_until(lambda: [sum(cluster.hints_pending(i) for i in side)
                        for side in (small, large)] == expected, 30,
               f"hints per side are not {expected}")
    for i in range(5):
        _fault(cluster, i, "HEAL")
    cluster.wait_joined()
    cluster.wait_hints_delivered()
    for i in range(5):
        with cluster.client(i) as c:
            for key in contexts:
                assert dyn_get(c, key, "R", 3)[1] == [b"large", b"small"], (i, key)
    assert cluster.stop_all() == [0] * 5
    assert cluster.misplaced(lww) == {}


def test_a_later_write_wins_through_a_node_whose_clock_is_behind(start_cluster):
    """VERSIONING.md: a client writes a key, gets the acknowledgement, then writes it again
    through another node: the second value wins on every replica. Here the second node's wall
    clock is 10 s behind and the first write has not reached it (its link from the first node
    is cut), so only the re-stamp can make the second write win."""
    cluster = start_cluster(3, "--fault-injection", "yes", "--peer-timeout-ms", "1000")
    a, b = 0, 1
    assert cluster.call(b, "DYN.FAULT", "CLOCK", "-10000") == ("simple", b"OK")
    assert cluster.call(a, "DYN.FAULT", "PARTITION", cluster.peer_addresses[b]) == \
        ("simple", b"OK")
    assert cluster.call(a, "SET", "skew", "first") == ("simple", b"OK")
    assert cluster.call(b, "SET", "skew", "second") == ("simple", b"OK")
    assert cluster.call(a, "DYN.FAULT", "HEAL") == ("simple", b"OK")
    for i in range(3):
        assert cluster.call(i, "GET", "skew") == ("bulk", b"second")
    info = cluster.call(b, "INFO", "cluster")[1].decode()
    assert "lww_restamps:1" in info
    cluster.wait_hints_delivered()
    assert cluster.stop_all() == [0, 0, 0]
    assert set(cluster.stored_values([b"skew"])[b"skew"].values()) == {b"second"}
