"""A cluster across real hosts: three `fastdyn serve` nodes, each in its own Linux network
namespace behind a veth pair on one bridge, join by their advertised addresses; one of them is
cut off with iptables DROP rules and the network heals again.

Needs root, `ip netns` and iptables (.ci/run installs iproute2 and iptables); skipped with the
reason otherwise. Every address is in 10.231.0.0/24: a run takes a free /28 of it (under a
lock, so that parallel runs use different addresses), names its namespaces, veths and bridge
after its pid, and removes all of them at the end, whatever happened.
"""
import fcntl
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import Cluster, ServerProcess, fastdyn_argv, members_of, wait_until

pytestmark = pytest.mark.root

OK = ("simple", b"OK")
SUBNET = "10.231.0."            # the only addresses this test uses: 10.231.0.0/24
BLOCK = 16                      # a run's share of it: one /28
PREFIX = 28
BRIDGE_HOST = 14                # the bridge's address in the block (the test's side)
CLIENT_PORT, PEER_PORT = 7379, 17379
LOCK_PATH = os.path.join(tempfile.gettempdir(), "fastdyn-netns.lock")
NODE_FLAGS = ("--protected-mode", "no", "--gossip-interval-ms", "200",
              "--peer-timeout-ms", "1000")


def _tool(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _run(*argv, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}: "
                           f"{done.stderr.strip()}")
    return done


