"""The one fixture module for tests that run real processes on loopback.

Every server a test talks to is a real process on 127.0.0.1 with a free port and its own
temporary directory: fastdyn nodes (`fastdyn serve`), clusters of them (`Cluster`), and
redis-server / memcached for the comparison tests (skipped with a reason when the binary is
missing). The helpers take another host where a test needs one: test_cluster_hosts.py runs a
Cluster across network namespaces.
"""
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

HOST = "127.0.0.1"

# Child Pythons (`python -m fastdyn`, `python -c`) started from the repository root would
# otherwise import the source checkout instead of the installed package; after a plain
# `pip install .` (as .ci/run does) the checkout holds no compiled extensions. The README's
# in-place install does not need this.
os.environ["PYTHONSAFEPATH"] = "1"


def free_port() -> int:
    """A TCP port nobody listens on now, whose port+10000 (the peer port) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20.0,
                  host: str = HOST) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


class ServerProcess:
    """A started server process: its address, data directory and how to stop it."""

    def __init__(self, argv, port, data_dir, log_path, env=None, host=HOST):
        self.argv = list(argv)
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = env
        self.proc = None

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        self.spawn()
        return self.wait_listening(timeout)

    def spawn(self) -> None:
        """Start the process without waiting for it to listen."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir, env=self.env
        )
        log.close()

    def wait_listening(self, timeout: float = 20.0) -> "ServerProcess":
        try:
            wait_for_port(self.port, self.proc, timeout, self.host)
        except RuntimeError as exc:
            self.kill()
            raise RuntimeError(f"{exc}\n--- log ---\n{self.log()}") from None
        return self

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the process and wait; returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"


def fastdyn_argv(port, data_dir, *extra, host=HOST):
    return [sys.executable, "-m", "fastdyn", "serve", "--host", host, "--port", str(port),
            "--data-dir", str(data_dir), *map(str, extra)]


