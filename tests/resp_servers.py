"""Long-lived servers for the RESP end-to-end suites (one per module, not per test).

Built on tests/conftest.py's ServerProcess and Cluster; a module-scoped fixture starts a server
with `start_redis(tmp)` / `start_fastdyn(tmp)` / `start_cluster_node(tmp)` and kills it at the
end. A cluster node is node 0 of a 3-node cluster (N=3, R=2, W=2): the suites talk to it as
to any single server.
"""
import shutil

import pytest

from conftest import HOST, Cluster, ServerProcess, fastdyn_argv, free_port


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (.ci/run installs it with apt-get)")
    return path


def start_redis(tmp, *extra) -> ServerProcess:
    """redis-server with persistence off and one database (SELECT 1 fails, as in fastdyn)."""
    binary = need("redis-server")
    port = free_port()
    return ServerProcess(
        [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--dir", str(tmp), "--databases", "1", *map(str, extra)],
        port, str(tmp), str(tmp / f"redis-{port}.log")).start()


def start_fastdyn(tmp, *extra, data_dir=None) -> ServerProcess:
    port = free_port()
    if data_dir is None:
        data_dir = tmp / f"fastdyn-{port}"
        data_dir.mkdir()
    return ServerProcess(fastdyn_argv(port, data_dir, *extra), port, str(data_dir),
                         str(tmp / f"fastdyn-{port}.log")).start()


class ClusterNode(ServerProcess):
    """Node 0 of a running 3-node cluster, standing for the whole cluster: killing it kills
    every node, its log problems are every node's."""

    def __init__(self, cluster: Cluster):
        node = cluster.nodes[0]
        super().__init__(node.argv, node.port, node.data_dir, node.log_path)
        self.cluster = cluster
        self.proc = node.proc

    def start(self, timeout: float = 30.0) -> "ClusterNode":
        self.cluster.restart(0, timeout)
        self.proc = self.cluster.nodes[0].proc
        return self

    def kill(self) -> None:
        self.cluster.kill_all()

    def log(self) -> str:
        return "".join(f"--- {node.log_path} ---\n{node.log()}" for node in self.cluster.nodes)


def start_cluster_node(tmp) -> ClusterNode:
    return ClusterNode(Cluster(tmp / "cluster", 3).start())


def alive(server: ServerProcess) -> bool:
    if isinstance(server, ClusterNode):
        return len(server.cluster.running()) == len(server.cluster)
    return server.proc is not None and server.proc.poll() is None


@pytest.fixture(scope="module")
def paired_servers(tmp_path_factory, request):
    """One fastdyn and one redis-server for the whole module, killed at its end."""
    tmp = tmp_path_factory.mktemp(request.module.__name__)
    started = {"fastdyn": start_fastdyn(tmp), "redis": start_redis(tmp)}
    yield started
    for server in started.values():
        server.kill()


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory, request):
    """Node 0 of a 3-node cluster for the whole module; at its end no node may have logged a
    traceback."""
    node = start_cluster_node(tmp_path_factory.mktemp(request.module.__name__ + "-cluster"))
    yield node
    node.kill()
    problems = node.cluster.log_problems()
    assert not problems, "\n\n".join(f"--- {path} ---\n{text}" for path, text in problems)


def checked_server(request, paired_servers):
    """The server request.param names ("cluster": a cluster node), flushed, and checked to be
    alive before and after the test."""
    from resp_client import RawClient

    if request.param == "cluster":
        s = request.getfixturevalue("cluster_node")
    else:
        s = paired_servers[request.param]
    assert alive(s), f"{request.param} died in an earlier test:\n{s.log()[-2000:]}"
    with RawClient(s.port) as c:
        assert c.call("FLUSHALL") == ("simple", b"OK")
    yield s
    assert alive(s), f"{request.param} died during this test:\n{s.log()[-2000:]}"


@pytest.fixture(params=["fastdyn", "redis"])
def server(request, paired_servers):
    """Each of the pair in turn (see checked_server)."""
    yield from checked_server(request, paired_servers)