def _unsupported() -> str:
    """Why this machine cannot run the test ('' when it can): tried, not guessed."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables)"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if _tool(tool) is None:
            return f"{tool} is not installed (.ci/run installs {package} with apt-get)"
    probe = f"fastdyn-probe-{os.getpid()}"
    added = _run(_tool("ip"), "netns", "add", probe, check=False)
    if added.returncode:
        return f"`ip netns add` is not permitted here: {added.stderr.strip()}"
    try:
        rule = _run(_tool("ip"), "netns", "exec", probe, _tool("iptables"), "-A", "INPUT",
                    "-s", SUBNET + "0/24", "-j", "DROP", check=False)
        if rule.returncode:
            return f"iptables does not work in a network namespace: {rule.stderr.strip()}"
    finally:
        _run(_tool("ip"), "netns", "del", probe, check=False)
    return ""


class Network:
    """Namespace i holds node i at ips[i], its end of a veth pair whose other end is on the
    bridge; the bridge's own address (in the same /28) is how the test reaches every node."""

    def __init__(self, k: int):
        pid = os.getpid()
        self.ip, self.iptables = _tool("ip"), _tool("iptables")
        self.namespaces = [f"fastdyn-{pid}-n{i}" for i in range(k)]
        self.veths = [f"fd{pid}v{i}" for i in range(k)]
        self.bridge = f"fd{pid}br"
        self.ips = []
        self.bridge_ip = None
        self._undo = []         # commands that remove what was made, in the order made
        self._cut = {}          # namespace -> the rules isolating it

    def up(self) -> "Network":
        ip = self.ip
        with open(LOCK_PATH, "a") as lock:
            # the lock covers choosing a block and claiming it with the bridge's address
            fcntl.flock(lock, fcntl.LOCK_EX)
            base = self._free_block()
            self.ips = [f"{SUBNET}{base + 1 + i}" for i in range(len(self.namespaces))]
            self.bridge_ip = f"{SUBNET}{base + BRIDGE_HOST}"
            self._make((ip, "link", "add", self.bridge, "type", "bridge"),
                       (ip, "link", "del", self.bridge))
            _run(ip, "addr", "add", f"{self.bridge_ip}/{PREFIX}", "dev", self.bridge)
        _run(ip, "link", "set", self.bridge, "up")
        # bridged frames cross the FORWARD chain when br_netfilter is loaded, whose policy
        # may be DROP (as Docker sets it)
        forward = ("FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")
        self._make((self.iptables, "-I", *forward), (self.iptables, "-D", *forward))
        for ns, veth, address in zip(self.namespaces, self.veths, self.ips):
            self._make((ip, "netns", "add", ns), (ip, "netns", "del", ns))
            # deleting either end deletes the pair; the namespace's end goes with it too
            self._make((ip, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                        "netns", ns), (ip, "link", "del", veth))
            _run(ip, "link", "set", veth, "master", self.bridge, "up")
            _run(ip, "-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", "eth0")
            _run(ip, "-n", ns, "link", "set", "eth0", "up")
            _run(ip, "-n", ns, "link", "set", "lo", "up")
        return self

    def _free_block(self) -> int:
        used = _run(self.ip, "-4", "-o", "addr", "show").stdout + \
            _run(self.ip, "-4", "route", "show", "table", "all").stdout
        taken = {int(word[len(SUBNET):].split("/")[0]) // BLOCK for word in used.split()
                 if word.startswith(SUBNET)}
        free = [b for b in range(256 // BLOCK) if b not in taken]
        if not free:
            pytest.skip(f"every /{PREFIX} of {SUBNET}0/24 is in use")
        return free[0] * BLOCK

    def _make(self, command, undo) -> None:
        _run(*command)
        self._undo.append(undo)

    def node_argv(self, i: int, data_dir, seeds) -> list:
        return [self.ip, "netns", "exec", self.namespaces[i],
                *fastdyn_argv(CLIENT_PORT, data_dir, "--advertise", self.ips[i],
                              "--peer-port", PEER_PORT, "--seeds", seeds, *NODE_FLAGS,
                              host=self.ips[i])]

    def isolate(self, i: int) -> None:
        """DROP everything between node i and the other nodes, in node i's namespace; the
        test (the bridge's address) still reaches it."""
        ns = self.namespaces[i]
        rules = [(chain, flag, other) for other in self.ips if other != self.ips[i]
                 for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d"))]
        self._cut[ns] = []
        for chain, flag, other in rules:
            _run(self.ip, "netns", "exec", ns, self.iptables, "-A", chain, flag, other,
                 "-j", "DROP")
            self._cut[ns].append((chain, flag, other))

    def heal(self) -> None:
        for ns, rules in self._cut.items():
            while rules:
                chain, flag, other = rules.pop()
                _run(self.ip, "netns", "exec", ns, self.iptables, "-D", chain, flag, other,
                     "-j", "DROP")

    def down(self) -> list:
        """Remove everything made (the nodes must be stopped); the errors, if any."""
        errors = []
        try:
            self.heal()
        except RuntimeError as exc:
            errors.append(str(exc))
        for command in reversed(self._undo):
            done = _run(*command, check=False)
            if done.returncode and "Cannot find device" not in done.stderr:
                errors.append(f"{' '.join(command)}: {done.stderr.strip()}")
        self._undo.clear()
        return errors


class NamespaceCluster(Cluster):
    """Node i runs in namespace i of `network`, named and advertised by its address there;
    the Cluster methods (joins, hints, stores, logs) work as on loopback."""

    def __init__(self, root, network: Network):
        self.root = root
        self.names = [f"{address}:{CLIENT_PORT}" for address in network.ips]
        self.peer_addresses = [f"{address}:{PEER_PORT}" for address in network.ips]
        self.nodes = []
        for i, address in enumerate(network.ips):
            data_dir = os.path.join(root, f"node{i}")
            os.makedirs(data_dir)
            argv = network.node_argv(i, data_dir, ",".join(self.peer_addresses))
            self.nodes.append(ServerProcess(argv, CLIENT_PORT, data_dir,
                                            os.path.join(root, f"node{i}.log"), host=address))


@pytest.fixture
def network():
    reason = _unsupported()
    if reason:
        pytest.skip(reason)
    net = Network(3)
    try:
        yield net.up()
    finally:
        errors = net.down()
    assert not errors, errors


@pytest.fixture
def hosts_cluster(network, tmp_path):
    """A NamespaceCluster, not started; its nodes are killed before the network goes, and no
    node may have logged a traceback."""
    cluster = NamespaceCluster(tmp_path, network)
    try:
        yield cluster
    finally:
        cluster.kill_all()
    problems = cluster.log_problems()
    assert not problems, "\n\n".join(f"--- {path} ---\n{text}" for path, text in problems)


def _quorum_error(reply) -> bool:
    return reply[0] == "error" and reply[1].startswith(b"ERR quorum not reached")


def test_a_cut_off_node_refuses_quorum_and_catches_up_after_healing(network, hosts_cluster):
    cluster = hosts_cluster.start()
    for i in range(3):
        assert members_of(cluster, i) == {name: "up" for name in cluster.names}

    # every node coordinates writes (W=2) and reads (R=2)
    acked = {}
    for i in range(3):
        keys = [b"before:%d:%d" % (i, n) for n in range(40)]
        with cluster.client(i) as c:
            assert c.pipeline([("SET", key, key + b"=1") for key in keys]) == [OK] * 40
        acked.update((key, key + b"=1") for key in keys)
    for i in range(3):
        with cluster.client(i) as c:
            assert c.pipeline([("GET", key) for key in acked]) == \
                [("bulk", value) for value in acked.values()]

    network.isolate(2)
    cut = cluster.names[2]
    for i in (0, 1):
        wait_until(lambda: cluster.view(i)["fields"]["cluster_unreachable"] == cut, 30,
                   f"node {i} still reaches the cut-off node: {cluster.view(i)['fields']}")
        assert members_of(cluster, i)[cut] == "down"
    wait_until(lambda: cluster.view(2)["reachable"] == 1, 30,
               f"the cut-off node still reaches others: {cluster.view(2)['fields']}")

    # the majority: overwrites and new keys through both nodes, each read back through the
    # other one
    with cluster.client(0) as c0, cluster.client(1) as c1:
        majority = list(acked)[::2] + [b"during:%d" % n for n in range(40)]
        for n, key in enumerate(majority):
            value = key + b"=2"
            writer, reader = (c0, c1) if n % 2 else (c1, c0)
            assert writer.call("SET", key, value) == OK, key
            acked[key] = value
            assert reader.call("GET", key) == ("bulk", value), key
    assert cluster.hints_pending(0) + cluster.hints_pending(1) > 0

    # the cut-off node: a quorum error for every read and write, never a value
    attempted = {b"isolated:%d" % n: b"lost?" for n in range(10)}
    with cluster.client(2) as c:
        for key in list(acked)[:20] + list(attempted):
            reply = c.call("GET", key)
            assert _quorum_error(reply), (key, reply)
        for key, value in attempted.items():
            reply = c.call("SET", key, value)
            assert _quorum_error(reply), (key, reply)

    network.heal()
    cluster.wait_joined()
    assert members_of(cluster, 0)[cut] == "up"
    cluster.wait_hints_delivered()

    # every store holds every acknowledged write; a refused one is absent or as written (the
    # cut-off node kept it and hinted it to the others: a refused write is not rolled back)
    assert cluster.stop_all() == [0, 0, 0]
    assert cluster.misplaced(acked) == {}
    stored = cluster.stored_values(list(attempted))
    assert all(value in (None, attempted[key]) for key, per_node in stored.items()
               for value in per_node.values()), stored

    # and every node reads them so with R=3
    cluster.start()
    cluster.read_through_every_node(acked, attempted)
