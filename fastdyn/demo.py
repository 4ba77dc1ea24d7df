"""`fastdyn demo`: a finite tour of the system, in a temporary directory, in well under a minute.

Every step does the real thing — real files, a real `fastdyn serve` process on a loopback
port, a real load run, a three-node cluster that loses a node to SIGKILL and gets it back — and
checks its own outcome: the demo exits 1 if anything it shows is not so.
"""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from fastdyn.cli.cluster import PEER_OFFSET
from fastdyn.errors import ReplyError, TargetUnavailable

CRASH_WRITER = """
import sys, fastdyn
store = fastdyn.open(sys.argv[1], sync="always")
i = 0
while True:
    store[b"acked:%08d" % i] = b"value-%d" % i
    print(i, flush=True)
    i += 1
"""


class DemoFailure(Exception):
    pass


def check(condition, what):
    if not condition:
        raise DemoFailure(what)


def step(title):
    print(f"\n== {title}")


def say(text):
    print(f"   {text}")


def free_ports(count):
    """Distinct free client ports whose peer ports (port + 10000) are free too and are not
    one of the others' client ports."""
    ports = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + PEER_OFFSET > 65535 or {port, port + PEER_OFFSET} & {
                p + d for p in ports for d in (0, PEER_OFFSET)}:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + PEER_OFFSET))
            except OSError:
                continue
        ports.append(port)
    return ports


def embedded_store(root):
    import fastdyn

    step("Embedded store: fastdyn.open(path) is a persistent dictionary")
    path = os.path.join(root, "embedded")
    with fastdyn.open(path) as store:
        with store.batch():
            for i in range(10000):
                store[b"user:%d" % i] = b"profile-%d" % i
        say(f"wrote {len(store)} keys in one batch (one write() call)")
        store.set(b"session:abc", b"logged-in", ttl=0.3)
        say(f"set session:abc with a 0.3 s TTL; present: {b'session:abc' in store}")
        time.sleep(0.35)
        check(b"session:abc" not in store, "an expired key is still readable")
        say("0.35 s later session:abc has expired and reads as absent")
    with fastdyn.open(path) as store:
        check(store[b"user:42"] == b"profile-42" and len(store) == 10000, "reopen lost data")
        say(f"reopened: {len(store)} keys, user:42 = {store[b'user:42']!r}")


def crash_recovery(root):
    import fastdyn

    step("Crash safety: a writer with sync=always is killed with SIGKILL mid-stream")
    path = os.path.join(root, "crash")
    writer = subprocess.Popen([sys.executable, "-P", "-c", CRASH_WRITER, path],
                              stdout=subprocess.PIPE, text=True)
    acked = -1
    for line in writer.stdout:
        acked = int(line)
        if acked >= 300:
            break
    writer.send_signal(signal.SIGKILL)
    for line in writer.stdout:          # acknowledgements already in the pipe count too
        acked = int(line)
    writer.wait()
    with fastdyn.open(path) as store:
        missing = [i for i in range(acked + 1) if store.get(b"acked:%08d" % i) != b"value-%d" % i]
        check(not missing, f"acknowledged writes lost after SIGKILL: {missing[:5]}")
        say(f"{acked + 1} writes were acknowledged before the kill; all {acked + 1} are there "
            f"after reopen ({len(store)} keys on disk)")
        report = store.recovery_report
        if report:
            say(f"recovery report: {report}")


def compaction(root):
    import fastdyn

    step("Compaction: overwrites leave dead bytes; a merge reclaims them")
    path = os.path.join(root, "compaction")
    with fastdyn.open(path, auto_merge=False) as store:
        for round_ in range(5):
            with store.batch():
                for i in range(5000):
                    store[b"k%d" % i] = b"round-%d-" % round_ + b"x" * 200
        before = store.stats()
        store.merge()
        after = store.stats()
        check(after["dead_bytes"] < before["dead_bytes"], "merge reclaimed nothing")
        check(store[b"k7"].startswith(b"round-4-"), "merge lost the latest value")
        say(f"before merge: {before['live_bytes']:,} live / {before['dead_bytes']:,} dead bytes")
        say(f"after merge:  {after['live_bytes']:,} live / {after['dead_bytes']:,} dead bytes")
        say(f"keydir: {after['keydir_overhead_per_key']:.1f} bytes per key beyond the key itself")


