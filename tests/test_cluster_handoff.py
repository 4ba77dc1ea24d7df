"""Growing and shrinking a loaded cluster with explicit joins and leaves, under writes: no
acknowledged write is lost, data ends up where the ring says, the leaving node exits by
itself."""
import os
import shutil
import subprocess
import sys
import threading
import time

from conftest import (HOST, PEER_OFFSET, Cluster, ServerProcess, dyn_get, fastdyn_argv,
                      free_port, info_fields, wait_until)
from fastdyn.ring import Ring
from resp_client import RawClient, encode_command

FAST = ("--gossip-interval-ms", "200", "--handoff-settle-ms", "600", "--peer-timeout-ms", "2000")
LOADED = 20_000


def pipeline_set(client, items):
    out = b"".join(encode_command("SET", k, v) for k, v in items)
    client.sock.sendall(out)
    return [client.read_reply() for _ in items]


def start_alone(root, name, *flags):
    """A node that is a cluster of one (its own peer address as seed), ready to join."""
    taken = True
    while taken:
        port = free_port()
        taken = port + PEER_OFFSET > 65535
    data_dir = os.path.join(root, name)
    os.makedirs(data_dir)
    node = ServerProcess(fastdyn_argv(port, data_dir, "--seeds", f"{HOST}:{port + PEER_OFFSET}",
                                      *FAST, *flags), port, data_dir,
                        os.path.join(root, name + ".log"))
    return node.start()


class Writer(threading.Thread):
    """Plain SETs through one node until stopped; remembers the last acknowledged value of
    every key it wrote (an error leaves the key's earlier acknowledged value in place, and
    marks the key undecided)."""

    def __init__(self, cluster, i):
        super().__init__(daemon=True)
        self.client = cluster.client(i, timeout=30)
        self.stop = threading.Event()
        self.acked = {}
        self.undecided = set()
        self.errors = []

    def run(self):
        n = 0
        while not self.stop.is_set():
            items = [(b"w:%d" % ((n + j) % 3000), b"v%d" % (n + j)) for j in range(50)]
            n += 50
            for (key, value), reply in zip(items, pipeline_set(self.client, items)):
                if reply == ("simple", b"OK"):
                    self.acked[key] = value
                    self.undecided.discard(key)
                else:
                    self.errors.append(reply)
                    self.undecided.add(key)
            time.sleep(0.01)


def wait_settled(ports, members, timeout=120):
    for port in ports:
        wait_until(lambda: (lambda f: int(f["cluster_members"]) == members
                            and f["handoff_change"] == ""
                            and f["handoff_partitions_to_give"] == "0"
                            and f["handoff_drop_pending"] == "0")(
            info_fields(port, "cluster")), timeout, f"node on {port} has not settled")


