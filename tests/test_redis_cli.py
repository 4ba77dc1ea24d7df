"""redis-cli against fastdyn: the commands an operator types, and pipe / mass-insert modes."""
import shutil
import subprocess

import pytest

from resp_client import RawClient
from resp_servers import alive, start_fastdyn

REDIS_CLI = shutil.which("redis-cli")
pytestmark = pytest.mark.skipif(
    REDIS_CLI is None, reason="redis-cli is not installed (.ci/run installs redis-tools)")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    server = start_fastdyn(tmp_path_factory.mktemp("redis-cli"))
    yield server
    server.kill()


@pytest.fixture
def cli(node):
    assert alive(node), node.log()[-2000:]
    with RawClient(node.port) as c:
        c.call("FLUSHALL")

    def run(*args, stdin=None):
        done = subprocess.run([REDIS_CLI, "-p", str(node.port), *args], input=stdin,
                              capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    yield run
    assert alive(node), node.log()[-2000:]


def test_ping_set_get(cli):
    assert cli("ping") == "PONG\n"
    assert cli("set", "greeting", "hello world") == "OK\n"
    assert cli("get", "greeting") == "hello world\n"
    assert cli("get", "missing") == "\n"
    assert cli("incrby", "n", "5") == "5\n"
    assert cli("ttl", "greeting") == "-1\n"
    assert cli("--no-raw", "get", "missing") == "(nil)\n"
    assert cli("--no-raw", "mget", "greeting", "missing") == '1) "hello world"\n2) (nil)\n'
    assert cli("--no-raw", "incr", "n") == "(integer) 6\n"
    assert "ERR" in cli("--no-raw", "incr", "greeting")


def test_info_is_parseable(cli):
    cli("set", "a", "1")
    info = cli("info")
    sections = {line[2:].strip() for line in info.splitlines() if line.startswith("# ")}
    assert {"Server", "Clients", "Memory", "Persistence", "Stats", "Replication",
            "Keyspace"} <= sections
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    version = tuple(int(x) for x in fields["redis_version"].strip().split(".")[:2])
    assert version >= (7, 2)
    assert "fastdyn_version" in fields
    assert fields["db0"].strip().startswith("keys=1,expires=0")
    assert "redis_version" in cli("info", "server")


def test_scan_mode(cli):
    cli("mset", *[x for i in range(300) for x in (f"user:{i}", str(i))], "other", "x")
    assert sorted(cli("--scan").split()) == sorted([f"user:{i}" for i in range(300)] + ["other"])
    assert sorted(cli("--scan", "--pattern", "user:1?").split()) == [
        f"user:{i}" for i in range(10, 20)]
    assert cli("--scan", "--pattern", "nothing*") == ""


def test_commands_from_stdin(cli):
    script = "".join(f"SET key:{i} value-{i}\n" for i in range(100))
    script += "GET key:42\nDEL key:1 key:2\nDBSIZE\nSET text \"two words\"\nGET text\n"
    out = cli(stdin=script.encode()).splitlines()
    assert out[:100] == ["OK"] * 100
    assert out[100:] == ["value-42", "2", "98", "OK", "two words"]


def test_pipe_mass_insert(cli, node):
    values = {f"bulk:{i}".encode(): b"v\x00\r\n" * (i % 5) for i in range(5000)}
    payload = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                       % (len(k), k, len(v), v) for k, v in values.items())
    out = cli("--pipe", stdin=payload)
    assert "errors: 0, replies: 5000" in out
    assert cli("dbsize") == "5000\n"
    with RawClient(node.port) as c:
        for key in (b"bulk:0", b"bulk:3", b"bulk:4999"):
            assert c.call("GET", key) == ("bulk", values[key])


def test_resp3_mode(cli):
    cli("set", "k", "v")
    assert cli("-3", "get", "k") == "v\n"
    assert cli("-3", "--no-raw", "get", "missing") == "(nil)\n"
    assert cli("-3", "--no-raw", "hello", "3").startswith("1# ")


def test_bigkeys(cli):
    cli("set", "small", "x")
    cli("set", "large", "y" * 5000)
    cli("incr", "counter")
    out = cli("--bigkeys")
    assert "Sampled 3 keys" in out
    assert "Biggest string found '\"large\"' has 5000 bytes" in out


def test_password(tmp_path):
    node = start_fastdyn(tmp_path, "--requirepass", "s3cret pw")
    try:
        def run(*args):
            done = subprocess.run([REDIS_CLI, "-p", str(node.port), "--no-auth-warning", *args],
                                  capture_output=True, timeout=30)
            return (done.stdout + done.stderr).decode()

        assert "NOAUTH" in run("ping")
        assert run("-a", "s3cret pw", "ping") == "PONG\n"
        assert run("--user", "default", "--pass", "s3cret pw", "set", "k", "v") == "OK\n"
        assert run("-a", "s3cret pw", "get", "k") == "v\n"
        assert "WRONGPASS" in run("-a", "wrong", "get", "k")
    finally:
        node.kill()