@pytest.fixture
def start_fastdyn(tmp_path):
    """Factory: start_fastdyn(*extra_flags, data_dir=None) -> a running `fastdyn serve`."""
    started = []

    def start(*extra, data_dir=None, port=None):
        port = port or free_port()
        data_dir = data_dir or tmp_path / f"node-{port}"
        os.makedirs(data_dir, exist_ok=True)
        server = ServerProcess(fastdyn_argv(port, data_dir, *extra), port, str(data_dir),
                               str(tmp_path / f"node-{port}.log"))
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def fastdyn_server(start_fastdyn):
    """One running single-node fastdyn."""
    return start_fastdyn()


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (.ci/run installs it with apt-get)")
    return path


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server with persistence off, for differential and comparison tests."""
    binary = _need("redis-server")
    port = free_port()
    server = ServerProcess(
        [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        port, str(tmp_path), str(tmp_path / "redis.log"),
    ).start()
    yield server
    server.kill()


@pytest.fixture
def memcached_server(tmp_path):
    binary = _need("memcached")
    port = free_port()
    argv = [binary, "-l", HOST, "-p", str(port), "-U", "0"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    server = ServerProcess(argv, port, str(tmp_path), str(tmp_path / "memcached.log")).start()
    yield server
    server.kill()


# --- clusters --------------------------------------------------------------------------------

PEER_OFFSET = 10000            # a node's default peer port is its client port + 10000
LOG_PROBLEMS = ("Traceback", "Exception in callback", "Task exception was never retrieved")


def info_fields(port: int, section: str = "", host: str = HOST) -> dict:
    """`INFO [section]` of the server on host:port as {field: text value}."""
    from resp_client import RawClient

    with RawClient(port, host, timeout=5) as c:
        reply = c.call("INFO", *([section] if section else []))
    if reply[0] not in ("bulk", "verbatim"):
        raise RuntimeError(f"INFO {section} on port {port}: {reply!r}")
    text = reply[-1].decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def cluster_view(port: int, host: str = HOST) -> dict:
    """What the node on host:port knows: members and reachable members (counts), hints
    pending (None when its INFO does not say)."""
    fields = info_fields(port, "cluster", host)
    if "cluster_members" in fields:
        members = int(fields["cluster_members"])
    else:
        members = len([m for m in fields.get("fastdyn_members", "").split(",") if m])
    reachable = int(fields.get("cluster_reachable", members))
    hints = fields.get("hints_pending")
    return {"members": members, "reachable": reachable,
            "hints_pending": None if hints is None else int(hints), "fields": fields}


def dyn_get(client, key, *options):
    """(context, sorted sibling values) of DYN.GET through one connection."""
    reply = client.call("DYN.GET", key, *options)
    assert reply[0] == "array", reply
    context, values = reply[1]
    return context[1], sorted(item[1] for item in values[1])


def dyn_put(client, key, context, value, *options):
    """The new context of a DYN.PUT through one connection."""
    reply = client.call("DYN.PUT", key, context, value, *options)
    assert reply[0] == "bulk", reply
    return reply[1]


def members_of(cluster, i) -> dict:
    """{member name: status} as DYN.MEMBERS through node i lists them."""
    reply = cluster.call(i, "DYN.MEMBERS")
    assert reply[0] == "array", reply
    out = {}
    for entry in reply[1]:
        fields = entry[1]
        pairs = {fields[k][1]: fields[k + 1][1] for k in range(0, len(fields), 2)}
        out[pairs[b"name"].decode()] = pairs[b"status"].decode()
    return out


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll condition() until it returns something true; its last value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout}s: {what}")
        time.sleep(interval)


class Cluster:
    """K `fastdyn serve` cluster members on loopback, each given every node's peer address as
    --seeds (itself included), as `fastdyn cluster up` starts them. Node i keeps its data in
    root/node<i> and its log in root/node<i>.log; its name is 127.0.0.1:<client port>.

    Placement is checked on the stores themselves: `stores()` opens every node's data
    directory once the nodes are stopped."""

    def __init__(self, root, k: int, *extra, seeds=None):
        """seeds: per node, the indexes of the nodes it is given as --seeds (default: all)."""
        self.root = root
        ports = []
        while len(ports) < k:
            port = free_port()
            taken = set(ports) | {p + PEER_OFFSET for p in ports}
            # neither its client nor its peer port may be another node's client or peer port
            if port not in taken and port + PEER_OFFSET not in taken:
                ports.append(port)
        self.names = [f"{HOST}:{p}" for p in ports]
        self.peer_addresses = [f"{HOST}:{p + PEER_OFFSET}" for p in ports]
        self.nodes = []
        for i, port in enumerate(ports):
            data_dir = os.path.join(root, f"node{i}")
            os.makedirs(data_dir, exist_ok=True)
            given = range(k) if seeds is None else seeds[i]
            self.nodes.append(ServerProcess(
                fastdyn_argv(port, data_dir, "--seeds",
                             ",".join(self.peer_addresses[j] for j in given), *extra),
                port, data_dir,
                os.path.join(root, f"node{i}.log")))

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def ports(self) -> list:
        return [n.port for n in self.nodes]

    def running(self) -> list:
        """Indexes of the nodes whose process runs (paused ones included)."""
        return [i for i, n in enumerate(self.nodes) if n.proc is not None and n.proc.poll() is None]

    def start(self, timeout: float = 30.0) -> "Cluster":
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_listening(timeout)
        self.wait_joined(timeout)
        return self

    def wait_joined(self, timeout: float = 30.0, nodes=None) -> None:
        """Until each running node (or each of `nodes`) knows every member and reaches as many
        as run: a write before that would be kept by the members a node knows so far."""
        k = len(self.nodes)
        for i in self.running() if nodes is None else nodes:
            def joined():
                view = self.view(i)
                return view["members"] == k and view["reachable"] >= len(self.running())

            wait_until(joined, timeout, f"node {i} does not reach the {len(self.running())} "
                                        f"running members: {self.view(i)['fields']}")

    def view(self, i: int) -> dict:
        """cluster_view of node i."""
        return cluster_view(self.nodes[i].port, self.nodes[i].host)

    def hints_pending(self, i: int) -> int:
        view = self.view(i)
        assert view["hints_pending"] is not None, \
            f"INFO cluster of node {i} has no hints_pending: {view['fields']}"
        return view["hints_pending"]

    def wait_hints_delivered(self, timeout: float = 30.0) -> None:
        """Until no running node holds a hint (INFO cluster hints_pending == 0 everywhere)."""
        for i in self.running():
            wait_until(lambda: self.hints_pending(i) == 0, timeout,
                       f"node {i} still holds {self.hints_pending(i)} hints")

    # -- faults ---------------------------------------------------------------------------
    def kill(self, i: int) -> None:
        """kill -9: no chance to flush or to say goodbye to the peers."""
        self.nodes[i].kill()

    def pause(self, i: int) -> None:
        self.nodes[i].proc.send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self.nodes[i].proc.send_signal(signal.SIGCONT)

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Start node i again on its port with its data directory (after kill or stop)."""
        assert i not in self.running(), f"node {i} still runs"
        self.nodes[i].start(timeout)
        self.wait_joined(timeout, nodes=[i])

    def stop_all(self) -> list:
        """SIGTERM every node (resumed first if paused) and wait; their exit codes."""
        for i in self.running():
            self.nodes[i].proc.send_signal(signal.SIGCONT)
            self.nodes[i].proc.send_signal(signal.SIGTERM)
        codes = []
        for node in self.nodes:
            if node.proc is None:
                codes.append(None)
                continue
            try:
                codes.append(node.proc.wait(20))
            except subprocess.TimeoutExpired:
                node.kill()
                codes.append("hung")
        return codes

    def kill_all(self) -> None:
        for node in self.nodes:
            node.kill()

    # -- talking to it ----------------------------------------------------------------------
    def client(self, i: int, timeout: float = 10.0):
        from resp_client import RawClient

        return RawClient(self.nodes[i].port, self.nodes[i].host, timeout=timeout)

    def call(self, i: int, *args):
        """One command through node i on a new connection; its reply."""
        with self.client(i) as c:
            return c.call(*args)

    def read_through_every_node(self, acked: dict, unknown: dict = None) -> None:
        """Every node reads every acknowledged key ({key: value}) with R=3, and a key whose
        write had no answer or was refused ({key: value}) as absent or as written."""
        unknown = unknown or {}
        keys = list(acked) + list(unknown)
        self.wait_joined()           # R=3 needs every node to reach every other
        for i in range(len(self)):
            with self.client(i) as c:
                replies = c.pipeline([("DYN.GET", key, "R", 3) for key in keys])
            for key, reply in zip(keys, replies):
                assert reply[0] == "array", (i, key, reply)
                values = [item[1] for item in reply[1][1][1]]
                assert values in ([[acked[key]]] if key in acked else [[], [unknown[key]]]), \
                    (i, key, values)

    def random_node(self, rng=random) -> int:
        return rng.choice(self.running())

    # -- what is on disk --------------------------------------------------------------------
    def ring(self, partitions: int = 256):
        from fastdyn.ring import Ring

        return Ring(sorted(self.names), partitions=partitions)

    @contextlib.contextmanager
    def stores(self):
        """{node name: its open Store}, for stopped nodes only."""
        import fastdyn

        assert not self.running(), f"nodes {self.running()} still run"
        opened = {}
        try:
            for name, node in zip(self.names, self.nodes):
                opened[name] = fastdyn.open(node.data_dir)
            yield opened
        finally:
            for store in opened.values():
                store.close()

    def stored_values(self, keys) -> dict:
        """{key: {node name: what a plain GET of that node's own replica would answer (None
        when absent)}} for keys present on some node; the nodes must be stopped."""
        from fastdyn.cluster import object as vo

        now = int(time.time() * 1000)
        out = {}
        with self.stores() as stores:
            for key in keys:
                per_node = {}
                for name, store in stores.items():
                    data = store.get(key)
                    if data is not None:
                        winner = vo.lww_winner(vo.decode(data), now, self.flush_epoch(name))
                        per_node[name] = None if winner is None else winner[0]
                out[key] = per_node
        return out

    def misplaced(self, expected: dict, n: int = 3) -> dict:
        """{key: what each store holds} for every key of expected ({key: value}) that is not
        on exactly its n preference-list nodes with that value; the nodes must be stopped."""
        ring = self.ring()
        stored = self.stored_values(list(expected))
        return {key: got for key, got in stored.items()
                if got != {name: expected[key] for name in ring.preference_list(key, n)}}

    def flush_epoch(self, name: str) -> int:
        from fastdyn.cluster.replica import EPOCH_FILE

        try:
            with open(os.path.join(self.nodes[self.names.index(name)].data_dir,
                                   EPOCH_FILE)) as f:
                return int(f.read().strip() or 0)
        except FileNotFoundError:
            return 0

    def log_problems(self) -> list:
        """(log path, excerpt) of every traceback any node logged."""
        problems = []
        for node in self.nodes:
            try:
                text = node.log()
            except FileNotFoundError:
                continue
            for marker in LOG_PROBLEMS:
                at = text.find(marker)
                if at >= 0:
                    problems.append((node.log_path, text[max(0, at - 500):at + 2500]))
                    break
        return problems


@pytest.fixture
def start_cluster(tmp_path):
    """Factory: start_cluster(k, *serve_flags) -> a running, joined Cluster. At the end every
    node is killed and no node may have logged a traceback."""
    started = []

    def start(k: int = 3, *extra) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(started)}", k, *extra)
        started.append(cluster)
        return cluster.start()

    yield start
    for cluster in started:
        cluster.kill_all()
    problems = [p for cluster in started for p in cluster.log_problems()]
    assert not problems, "\n\n".join(f"--- {path} ---\n{text}" for path, text in problems)
