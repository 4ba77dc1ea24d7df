"""A connection's guarantees at its edges: pipelines past back-pressure, malformed frames after
a pipeline, the query and output buffer limits, and storage errors, each against a real node."""
import asyncio
import os
import socket
import threading
import time

import pytest
import redis

from conftest import HOST


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def read_replies(sock, size: int, timeout: float = 10.0) -> bytes:
    """Read until `size` bytes arrived, the node closed (b'<closed>' marks it) or nothing came
    for `timeout` seconds."""
    sock.settimeout(timeout)
    got = bytearray()
    while len(got) < size:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            return bytes(got) + b"<reset>"
        except socket.timeout:
            return bytes(got)
        if not chunk:
            return bytes(got) + b"<closed>"
        got += chunk
    return bytes(got)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# -- pipelines that pass the output high-water mark -----------------------------------------

BIG = b"v" * 400_000
PIPELINE = b"GET big\r\n" * 4 + b"SET marker 1\r\nGET marker\r\n"
PIPELINE_REPLIES = bulk(BIG) * 4 + b"+OK\r\n" + bulk(b"1")


@pytest.mark.parametrize("password", ["", "pw"])
def test_pipeline_past_the_high_water_mark_runs_every_command(start_fastdyn, password):
    """Whether the pipeline follows AUTH in the same packet or not, every command runs and is
    answered, in order, though its replies pass 1 MiB."""
    node = start_fastdyn(*(("--requirepass", password) if password else ()))
    redis.Redis(port=node.port, password=password or None).set("big", BIG)
    auth = b"AUTH %s\r\n" % password.encode() if password else b""
    expected = (b"+OK\r\n" if password else b"") + PIPELINE_REPLIES
    with socket.create_connection((HOST, node.port)) as s:
        s.sendall(auth + PIPELINE + b"PING\r\n")
        assert read_replies(s, len(expected) + 7) == expected + b"+PONG\r\n"


@pytest.mark.parametrize("password", ["", "pw"])
def test_commands_before_a_malformed_frame_all_run_before_the_close(start_fastdyn, password):
    node = start_fastdyn(*(("--requirepass", password) if password else ()))
    r = redis.Redis(port=node.port, password=password or None)
    r.set("big", BIG)
    auth = b"AUTH %s\r\n" % password.encode() if password else b""
    expected = ((b"+OK\r\n" if password else b"") + PIPELINE_REPLIES
                + b"-ERR Protocol error: invalid bulk length\r\n")
    with socket.create_connection((HOST, node.port)) as s:
        s.sendall(auth + PIPELINE + b"*1\r\n$-5\r\nSET after 1\r\n")
        assert read_replies(s, len(expected) + 1) == expected + b"<closed>"
    assert r.get("marker") == b"1"
    assert r.get("after") is None


# -- the query buffer limit -----------------------------------------------------------------

def _send_until_cut(sock, chunk: bytes, limit: int) -> int:
    """Send chunk after chunk until the node cuts the connection; returns the bytes sent."""
    sent = 0
    try:
        while sent < limit:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    return sent


def test_arguments_of_an_unfinished_command_count_toward_the_query_buffer_limit(start_fastdyn):
    node = start_fastdyn("--max-query-bytes", str(1 << 20))
    before = rss(node.proc.pid)
    other = redis.Redis(port=node.port)
    with socket.create_connection((HOST, node.port)) as s:
        s.sendall(b"*2000000000\r\n")
        sent = _send_until_cut(s, b"$2\r\nab\r\n" * 8192, 48 << 20)
        # each 8-byte argument counts 2 bytes + 48: the limit is reached after ~170 KB sent
        assert sent < 48 << 20, "the node kept reading an unbounded command"
        assert read_replies(s, 1 << 20).endswith((b"<closed>", b"<reset>"))
    assert rss(node.proc.pid) - before < 64 << 20
    assert other.ping()
    assert "query buffer limit" in node.log()