def ring_and_merkle():
    from fastdyn.cluster.merkle import MerkleTree, digest
    from fastdyn.ring import Ring

    step("Ring: 256 equal partitions, owned as a deterministic function of the members")
    members = ["node-a", "node-b", "node-c", "node-d", "node-e"]
    ring = Ring(members)
    check(Ring(list(reversed(members))) == ring, "member order changed the ring")
    say(f"'user:42' -> partition {ring.partition(b'user:42')}, "
        f"preference list {ring.preference_list(b'user:42', 3)} "
        f"then fallbacks {ring.preference_list(b'user:42', 5)[3:]}")
    owned = {m: len(ring.partitions_of(m, 1)) for m in members}
    say(f"primary partitions per node: {owned}")
    grown = Ring(members + ["node-f"])
    primaries = len(grown.moved(ring, 1))
    replica_sets = len(grown.moved(ring, 3))
    check(primaries <= 256 * (1 / 6 + 0.1), "a join moved too many primaries")
    say(f"node-f joins: {primaries} of 256 primaries move (node-f takes "
        f"{len(grown.partitions_of('node-f', 1))}; the ideal is 256/6 = 42.7); "
        f"{replica_sets} replica sets change (it must hold 3*256/6 = 128 replicas)")

    step("Merkle trees: replicas find the keys they disagree on without listing all keys")
    left, right = MerkleTree(), MerkleTree()
    for i in range(20000):
        key = b"key-%d" % i
        left.insert(key, digest(key, b"v1"))
        right.insert(key, digest(key, b"v2" if i in (17, 4242) else b"v1"))
    segments = left.diff(right)
    check(len(segments) <= 2 and left.root != right.root, "Merkle diff is not narrow")
    say(f"20,000 keys, 2 differ: roots differ, the diff descends to {len(segments)} "
        f"of {left.segment_count} leaf segments")


def server(root):
    step("Server: `fastdyn serve` speaks RESP, so any Redis client works")
    node = Node(root, "node", free_ports(1)[0], "--sync", "interval")
    with node_logs_on_failure([node]):
        with node.start() as client:
            replies = client.pipeline([("SET", "greeting", "hello"), ("GET", "greeting"),
                                       ("SET", "session:1", "data", "EX", "60"),
                                       ("TTL", "session:1"), ("INCR", "visits"),
                                       ("INCRBY", "visits", "41")])
            for command, reply in zip(["SET greeting hello", "GET greeting",
                                       "SET session:1 data EX 60", "TTL session:1",
                                       "INCR visits", "INCRBY visits 41"], replies):
                say(f"{command:<26} -> {reply!r}")
            check(replies[1] == b"hello" and replies[5] == 42, "unexpected replies")
            info = client.execute("INFO", "server").decode()
            version = [l for l in info.splitlines() if l.startswith(("redis_version",
                                                                     "fastdyn_version"))]
            say("INFO server: " + ", ".join(version))
        bench(node.port)
        code = node.stop()
        say(f"SIGTERM: the node flushed, fsynced and exited with {code}")
        with node.start() as client:
            value = client.execute("GET", "greeting")
            check(value == b"hello", "data lost across restart")
            say(f"restarted on the same data dir: GET greeting -> {value!r}")
        node.stop()


