"""Long-lived servers for the RESP end-to-end suites (one per module, not per test).

Built on tests/conftest.py's ServerProcess; a module-scoped fixture starts a server with
`start_redis(tmp)` / `start_fastdyn(tmp)` and kills it at the end.
"""
import shutil

import pytest

from conftest import HOST, ServerProcess, fastdyn_argv, free_port


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


def alive(server: ServerProcess) -> bool:
    return server.proc is not None and server.proc.poll() is None


@pytest.fixture(scope="module")
def paired_servers(tmp_path_factory, request):
    """One fastdyn and one redis-server for the whole module, killed at its end."""
    tmp = tmp_path_factory.mktemp(request.module.__name__)
    started = {"fastdyn": start_fastdyn(tmp), "redis": start_redis(tmp)}
    yield started
    for server in started.values():
        server.kill()


@pytest.fixture(params=["fastdyn", "redis"])
def server(request, paired_servers):
    """Each of the pair in turn, flushed, and checked to be alive before and after the test."""
    from resp_client import RawClient

    s = paired_servers[request.param]
    assert alive(s), f"{request.param} died in an earlier test:\n{s.log()[-2000:]}"
    with RawClient(s.port) as c:
        assert c.call("FLUSHALL") == ("simple", b"OK")
    yield s
    assert alive(s), f"{request.param} died during this test:\n{s.log()[-2000:]}"