def test_commands_queued_by_multi_count_toward_the_query_buffer_limit(start_fastdyn):
    node = start_fastdyn("--max-query-bytes", str(1 << 20))
    with socket.create_connection((HOST, node.port)) as s:
        s.sendall(b"MULTI\r\n")
        assert read_replies(s, 5) == b"+OK\r\n"
        value = b"x" * 60_000
        frame = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n" + bulk(value)
        _send_until_cut(s, frame, 48 << 20)
        reply = read_replies(s, 1 << 30)
        assert reply.count(b"+QUEUED\r\n") < 20
        assert reply.endswith(b"-ERR Protocol error: query buffer limit reached\r\n<closed>") \
            or reply.endswith(b"<reset>")
    assert redis.Redis(port=node.port).exists("k") == 0


# -- replies held for a group commit ----------------------------------------------------------

class _StalledFsync:
    """The node's store with an fsync that waits for `gate`: a slow disk under --sync always."""

    def __init__(self, store, gate):
        self._store, self._gate = store, gate

    def __getattr__(self, name):
        return getattr(self._store, name)

    def fsync(self):
        self._gate.wait()
        self._store.fsync()


def test_replies_held_for_a_group_commit_pause_a_client_that_does_not_read(tmp_path):
    """--sync always holds replies outside the transport until the fsync: while it runs, a
    client pipelining big reads must be paused, not have every reply buffered."""
    from fastdyn.server.config import ServerConfig
    from fastdyn.server.protocol import ClientConnection
    from fastdyn.server.assemble import assemble

    node = assemble(ServerConfig(data_dir=str(tmp_path / "data"), sync="always").finish())
    value = b"x" * 20_000
    node.coord.put(b"v", value)
    gate = threading.Event()
    node.commits.store = _StalledFsync(node.store, gate)
    loop = node.loop = asyncio.new_event_loop()
    listener = loop.run_until_complete(
        loop.create_server(lambda: ClientConnection(node), HOST, 0))
    port = listener.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever)
    thread.start()

    def held_bytes():
        async def measure():
            return sum(len(data) for _, _, data, _ in node.commits.waiting)
        return asyncio.run_coroutine_threadsafe(measure(), loop).result(5)

    try:
        with socket.create_connection((HOST, port)) as s:
            s.sendall(b"SET w 1\r\n" + b"GET v\r\n" * 2000)
            deadline = time.monotonic() + 10
            while held_bytes() < 1 << 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # the node runs what more it is willing to run while fsync stalls
            held = held_bytes()
            assert 1 << 20 <= held <= 4 << 20, f"{held} bytes held for one client"
            gate.set()
            expected = b"+OK\r\n" + bulk(value) * 2000
            assert read_replies(s, len(expected)) == expected
    finally:
        gate.set()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        listener.close()
        loop.run_until_complete(listener.wait_closed())
        loop.close()
        node.store.close()


@pytest.mark.parametrize("sync", ["always", "interval"])
def test_a_client_past_the_output_buffer_limit_is_disconnected(start_fastdyn, sync):
    """One EXEC answering 8 MB to a client that does not read, with a 1 MiB limit: the client
    is cut off (its transaction ran whole), the node and its other clients go on."""
    node = start_fastdyn("--max-output-bytes", str(1 << 20), "--sync", sync)
    r = redis.Redis(port=node.port)
    r.set("v", b"x" * 200_000)
    lazy = socket.create_connection((HOST, node.port))
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    lazy.sendall(b"MULTI\r\n" + b"GET v\r\n" * 40 + b"INCR n\r\nEXEC\r\n")
    time.sleep(0.5)  # the node runs the transaction; the client does not read yet
    got = read_replies(lazy, 16 << 20)
    lazy.close()
    assert got.endswith((b"<closed>", b"<reset>")) and len(got) < 8 << 20
    assert r.ping()
    assert r.get("n") == b"1"
    assert r.config_get("client-output-buffer-limit") == \
        {"client-output-buffer-limit": "normal 1048576 0 0"}
    assert "output buffer limit (1048576 bytes) reached" in node.log()


# -- storage errors -------------------------------------------------------------------------

