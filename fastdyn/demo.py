"""`fastdyn demo`: a finite tour of the system, in a temporary directory, in well under a minute.

Every step does the real thing — real files, a real `fastdyn serve` process on a loopback
port, a real load run — and checks its own outcome: the demo exits 1 if anything it shows is
not so.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from fastdyn.errors import TargetUnavailable

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


def free_port():
    """A free client port whose peer port (port + 10000) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


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
    from fastdyn.client import connect

    step("Server: `fastdyn serve` speaks RESP, so any Redis client works")
    port = free_port()
    data_dir = os.path.join(root, "node")
    argv = [sys.executable, "-P", "-m", "fastdyn", "serve", "--port", str(port),
            "--data-dir", data_dir, "--sync", "interval"]
    log = open(os.path.join(root, "node.log"), "wb")
    node = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = _connect_when_up(connect, port, node, log.name)
        with client:
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
        bench(port)
        node.send_signal(signal.SIGTERM)
        code = node.wait(20)
        check(code == 0, f"SIGTERM exit code {code}")
        say(f"SIGTERM: the node flushed, fsynced and exited with {code}")
        node = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        with _connect_when_up(connect, port, node, log.name) as client:
            value = client.execute("GET", "greeting")
            check(value == b"hello", "data lost across restart")
            say(f"restarted on the same data dir: GET greeting -> {value!r}")
        node.send_signal(signal.SIGTERM)
        node.wait(20)
    finally:
        if node.poll() is None:
            node.kill()
        log.close()


def _connect_when_up(connect, port, node, log_path):
    deadline = time.monotonic() + 20
    while True:
        try:
            return connect(f"redis://127.0.0.1:{port}")
        except (OSError, TargetUnavailable):
            if node.poll() is not None or time.monotonic() > deadline:
                with open(log_path, "rb") as f:
                    tail = f.read()[-1500:].decode("utf-8", "replace")
                raise DemoFailure(f"fastdyn serve did not start (exit code {node.poll()}):\n"
                                  f"{tail}")
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