def test_grow_to_five_and_shrink_under_writes(tmp_path):
    cluster = Cluster(tmp_path, 3, *FAST).start()
    extra = []
    try:
        with cluster.client(0) as c:
            for start in range(0, LOADED, 1000):
                replies = pipeline_set(c, [(b"k:%d" % i, b"value-%d" % i)
                                           for i in range(start, start + 1000)])
                assert set(replies) == {("simple", b"OK")}
        writer = Writer(cluster, 0)
        writer.start()

        # a 4th node joins through DYN.JOIN, a 5th through `fastdyn cluster join`
        fourth = start_alone(tmp_path, "node3")
        extra.append(fourth)
        with RawClient(fourth.port, timeout=30) as c:
            assert c.call("DYN.JOIN", cluster.peer_addresses[0]) == ("simple", b"OK")
            assert c.call("DYN.JOIN", cluster.peer_addresses[0])[0] == "error"
        wait_settled(cluster.ports + [fourth.port], 4)
        fifth = start_alone(tmp_path, "node4")
        extra.append(fifth)
        run = subprocess.run([sys.executable, "-m", "fastdyn", "cluster", "join",
                              f"{HOST}:{fifth.port}", cluster.peer_addresses[1]],
                             capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        ports = cluster.ports + [fourth.port, fifth.port]
        wait_settled(ports, 5)
        names = cluster.names + [f"{HOST}:{fourth.port}", f"{HOST}:{fifth.port}"]
        assert len({repr(info_fields(p, "cluster")["fastdyn_members"]) for p in ports}) == 1

        # node 1 leaves through `fastdyn cluster leave`, and exits by itself
        run = subprocess.run([sys.executable, "-m", "fastdyn", "cluster", "leave",
                              cluster.names[1]], capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        assert cluster.nodes[1].proc.wait(60) == 0
        ports.remove(cluster.ports[1])
        names.remove(cluster.names[1])
        wait_settled(ports, 4)
        writer.stop.set()
        writer.join(30)
        assert not writer.errors, writer.errors[:3]
        assert len(writer.acked) == 3000

        # every acknowledged write reads back with R=3 through every node
        expected = {b"k:%d" % i: b"value-%d" % i for i in range(LOADED)}
        expected.update(writer.acked)
        keys = sorted(expected)
        for port in ports:
            with RawClient(port, timeout=60) as c:
                for start in range(0, len(keys), 1000):
                    chunk = keys[start:start + 1000]
                    c.sock.sendall(b"".join(encode_command("DYN.GET", k, "R", 3)
                                            for k in chunk))
                    for key in chunk:
                        reply = c.read_reply()
                        assert reply[0] == "array", (port, key, reply)
                        values = [item[1] for item in reply[1][1][1]]
                        assert values == [expected[key]], (port, key, values)
        ring = Ring(sorted(names))
        for name in names:
            assert len(ring.partitions_of(name, 1)) in (256 // 4, 256 // 4 + 1)
    finally:
        for node in extra:
            node.kill()
        cluster.kill_all()
    # no node holds data for partitions it does not replicate, and each holds all of its own
    import fastdyn

    placed = {}
    for name, data_dir in zip(names, [n.data_dir for i, n in enumerate(cluster.nodes) if i != 1]
                              + [fourth.data_dir, fifth.data_dir]):
        with fastdyn.open(data_dir) as store:
            placed[name] = set(store.keys())
    for name, keys in placed.items():
        mine = set(ring.partitions_of(name, 3))
        assert all(ring.partition(k) in mine for k in keys), name
        wanted = {k for k in expected if ring.partition(k) in mine}
        assert wanted <= keys, (name, len(wanted - keys))
    for node in cluster.nodes[:1] + cluster.nodes[2:] + extra:
        assert "Traceback" not in node.log()


def test_join_and_leave_refuse_what_cannot_be_done(tmp_path, start_fastdyn):
    single = start_fastdyn()
    with RawClient(single.port) as c:
        reply = c.call("DYN.JOIN", "127.0.0.1:1")
        assert reply[0] == "error" and b"needs a cluster member" in reply[1]
    cluster = Cluster(tmp_path, 2, *FAST).start()
    try:
        assert cluster.call(0, "DYN.JOIN", cluster.peer_addresses[1])[1].startswith(
            b"ERR this node is already a member of a cluster of 2")
        assert cluster.call(0, "DYN.LEAVE", "nobody")[1] == b"ERR nobody is not a member"
        assert cluster.call(0, "DYN.LEAVE", "a", "b")[0] == "error"
        assert cluster.call(0, "DYN.JOIN", "not-an-address")[0] == "error"
    finally:
        cluster.kill_all()


def test_a_handoff_resumes_after_the_giver_and_the_joiner_are_killed(tmp_path):
    throttled = FAST + ("--handoff-bytes-per-s", "200000")
    cluster = Cluster(tmp_path, 3, *throttled).start()
    joiner = None
    try:
        with cluster.client(0) as c:
            for start in range(0, 6000, 1000):
                pipeline_set(c, [(b"k:%d" % i, b"v" * 100) for i in range(start, start + 1000)])
        joiner = start_alone(tmp_path, "node3", *("--handoff-bytes-per-s", "200000"))
        with RawClient(joiner.port) as c:
            assert c.call("DYN.JOIN", cluster.peer_addresses[0]) == ("simple", b"OK")
        giving = wait_until(lambda: [i for i in range(3) if int(info_fields(
            cluster.ports[i], "cluster")["handoff_active"])], 30, "no handoff starts")
        cluster.kill(giving[0])                 # a giver dies mid-stream
        joiner.kill()                           # and so does the joiner
        assert "joining" in open(os.path.join(joiner.data_dir, "members.json")).read()
        cluster.nodes[giving[0]].start()
        joiner.start()
        ports = cluster.ports + [joiner.port]
        wait_settled(ports, 4)
        ring = Ring(sorted(cluster.names + [f"{HOST}:{joiner.port}"]))
        with RawClient(joiner.port, timeout=30) as c:
            for i in range(0, 6000, 5):
                assert dyn_get(c, b"k:%d" % i, "R", 3)[1] == [b"v" * 100], i
    finally:
        if joiner is not None:
            joiner.kill()
        cluster.kill_all()
    assert_holds_its_partitions(joiner, ring, 6000)


def test_a_join_completes_while_a_giver_is_dead(tmp_path):
    """The partitions a dead giver owes come from another replica of each (fallback giver)."""
    cluster = Cluster(tmp_path, 3, *FAST).start()
    joiner = None
    try:
        with cluster.client(0) as c:
            pipeline_set(c, [(b"k:%d" % i, b"v%d" % i) for i in range(3000)])
        cluster.kill(1)
        wait_until(lambda: all(cluster.names[1] in info_fields(cluster.ports[i], "cluster")[
            "cluster_unreachable"] for i in (0, 2)), 30, "the dead node is not noticed")
        joiner = start_alone(tmp_path, "node3")
        with RawClient(joiner.port) as c:
            assert c.call("DYN.JOIN", cluster.peer_addresses[0]) == ("simple", b"OK")
        wait_settled([cluster.ports[0], cluster.ports[2], joiner.port], 4)
        ring = Ring(sorted(cluster.names + [f"{HOST}:{joiner.port}"]))
        mine = set(ring.partitions_of(f"{HOST}:{joiner.port}", 3))
        assert any(cluster.names[1] in ring.preference_list(p, 3)[:3] for p in mine)
        with RawClient(joiner.port, timeout=30) as c:
            for i in range(0, 3000, 7):
                assert c.call("GET", b"k:%d" % i) == ("bulk", b"v%d" % i), i
    finally:
        if joiner is not None:
            joiner.kill()
        cluster.kill_all()
    assert_holds_its_partitions(joiner, ring, 3000)


def assert_holds_its_partitions(joiner, ring, count):
    """The stopped joiner's store holds every key k:0 .. k:count-1 of the partitions the
    ring gives it."""
    import fastdyn

    with fastdyn.open(joiner.data_dir) as store:
        held = set(store.keys())
    mine = set(ring.partitions_of(f"{HOST}:{joiner.port}", 3))
    assert {b"k:%d" % i for i in range(count) if ring.partition(b"k:%d" % i) in mine} <= held


def test_a_dead_member_is_forced_out_and_its_name_joins_again(tmp_path):
    cluster = Cluster(tmp_path, 4, *FAST).start()
    try:
        with cluster.client(0) as c:
            pipeline_set(c, [(b"k:%d" % i, b"v%d" % i) for i in range(2000)])
        cluster.kill(3)
        wait_until(lambda: cluster.names[3] in info_fields(cluster.ports[0], "cluster")[
            "cluster_unreachable"], 30, "the dead node is not noticed")
        reply = cluster.call(0, "DYN.LEAVE", cluster.names[3])
        assert reply[0] == "error" and b"FORCE" in reply[1]       # a down node cannot hand off
        assert cluster.call(0, "DYN.LEAVE", cluster.names[3], "FORCE") == ("simple", b"OK")
        wait_settled(cluster.ports[:3], 3)
        with cluster.client(1) as c:
            for i in range(0, 2000, 3):
                assert c.call("GET", b"k:%d" % i) == ("bulk", b"v%d" % i)
        # the same name, an empty disk: it joins again through DYN.JOIN
        node = cluster.nodes[3]
        node.argv[node.argv.index("--seeds") + 1] = f"{HOST}:{node.port + PEER_OFFSET}"
        shutil.rmtree(node.data_dir)
        os.makedirs(node.data_dir)
        node.start()
        with RawClient(node.port) as c:
            assert c.call("DYN.JOIN", cluster.peer_addresses[0]) == ("simple", b"OK")
        wait_settled(cluster.ports, 4)
        with RawClient(node.port, timeout=30) as c:
            for i in range(0, 2000, 3):
                assert dyn_get(c, b"k:%d" % i, "R", 3)[1] == [b"v%d" % i], i
    finally:
        cluster.kill_all()


def test_a_new_node_given_the_cluster_as_seeds_joins_with_a_handoff(tmp_path):
    cluster = Cluster(tmp_path, 3, *FAST).start()
    node = None
    try:
        with cluster.client(0) as c:
            pipeline_set(c, [(b"k:%d" % i, b"v%d" % i) for i in range(3000)])
        port = free_port()
        while port + PEER_OFFSET > 65535 or port in cluster.ports:
            port = free_port()
        data_dir = os.path.join(tmp_path, "new")
        os.makedirs(data_dir)
        node = ServerProcess(fastdyn_argv(port, data_dir, "--seeds",
                                          ",".join(cluster.peer_addresses), *FAST),
                             port, data_dir, os.path.join(tmp_path, "new.log")).start()
        wait_settled(cluster.ports + [port], 4)
        assert "every receiver has its partitions: valid" in node.log()   # it joined
        name = f"{HOST}:{port}"
        ring = Ring(sorted(cluster.names + [name]))
    finally:
        if node is not None:
            node.kill()
        cluster.kill_all()
    import fastdyn

    with fastdyn.open(data_dir) as store:
        held = set(store.keys())
    mine = set(ring.partitions_of(name, 3))
    assert {b"k:%d" % i for i in range(3000) if ring.partition(b"k:%d" % i) in mine} <= held


def test_the_cluster_commands_take_the_nodes_password(tmp_path):
    cluster = Cluster(tmp_path, 2, *FAST, "--requirepass", "s3cret/pw")
    try:
        for node in cluster.nodes:
            node.start()

        def cli(*args, env=None):
            return subprocess.run([sys.executable, "-m", "fastdyn", "cluster", *args],
                                  capture_output=True, text=True, timeout=30,
                                  env={**os.environ, **(env or {})})
        wait_until(lambda: "cluster_reachable:2" in cli(
            "status", "--port", str(cluster.ports[0]), "--password", "s3cret/pw").stdout, 30,
            "the two nodes do not see each other")
        denied = cli("status", "--port", str(cluster.ports[0]))
        assert denied.returncode == 1 and "NOAUTH" in denied.stderr
        ok = cli("status", "--port", str(cluster.ports[0]), "--password", "s3cret/pw")
        assert ok.returncode == 0 and cluster.names[1] in ok.stdout
        left = cli("leave", cluster.names[1], env={"FASTDYN_PASSWORD": "s3cret/pw"})
        assert left.returncode == 0, left.stderr
        assert cluster.nodes[1].proc.wait(60) == 0
    finally:
        cluster.kill_all()
