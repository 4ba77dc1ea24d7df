"""`fastdyn serve` as a process: lifecycle, configuration, security, limits, durability."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import redis

from conftest import HOST, free_port
from fastdyn.server.protocol import is_loopback


def raw(port, payload: bytes, wait=0.3, sock=None) -> bytes:
    """Send raw bytes and collect the replies until the server is quiet for `wait` seconds
    (up to 3 s for the first byte, so a busy machine does not cut a reply); b'<closed>' marks
    EOF."""
    s = sock or socket.create_connection((HOST, port))
    s.sendall(payload)
    out = b""
    s.settimeout(max(wait, 3.0))
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                out += b"<closed>"
                break
            out += chunk
            s.settimeout(wait)
    except socket.timeout:
        pass
    except ConnectionResetError:
        out += b"<reset>"
    if sock is None:
        s.close()
    return out


def test_sigterm_flushes_and_restart_keeps_data(start_fastdyn, tmp_path):
    data_dir = tmp_path / "data"
    node = start_fastdyn(data_dir=data_dir)
    r = redis.Redis(port=node.port)
    r.set("a", "1")
    r.set("b", "2", ex=1000)
    r.mset({f"k{i}": str(i) for i in range(500)})
    assert node.stop(signal.SIGTERM) == 0
    assert "data flushed and closed" in node.log()
    node2 = start_fastdyn(data_dir=data_dir, port=node.port)
    r = redis.Redis(port=node2.port)
    assert r.get("a") == b"1"
    assert 990 <= r.ttl("b") <= 1000
    assert r.dbsize() == 502
    assert node2.stop(signal.SIGINT) == 0


def test_sync_always_acknowledged_writes_survive_kill(start_fastdyn, tmp_path):
    data_dir = tmp_path / "data"
    node = start_fastdyn("--sync", "always", data_dir=data_dir)
    r = redis.Redis(port=node.port)
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.set(f"k{i}", f"v{i}")
    assert all(pipe.execute())
    assert r.incr("counter", 7) == 7
    node.kill()
    node2 = start_fastdyn(data_dir=data_dir, port=node.port)
    r = redis.Redis(port=node2.port)
    assert r.get("k299") == b"v299"
    assert r.get("counter") == b"7"
    assert r.dbsize() == 301


def test_sync_interval_acknowledged_writes_survive_process_kill(start_fastdyn, tmp_path):
    """Interval fsyncs once a second, but an acknowledged write is already in the OS."""
    data_dir = tmp_path / "data"
    node = start_fastdyn("--sync", "interval", data_dir=data_dir)
    r = redis.Redis(port=node.port)
    for i in range(50):
        r.set(f"k{i}", f"v{i}")
    node.kill()
    node2 = start_fastdyn(data_dir=data_dir, port=node.port)
    assert redis.Redis(port=node2.port).get("k49") == b"v49"


def test_second_server_on_same_data_dir_fails_clearly(start_fastdyn, tmp_path):
    data_dir = tmp_path / "data"
    start_fastdyn(data_dir=data_dir)
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "fastdyn", "serve", "--port", str(port),
                           "--data-dir", str(data_dir)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1
    assert str(data_dir) in proc.stderr


def test_config_file_and_flag_override(start_fastdyn, tmp_path):
    cfg = tmp_path / "fastdyn.toml"
    cfg.write_text('requirepass = "from-file"\nmax-value-bytes = 1000\nmaxclients = 50\n'
                   'n = 3\nr = 1\nw = 1\nseeds = "h1:17379,h2:17379"\n')
    node = start_fastdyn("--config", cfg, "--requirepass", "from-flag")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=node.port, password="from-file").ping()
    r = redis.Redis(port=node.port, password="from-flag")
    assert r.ping()
    with pytest.raises(redis.ResponseError, match="max-value-bytes"):
        r.set("big", b"x" * 1001)
    r.set("ok", b"x" * 1000)
    info = r.info()
    assert info["maxclients"] == 50
    cluster = r.info("cluster")
    assert cluster["fastdyn_n"] == 3 and cluster["fastdyn_n_effective"] == 1
    assert cluster["fastdyn_r_effective"] == 1 and cluster["fastdyn_w_effective"] == 1
    assert cluster["fastdyn_seeds"] == ["h1:17379", "h2:17379"]  # redis-py splits lists


@pytest.mark.parametrize("content, message", [
    ("bogus-key = 1\n", "unknown key 'bogus-key'"),
    ("port = 'abc'\n", "port must be a int"),
    ("sync = 'sometimes'\n", "sync"),
    ("this is not toml", "not valid TOML"),
])
def test_bad_config_file_is_a_clear_error(tmp_path, content, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "fastdyn", "serve", "--config", str(cfg),
                           "--data-dir", str(tmp_path / "d"), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_auth_flow(start_fastdyn):
    node = start_fastdyn("--requirepass", "s3cret")
    port = node.port
    assert raw(port, b"GET a\r\n") == b"-NOAUTH Authentication required.\r\n"
    assert raw(port, b"AUTH wrong\r\n") == \
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    assert raw(port, b"AUTH s3cret\r\nSET a 1\r\nGET a\r\n") == b"+OK\r\n+OK\r\n$1\r\n1\r\n"
    assert raw(port, b"AUTH default s3cret\r\nPING\r\n") == b"+OK\r\n+PONG\r\n"
    assert raw(port, b"AUTH someone s3cret\r\n").startswith(b"-WRONGPASS")
    assert raw(port, b"HELLO 3\r\n").startswith(b"-NOAUTH HELLO must be called")
    reply = raw(port, b"HELLO 3 AUTH default s3cret\r\nGET nokey\r\n")
    assert reply.startswith(b"%8\r\n") and reply.endswith(b"_\r\n")
    # redis-py, both protocols
    for protocol in (2, 3):
        r = redis.Redis(port=port, password="s3cret", protocol=protocol)
        assert r.get("a") == b"1"


def test_unauthenticated_clients_are_held_to_small_requests(start_fastdyn):
    node = start_fastdyn("--requirepass", "pw")
    assert raw(node.port, b"*11\r\n") == \
        b"-ERR Protocol error: unauthenticated multibulk length\r\n<closed>"
    assert raw(node.port, b"*2\r\n$3\r\nGET\r\n$16385\r\n") == \
        b"-ERR Protocol error: unauthenticated bulk length\r\n<closed>"
    # after AUTH the same requests are fine, even in the same packet
    big = b"x" * 20000
    reply = raw(node.port, b"AUTH pw\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\n"
                % (len(big), big))
    assert reply == b"+OK\r\n+OK\r\n"


def test_no_password_auth_messages(fastdyn_server):
    port = fastdyn_server.port
    assert raw(port, b"AUTH x\r\n").startswith(b"-ERR AUTH <password> called without any password")
    assert raw(port, b"AUTH default anything\r\n") == b"+OK\r\n"


def test_protected_mode_decision():
    assert is_loopback(("127.0.0.1", 5000))
    assert is_loopback(("127.3.4.5", 5000))
    assert is_loopback(("::1", 5000, 0, 0))
    assert is_loopback(None)
    assert not is_loopback(("10.0.0.8", 5000))
    assert not is_loopback(("192.168.1.1", 5000))
    assert not is_loopback(("2001:db8::1", 5000, 0, 0))


def test_maxclients(start_fastdyn):
    node = start_fastdyn("--maxclients", "3")
    held = [socket.create_connection((HOST, node.port)) for _ in range(3)]
    try:
        for s in held:
            assert raw(node.port, b"PING\r\n", sock=s) == b"+PONG\r\n"
        # the refusal comes at once, before the client says anything
        assert raw(node.port, b"") == b"-ERR max number of clients reached\r\n<closed>"
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert raw(node.port, b"PING\r\n") == b"+PONG\r\n"


def test_malformed_frame_closes_only_that_connection(fastdyn_server):
    port = fastdyn_server.port
    other = socket.create_connection((HOST, port))
    assert raw(port, b"SET a 1\r\n", sock=other) == b"+OK\r\n"
    assert raw(port, b"GET a\r\n*1\r\n$-5\r\n") == \
        b"$1\r\n1\r\n-ERR Protocol error: invalid bulk length\r\n<closed>"
    assert raw(port, b"GET a\r\n", sock=other) == b"$1\r\n1\r\n"
    other.close()


def test_bad_requests_keep_the_connection(fastdyn_server):
    port = fastdyn_server.port
    reply = raw(port, b"NOPE 1 2\r\nGET\r\nSET k v EX 0\r\nINCR\r\nSET k v\r\nGET k\r\n")
    assert reply == (b"-ERR unknown command 'NOPE', with args beginning with: '1' '2' \r\n"
                     b"-ERR wrong number of arguments for 'get' command\r\n"
                     b"-ERR invalid expire time in 'set' command\r\n"
                     b"-ERR wrong number of arguments for 'incr' command\r\n"
                     b"+OK\r\n$1\r\nv\r\n")


def test_bulk_length_cap(start_fastdyn):
    node = start_fastdyn("--max-bulk-bytes", "1000", "--max-value-bytes", "1000")
    assert raw(node.port, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1001\r\n") == \
        b"-ERR Protocol error: invalid bulk length\r\n<closed>"


def test_value_larger_than_max_value_bytes_is_refused(start_fastdyn):
    node = start_fastdyn("--max-value-bytes", "100")
    r = redis.Redis(port=node.port)
    for call in (lambda: r.set("k", b"x" * 101), lambda: r.execute_command("SETEX", "k", 10, b"x" * 101),
                 lambda: r.mset({"k": b"x" * 101}), lambda: r.getset("k", b"x" * 101)):
        with pytest.raises(redis.ResponseError, match="max-value-bytes"):
            call()
    r.set("k", b"x" * 100)
    with pytest.raises(redis.ResponseError, match="maximum allowed size"):
        r.append("k", b"y")
    assert r.strlen("k") == 100


def test_many_pipelined_commands_in_order(fastdyn_server):
    r = redis.Redis(port=fastdyn_server.port)
    pipe = r.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"k{i}", i)
        pipe.get(f"k{i}")
        pipe.incr("n")
    results = pipe.execute()
    assert results[1::3] == [str(i).encode() for i in range(2000)]
    assert results[2::3] == list(range(1, 2001))


def test_large_value_round_trip(fastdyn_server):
    r = redis.Redis(port=fastdyn_server.port)
    value = os.urandom(8 << 20)
    r.set("big", value)
    assert r.get("big") == value


def test_client_that_does_not_read_does_not_break_the_server(fastdyn_server):
    port = fastdyn_server.port
    r = redis.Redis(port=port)
    r.set("v", b"x" * 100_000)
    lazy = socket.create_connection((HOST, port))
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lazy.settimeout(5)
    try:
        for _ in range(50):
            lazy.sendall(b"GET v\r\n" * 20)
    except (socket.timeout, OSError):
        pass  # the server stopped reading us: back-pressure works
    assert r.ping()
    lazy.close()
    assert r.get("v") == b"x" * 100_000


def test_info_sections(fastdyn_server):
    r = redis.Redis(port=fastdyn_server.port)
    r.set("a", 1)
    r.set("b", 2, ex=100)
    info = r.info("everything")
    assert info["redis_version"] >= "7.2.0"
    assert info["fastdyn_version"]
    assert info["db0"] == {"keys": 2, "expires": 1, "avg_ttl": 0}
    assert info["connected_clients"] >= 1
    assert info["role"] == "master"
    assert info["fastdyn_n_effective"] == 1
    assert set(r.info("keyspace")) == {"db0"}


def test_help_lists_flags():
    proc = subprocess.run([sys.executable, "-m", "fastdyn", "serve", "--help"],
                          capture_output=True, text=True, timeout=30)
    for flag in ("--host", "--advertise", "--port", "--peer-port", "--data-dir", "--name",
                 "--seeds", "--n", "--r", "--w", "--partitions", "--sync", "--requirepass",
                 "--config"):
        assert flag in proc.stdout


def test_multi_key_write_with_a_bad_key_changes_nothing(fastdyn_server):
    r = redis.Redis(port=fastdyn_server.port)
    r.set("a", "old")
    for args in (("MSET", "a", "1", "", "2"), ("MSET", "a", "1", b"k" * 65537, "2"),
                 ("DEL", "a", ""), ("MSETNX", "new", "1", "", "2")):
        with pytest.raises(redis.ResponseError, match="key must be 1 to 65536 bytes"):
            r.execute_command(*args)
    assert r.get("a") == b"old"
    assert r.exists("new") == 0


def test_client_that_pipelines_big_reads_without_reading_is_paused(fastdyn_server):
    """300 GETs of a 1 MiB value arrive in one read; the node must not queue 300 MiB."""
    port = fastdyn_server.port
    r = redis.Redis(port=port)
    r.set("big", b"x" * (1 << 20))
    pid = fastdyn_server.proc.pid

    def rss():
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = rss()
    lazy = socket.create_connection((HOST, port))
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    lazy.sendall(b"GET big\r\n" * 300)
    time.sleep(1.0)
    assert rss() - before < 64 << 20
    assert r.ping()  # everyone else is served meanwhile
    # once the client reads, every reply arrives, in order
    expected = (b"$%d\r\n" % (1 << 20) + b"x" * (1 << 20) + b"\r\n") * 300
    got = bytearray()
    lazy.settimeout(10)
    while len(got) < len(expected):
        chunk = lazy.recv(1 << 20)
        assert chunk
        got += chunk
    assert bytes(got) == expected
    lazy.close()


@pytest.mark.parametrize("sync", ["always", "interval"])
def test_half_closed_client_gets_every_reply(start_fastdyn, sync):
    node = start_fastdyn("--sync", sync)
    s = socket.create_connection((HOST, node.port))
    s.sendall(b"SET a 1\r\n" * 100 + b"GET a\r\nPING\r\n")
    s.shutdown(socket.SHUT_WR)
    got = b""
    s.settimeout(10)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    assert got == b"+OK\r\n" * 100 + b"$1\r\n1\r\n+PONG\r\n"


def test_info_counts_expired_keys_once(fastdyn_server):
    r = redis.Redis(port=fastdyn_server.port)
    r.config_resetstat()
    for i in range(5):
        r.set(f"e{i}", "v", px=20)
    time.sleep(0.1)
    r.exists(*[f"e{i}" for i in range(5)])  # some were swept, the rest expire on this access
    time.sleep(0.2)
    assert r.info("stats")["expired_keys"] == 5


def test_repeated_sigterm_still_exits_cleanly(start_fastdyn):
    node = start_fastdyn()
    redis.Redis(port=node.port).set("k", "v")
    node.proc.send_signal(signal.SIGTERM)
    for _ in range(5):
        time.sleep(0.01)
        if node.proc.poll() is not None:
            break
        node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(20) == 0