def cluster(root):
    step("Cluster: three `fastdyn serve --seeds ...` nodes; each key on N=3, W=2, R=2")
    ports = free_ports(3)
    seeds = ",".join(f"127.0.0.1:{port + PEER_OFFSET}" for port in ports)
    nodes = [Node(os.path.join(root, "cluster"), f"node{i}", port, "--seeds", seeds,
                  "--log-level", "warning", "--anti-entropy-interval-ms", "500")
             for i, port in enumerate(ports)]
    os.makedirs(os.path.join(root, "cluster"))
    with node_logs_on_failure(nodes):
        clients = [node.start() for node in nodes]
        for i, client in enumerate(clients):
            wait_for(lambda: cluster_info(client)["cluster_members"] == "3"
                     and cluster_info(client)["cluster_reachable"] == "3",
                     f"node{i} does not reach 3 members")
        say(f"3 nodes on ports {', '.join(map(str, ports))}: each sees cluster_members:3")
        clients[0].execute("SET", "greeting", "hello")
        value = clients[2].execute("GET", "greeting")
        check(value == b"hello", f"GET through node2 returned {value!r}")
        say(f"SET greeting hello through node0; GET greeting through node2 -> {value!r}")

        step("Failover: node1 is killed with SIGKILL; writes go on with W=2")
        nodes[1].kill()
        clients[1].close()
        written = {}
        for i in (0, 2):
            batch = {f"order:{i}:{j}": f"total-{i * 1000 + j}" for j in range(100)}
            replies = clients[i].pipeline([("SET", k, v) for k, v in batch.items()])
            failed = [r for r in replies if r != b"OK"]
            check(not failed, f"writes through node{i} failed: {failed[:3]}")
            written.update(batch)
        say(f"{len(written)} SETs through node0 and node2 while node1 is down: all acknowledged")
        pending = [int(cluster_info(clients[i])["hints_pending"]) for i in (0, 2)]
        check(all(pending), f"no hints kept for node1: hints_pending {pending}")
        say(f"hints_pending (writes kept for node1): node0 {pending[0]}, node2 {pending[1]}")

        step("Hinted handoff: node1 restarts on the same data dir and receives its hints")
        clients[1] = nodes[1].start()
        for i in (0, 2):
            wait_for(lambda: cluster_info(clients[i])["hints_pending"] == "0",
                     f"node{i} still holds hints for node1")
        delivered = [int(cluster_info(clients[i])["hints_delivered"]) for i in (0, 2)]
        say(f"hints_pending is 0 on node0 and node2 (hints_delivered: {delivered[0]}, "
            f"{delivered[1]})")
        # INFO keyspace counts this node's own replicas: the hints put them there (KEYS and
        # GET would answer from the other replicas too)
        held = int(clients[1].execute("INFO", "keyspace").decode().split("keys=")[1].split(",")[0])
        check(held >= len(written), f"node1 holds {held} keys; {len(written)} were written "
                                    f"while it was down")
        replies = clients[1].pipeline([("GET", k) for k in written])
        wrong = [k for k, r in zip(written, replies) if r != written[k].encode()]
        check(not wrong, f"wrong values through node1: {wrong[:3]}")
        say(f"node1 holds {held} keys itself (INFO keyspace), the {len(written)} written while "
            f"it was down among them; GETs through it return the right values")

        step("Siblings: concurrent causal writes both survive; a write with their context merges")
        def blind_put(i, value):
            with nodes[i].connect() as client:
                return client.execute("DYN.PUT", "cart", "", value)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(blind_put, (0, 1), ("apple", "pear")))
        context, values = clients[2].execute("DYN.GET", "cart")
        check(sorted(values) == [b"apple", b"pear"], f"siblings: {values!r}")
        say('DYN.PUT cart "" apple (node0) || DYN.PUT cart "" pear (node1)')
        say(f"DYN.GET cart (node2) -> siblings {sorted(values)!r} and a "
            f"{len(context)}-byte context")
        clients[2].execute("DYN.PUT", "cart", context, "apple+pear")
        _, values = clients[0].execute("DYN.GET", "cart")
        check(values == [b"apple+pear"], f"after the merge: {values!r}")
        say(f"DYN.PUT cart <that context> apple+pear; DYN.GET cart (node0) -> {values!r}")

        anti_entropy(nodes, clients)

        for client in clients:
            client.close()
        codes = [node.stop() for node in nodes]
        say(f"SIGTERM to the three nodes: exit codes {codes}")