def _corrupt_value(data_dir, value: bytes):
    """Flip one byte of `value` inside the segment file that holds it."""
    for name in sorted(os.listdir(data_dir)):
        if name.endswith(".data"):
            path = os.path.join(data_dir, name)
            with open(path, "r+b") as f:
                content = f.read()
                at = content.find(value)
                if at >= 0:
                    f.seek(at + len(value) // 2)
                    f.write(bytes([content[at + len(value) // 2] ^ 0xFF]))
                    return
    raise AssertionError("value not found in any segment")


def test_a_corrupt_record_answers_an_error_for_its_key_only(start_fastdyn, tmp_path):
    """A bit flips on disk under a running node (recovery would drop the record on a restart):
    each command reading it answers an error, the connection and every other key go on."""
    data_dir = tmp_path / "corrupt"
    node = start_fastdyn(data_dir=data_dir)
    value = b"precious-value-" * 8
    r = redis.Redis(port=node.port)
    r.set("bad", value)
    r.set("good", b"fine")
    _corrupt_value(data_dir, value)
    commands = [b"SET x 1", b"GET bad", b"GETEX bad PERSIST", b"GETEX bad", b"GETDEL bad",
                b"GETSET bad v", b"SET bad v GET", b"SET bad v NX", b"APPEND bad v",
                b"STRLEN bad", b"INCR bad", b"INCRBYFLOAT bad 1", b"MGET good bad",
                b"MULTI", b"GET bad", b"GET good", b"EXEC", b"GET good", b"PING"]
    with socket.create_connection((HOST, node.port)) as s:
        s.sendall(b"".join(c + b"\r\n" for c in commands))
        s.settimeout(10)
        got = b""
        while not got.endswith(b"+PONG\r\n"):
            chunk = s.recv(65536)
            assert chunk, f"connection closed after {got!r}"
            got += chunk
    lines = got.split(b"\r\n")
    assert lines[0] == b"+OK"
    errors = [line for line in lines if line.startswith(b"-")]
    # every read of the bad record fails alone; nothing else does
    assert len(errors) == 13
    assert all(b"checksum" in e and b"internal error" not in e for e in errors)
    assert got.endswith(b"$4\r\nfine\r\n$4\r\nfine\r\n+PONG\r\n")
    assert b"*2\r\n-ERR" in got  # EXEC: the bad key's error, then the good key's value
    assert r.get("x") == b"1"


# -- HELLO ----------------------------------------------------------------------------------

def test_a_hello_that_fails_authenticates_and_names_nobody(start_fastdyn):
    """Every option is checked before AUTH takes effect (Redis 7.2; 7.0 authenticated first)."""
    node = start_fastdyn("--requirepass", "pw")
    name_error = b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    noauth = b"-NOAUTH Authentication required.\r\n"
    with socket.create_connection((HOST, node.port)) as s:
        s.sendall(b'HELLO 3 AUTH default pw SETNAME "a b"\r\nGET k\r\n'
                  b'HELLO 3 SETNAME "a b" AUTH default pw\r\nGET k\r\n'
                  b'HELLO 3 AUTH default pw BOGUS\r\nGET k\r\n')
        expected = (name_error + noauth) * 2 + \
            b"-ERR Syntax error in HELLO option 'BOGUS'\r\n" + noauth
        assert read_replies(s, len(expected)) == expected
        # RESP2 still (the failed HELLO 3 switched nothing), and no name was set
        s.sendall(b"HELLO 2 AUTH default pw SETNAME ok\r\nCLIENT GETNAME\r\n"
                  b"HELLO 2 SETNAME x\x01y\r\nCLIENT GETNAME\r\nGET k\r\n")
        reply = read_replies(s, 1 << 16, timeout=2.0)
        assert reply.startswith(b"*16\r\n")
        assert reply.endswith(b"$2\r\nok\r\n" + name_error + b"$2\r\nok\r\n$-1\r\n")


def test_output_limit_below_the_pause_point_is_refused():
    from fastdyn.server.config import ConfigError, ServerConfig

    with pytest.raises(ConfigError, match="max-output-bytes: 1000 is below 1048576"):
        ServerConfig(max_output_bytes=1000).finish()
    assert ServerConfig(max_output_bytes=0).finish().max_output_bytes == 0