def anti_entropy(nodes, clients):
    import shutil

    step("Anti-entropy: node2's data directory is wiped while it is down; nobody reads")
    def local_keys(client):
        # INFO keyspace counts the keys this node holds itself
        line = client.execute("INFO", "keyspace").decode()
        return int(line.split("keys=")[1].split(",")[0]) if "keys=" in line else 0

    def roots(client):
        try:
            return [row[1] for row in client.execute("DYN.ANTIENTROPY")]
        except ReplyError:
            return None       # its trees are still being rebuilt

    held = local_keys(clients[0])
    repairs_before = [cluster_info(c)["read_repairs"] for c in clients[:2]]
    nodes[2].kill()
    clients[2].close()
    shutil.rmtree(os.path.join(os.path.dirname(nodes[2].log_path), nodes[2].name))
    started = time.monotonic()
    clients[2] = nodes[2].start()
    say(f"node0 holds {held} keys; node2 restarts with an empty data directory and "
        f"holds {local_keys(clients[2])}")
    wait_for(lambda: local_keys(clients[2]) >= held and
             None is not roots(clients[0]) == roots(clients[1]) == roots(clients[2]),
             "anti-entropy did not restore node2", timeout=40)
    took = time.monotonic() - started
    stats = [cluster_info(c) for c in clients]
    moved = sum(int(s["anti_entropy_keys_repaired"]) for s in stats)
    sent = sum(int(s["anti_entropy_bytes_sent"]) + int(s["anti_entropy_bytes_received"])
               for s in stats)
    check([s["read_repairs"] for s in stats] == repairs_before + ["0"],
          "a read repair ran: somebody read")
    say(f"after {took:.1f} s node2 holds {local_keys(clients[2])} keys again and the Merkle "
        f"roots of all 256 partitions agree on the three nodes")
    say(f"anti-entropy moved {moved} keys in {sent} bytes of exchange messages; "
        f"read repairs: 0")


class Node:
    """A `fastdyn serve` process of the demo; its output goes to <dir>/<name>.log."""

    def __init__(self, directory, name, port, *options):
        self.name = name
        self.port = port
        self.argv = [sys.executable, "-P", "-m", "fastdyn", "serve", "--port", str(port),
                     "--data-dir", os.path.join(directory, name), *options]
        self.log_path = os.path.join(directory, name + ".log")
        self.proc = None

    def start(self):
        """Starts the process (again, with the same arguments) and returns a client."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        return self.connect()

    def connect(self):
        from fastdyn.client import connect

        deadline = time.monotonic() + 20
        while True:
            try:
                return connect(f"redis://127.0.0.1:{self.port}")
            except (OSError, TargetUnavailable):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise DemoFailure(f"{self.name} did not start "
                                      f"(exit code {self.proc.poll()})") from None
                time.sleep(0.05)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(20)
        check(code == 0, f"{self.name}: SIGTERM exit code {code}")
        return code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read()[-1500:].decode("utf-8", "replace")


@contextlib.contextmanager
def node_logs_on_failure(nodes):
    """Any failure becomes a DemoFailure that shows the end of each node's log; no node
    outlives the act."""
    try:
        yield
    except (DemoFailure, ReplyError, TargetUnavailable, subprocess.TimeoutExpired) as exc:
        logs = "".join(f"\n--- end of {node.name}.log:\n{node.log_tail() or '(empty)'}"
                       for node in nodes if node.proc is not None)
        raise DemoFailure(f"{exc}{logs}") from None
    finally:
        for node in nodes:
            node.kill()


def cluster_info(client) -> dict:
    text = client.execute("INFO", "cluster").decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def wait_for(condition, what, timeout=20):
    deadline = time.monotonic() + timeout
    while not condition():
        check(time.monotonic() < deadline, f"{what} after {timeout} s")
        time.sleep(0.05)


def bench(port):
    step("Load test: `fastdyn bench` against the node, 2 seconds, 20 clients x pipeline 8")
    out = subprocess.run(
        [sys.executable, "-P", "-m", "fastdyn", "bench", "--target", f"redis://127.0.0.1:{port}",
         "--clients", "20", "--pipeline", "8", "--duration", "2", "--processes", "1",
         "--keys", "10000", "--mix", "get=0.8,set=0.2", "--warmup", "1"],
        capture_output=True, text=True, timeout=60)
    check(out.returncode == 0, f"fastdyn bench failed: {out.stderr[-500:]}")
    for line in out.stdout.strip().splitlines():
        say(line)


def add_arguments(parser):
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory and print its path")


def run(args) -> int:
    started = time.monotonic()
    root = tempfile.mkdtemp(prefix="fastdyn-demo-")
    try:
        embedded_store(root)
        crash_recovery(root)
        compaction(root)
        ring_and_merkle()
        server(root)
        cluster(root)
    except DemoFailure as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"\n(files kept in {root})")
        else:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    print(f"\nTour finished in {time.monotonic() - started:.1f} s.")
    return 0
