"""Bad input: malformed frames, hostile lengths, random bytes, split frames, oversized requests.

After every case the node must still serve a second client and must have lost nothing that was
written before (sentinel keys written at the start are checked over another connection).
Malformed frames are also sent to a real redis-server: the error's first word and whether the
server closes the connection must match.
"""
import random
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from resp_client import RawClient, encode_command, error_word
from resp_servers import alive, start_fastdyn, start_redis

SENTINELS = {f"sentinel:{i}".encode(): bytes([i]) * (i + 1) + b"\r\n\x00" for i in range(50)}


class Node:
    """A fastdyn node with sentinel data and a long-lived witness connection."""

    def __init__(self, tmp, *flags, password=None):
        self.server = start_fastdyn(tmp, *flags)
        self.password = password
        self.witness = self._connect()
        for key, value in SENTINELS.items():
            assert self.witness.call("SET", key, value) == ("simple", b"OK")

    def _connect(self):
        c = RawClient(self.server.port)
        if self.password:
            assert c.call("AUTH", self.password) == ("simple", b"OK")
        return c

    def check_intact(self, context=""):
        """The node is up, serves the old connection and a new one, and lost no data."""
        assert alive(self.server), f"fastdyn died {context}:\n{self.server.log()[-3000:]}"
        assert self.witness.call("PING") == ("simple", b"PONG"), context
        with self._connect() as fresh:
            keys = list(SENTINELS)
            reply = fresh.call("MGET", *keys)
            assert reply == ("array", [("bulk", SENTINELS[k]) for k in keys]), context

    def close(self):
        self.witness.close()
        self.server.kill()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("fuzz"))
    yield n
    n.close()


@pytest.fixture(scope="module")
def redis_node(tmp_path_factory):
    s = start_redis(tmp_path_factory.mktemp("fuzz-redis"))
    yield s
    s.kill()


def _exchange(port, payload: bytes, password=None, timeout=3.0):
    """Send payload on a fresh connection; (replies, closed?).

    An error reply is reduced to its first word and whether it is a protocol error.
    """
    with RawClient(port) as c:
        if password:
            c.call("AUTH", password)
        try:
            c.send(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before reading everything: that is allowed
        replies, closed = c.read_until_closed(timeout)
    return [(error_word(r), b"Protocol error" in r[1]) if error_word(r) else r
            for r in replies], closed


QUIT = encode_command("QUIT")
MALFORMED = {
    "negative_multibulk_is_ignored": b"*-5\r\n" + encode_command("PING") + QUIT,
    "zero_multibulk_is_ignored": b"*0\r\n" + encode_command("PING") + QUIT,
    "huge_bulk_length": b"*1\r\n$999999999999\r\n",
    "bulk_over_512mib": b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870913\r\n",
    "multibulk_over_int_max": b"*2147483648\r\n",
    "negative_bulk_length": b"*1\r\n$-5\r\n",
    "null_bulk_in_request": b"*2\r\n$3\r\nGET\r\n$-1\r\n",
    "non_numeric_multibulk": b"*abc\r\n",
    "non_numeric_bulk": b"*1\r\n$x1\r\n",
    "nested_arrays": b"*1\r\n" * 1000 + b"$4\r\nPING\r\n",
    "integer_instead_of_bulk": b"*1\r\n:5\r\n",
    "simple_string_instead_of_bulk": b"*2\r\n$3\r\nGET\r\n+k\r\n",
    "unbalanced_quotes_inline": b'SET k "abc\r\n',
    "valid_then_malformed": encode_command("PING") + b"*1\r\n$-7\r\n",
    "huge_inline_line": b"a" * (1 << 20),
    "huge_inline_with_newline_later": b"SET k " + b"x" * (200 * 1024) + b"\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_frame_like_redis(node, redis_node, name):
    payload = MALFORMED[name]
    expected = _exchange(redis_node.port, payload)
    got = _exchange(node.server.port, payload)
    assert got == expected, f"redis: {expected}\nfastdyn: {got}"
    node.check_intact(name)


def test_unauthenticated_limits_like_redis(tmp_path):
    fast = Node(tmp_path, "--requirepass", "pw", password="pw")
    redis = start_redis(tmp_path, "--requirepass", "pw")
    cases = {
        "multibulk_over_10": b"*11\r\n" + b"$1\r\na\r\n" * 11,
        "bulk_over_16k": b"*2\r\n$3\r\nGET\r\n$16385\r\n" + b"k" * 16385 + b"\r\n",
        "big_set_value": encode_command("SET", "k", b"v" * (1 << 20)),
        "small_request_is_refused_not_closed": encode_command("GET", "k") + QUIT,
        "ten_args_allowed": encode_command(*["EXISTS"] + ["k"] * 9) + QUIT,
    }
    try:
        for name, payload in cases.items():
            expected = _exchange(redis.port, payload)
            got = _exchange(fast.server.port, payload)
            assert got == expected, f"{name}: redis: {expected}\nfastdyn: {got}"
            fast.check_intact(name)
    finally:
        redis.kill()
        fast.close()


def test_value_over_max_value_bytes_is_refused(node):
    with RawClient(node.server.port) as c:
        reply = c.call("SET", "too-big", b"x" * (16 * 1024 * 1024 + 1))
        assert error_word(reply) == b"ERR", reply
        reply = c.call("SET", "too-big", b"x" * (100 * 1024 * 1024))  # under the bulk cap
        assert error_word(reply) == b"ERR", reply
        assert c.call("GET", "too-big") == ("nullbulk",)
        reply = c.call("APPEND", "sentinel:1", b"x" * (16 * 1024 * 1024))
        assert error_word(reply) == b"ERR", reply
        limit = 16 * 1024 * 1024
        assert c.call("SET", "fits", b"y" * limit) == ("simple", b"OK")
        assert c.call("STRLEN", "fits") == ("int", limit)
        assert error_word(c.call("APPEND", "fits", b"z")) == b"ERR"
        assert c.call("SET", "grows", b"y" * (limit - 1)) == ("simple", b"OK")
        assert c.call("APPEND", "grows", b"z") == ("int", limit)
        assert c.call("GET", "grows") == ("bulk", b"y" * (limit - 1) + b"z")
        assert c.call("DEL", "fits", "grows") == ("int", 2)
    node.check_intact()


def test_pipelined_large_values(node):
    values = {f"large:{i}".encode(): bytes([i]) * (1 << 20) + b"\r\n" for i in range(40)}
    with RawClient(node.server.port) as c:
        assert c.pipeline([("SET", k, v) for k, v in values.items()]) == [("simple", b"OK")] * 40
        assert c.pipeline([("GET", k) for k in values]) == [("bulk", v) for v in values.values()]
        assert c.call("DEL", *values) == ("int", 40)
    node.check_intact()


def test_key_length_limits(node):
    """Keys are 1 B to 64 KiB (a documented difference: Redis also takes an empty key)."""
    longest = b"\xff" * (64 * 1024)
    with RawClient(node.server.port) as c:
        for command in (("SET", b"k" * (64 * 1024 + 1), "v"), ("GET", b"k" * (64 * 1024 + 1)),
                        ("SET", b"", "v"), ("MSET", "ok", "1", b"", "2"), ("INCR", b"")):
            assert error_word(c.call(*command)) == b"ERR", command
        assert c.call("EXISTS", "ok") == ("int", 0), "MSET failed but wrote a pair"
        assert c.call("SET", "keep", "v") == ("simple", b"OK")
        assert error_word(c.call("DEL", "keep", b"")) == b"ERR"
        assert c.call("EXISTS", "keep") == ("int", 1), "DEL failed but deleted a key"
        assert c.call("SET", longest, "v") == ("simple", b"OK")
        assert c.call("GET", longest) == ("bulk", b"v")
        assert c.call("KEYS", b"\xff*") == ("array", [("bulk", longest)])
        assert c.call("DEL", longest) == ("int", 1)
    node.check_intact()


SPLIT_PAYLOAD = b"".join([
    encode_command("DEL", "split:ctr", "split:bin"),
    encode_command("SET", "split:bin", b"\x00\r\n$5\r\n*1\r\n\xff"),
    b"GET split:bin\r\n",
    encode_command("INCR", "split:ctr"),
    encode_command("MGET", "split:bin", "split:none", "split:ctr"),
    b"PING\r\n",
    encode_command("ECHO", b""),
])
SPLIT_REPLIES = 7


def _replies(port, chunks, delay=0.0):
    with RawClient(port) as c:
        for chunk in chunks:
            c.send(chunk)
            if delay:
                time.sleep(delay)
        return [c.read_reply() for _ in range(SPLIT_REPLIES)]


def test_frames_split_at_every_offset(node, redis_node):
    _replies(redis_node.port, [SPLIT_PAYLOAD])  # the first run creates the keys DEL reports
    expected = _replies(redis_node.port, [SPLIT_PAYLOAD])
    _replies(node.server.port, [SPLIT_PAYLOAD])
    assert _replies(node.server.port, [SPLIT_PAYLOAD]) == expected
    for offset in range(1, len(SPLIT_PAYLOAD)):
        chunks = [SPLIT_PAYLOAD[:offset], SPLIT_PAYLOAD[offset:]]
        assert _replies(node.server.port, chunks, delay=0.002) == expected, f"split at {offset}"
    one_byte_writes = [SPLIT_PAYLOAD[i:i + 1] for i in range(len(SPLIT_PAYLOAD))]
    assert _replies(node.server.port, one_byte_writes, delay=0.0005) == expected
    node.check_intact()


COMMANDS = st.sampled_from([
    ("SET", "fz:a", "1"), ("GET", "fz:a"), ("INCR", "fz:n"), ("MGET", "fz:a", "fz:b"),
    ("SET", "fz:b", b"\x00\xff\r\n", "EX", "100"), ("PING",), ("ECHO", b"\r\n"),
    ("EXISTS", "fz:a", "fz:b"), ("GETEX", "fz:b", "PX", "5000"), ("SCAN", "0"),
    ("HELLO", "3"), ("HELLO", "2"), ("CLIENT", "SETNAME", "fz"), ("TTL", "fz:b"),
])


@st.composite
def mutated_requests(draw):
    """Valid pipelined commands with random corruption: flips, cuts, insertions."""
    data = bytearray(b"".join(encode_command(*c) for c in draw(st.lists(COMMANDS, max_size=6))))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "digits"]))
        if action == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[pos:pos + draw(st.integers(1, 20))]
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        else:
            data[pos:pos] = draw(st.sampled_from([b"-1", b"99999999999", b"2147483648", b"0",
                                                  b"-2147483649", b"\r\n", b"*", b"$"]))
    return bytes(data)


def _fire(port, payload: bytes):
    """Send payload, half-close, drain whatever comes back until the server closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except (socket.timeout, ConnectionError):
            pass
    finally:
        sock.close()


FUZZ_SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow])


@FUZZ_SETTINGS
@given(payload=st.binary(max_size=400))
def test_random_bytes(node, payload):
    _fire(node.server.port, payload)
    node.check_intact(f"after {payload!r}")


@FUZZ_SETTINGS
@given(payload=mutated_requests())
def test_mutated_requests(node, payload):
    _fire(node.server.port, payload)
    node.check_intact(f"after {payload!r}")


SLOW_FUZZ_SETTINGS = settings(max_examples=3000, deadline=None,
                              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                     HealthCheck.too_slow])


@pytest.mark.slow
@SLOW_FUZZ_SETTINGS
@given(payload=st.one_of(st.binary(max_size=2000), mutated_requests()))
def test_many_random_and_mutated_requests(node, payload):
    _fire(node.server.port, payload)
    node.check_intact(f"after {payload!r}")


def test_many_concurrent_garbage_connections(node):
    """Clients that send garbage and vanish mid-frame, all at once."""
    rng = random.Random(7)
    socks = []
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", node.server.port), timeout=2)
        s.sendall(rng.choice([b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\nabc",
                              b"*100\r\n", b"GET", bytes(rng.randrange(256) for _ in range(64))]))
        socks.append(s)
    node.check_intact("with 100 half-sent connections open")
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
    node.check_intact("after 100 connection resets")


def _open_fds(pid):
    import os
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="needs /proc")
def test_connection_churn_does_not_leak(node):
    """Clients that come and go (cleanly, by reset, mid-frame, after errors) leave nothing."""
    pid = node.server.proc.pid
    node.check_intact()
    baseline = _open_fds(pid)
    rng = random.Random(3)
    for i in range(400):
        s = socket.create_connection(("127.0.0.1", node.server.port), timeout=5)
        kind = i % 4
        if kind == 0:
            s.sendall(encode_command("SET", f"churn:{i}", "v") + QUIT)
            while s.recv(4096):
                pass
        elif kind == 1:
            s.sendall(b"*2\r\n$3\r\nGET\r\n$10\r\nabc")
        elif kind == 2:
            s.sendall(b"*1\r\n$-9\r\n")
        else:
            s.sendall(bytes(rng.randrange(256) for _ in range(32)))
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    deadline = time.monotonic() + 5
    while _open_fds(pid) > baseline + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _open_fds(pid) <= baseline + 2
    with RawClient(node.server.port) as c:
        text = c.call("INFO", "clients")[1].decode()
        clients = int(text.split("connected_clients:")[1].split()[0])
        assert clients <= 3, text  # the witness, this client, maybe one closing
    node.check_intact()


def test_connection_flood_over_maxclients_like_redis(tmp_path):
    redis = start_redis(tmp_path, "--maxclients", 5)
    fast = start_fastdyn(tmp_path, "--maxclients", 5)
    try:
        outcomes = []
        for server in (redis, fast):
            held = [RawClient(server.port) for _ in range(5)]
            for c in held:
                assert c.call("PING") == ("simple", b"PONG")
            with RawClient(server.port) as extra:
                replies, closed = extra.read_until_closed(timeout=3.0)
            for c in held:
                assert c.call("PING") == ("simple", b"PONG")
                c.close()
            time.sleep(0.3)
            with RawClient(server.port) as again:
                after = again.call("PING")
            outcomes.append(([(error_word(r), r[1]) for r in replies], closed, after))
        assert outcomes[0] == outcomes[1]
    finally:
        redis.kill()
        fast.kill()


def _rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs /proc")
def test_client_that_stops_reading_is_paused(node):
    """A client asks for ~300 MB of replies in 9 KB of requests and reads none: the node must
    hold back the rest of the pipeline instead of buffering every reply (else a few MB of
    requests exhaust its memory), keep serving others, and deliver every reply in order once
    the client reads."""
    value = bytes(range(256)) * 4096  # 1 MiB
    pid = node.server.proc.pid
    with RawClient(node.server.port) as c:
        assert c.call("SET", "slow:value", value) == ("simple", b"OK")
        baseline = _rss_bytes(pid)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        requests = b"".join(encode_command("GET", "slow:value") for _ in range(300))
        sender = threading.Thread(target=c.send, args=(requests,))
        sender.start()
        time.sleep(1.5)
        node.check_intact("while a client is not reading")
        growth = _rss_bytes(pid) - baseline
        assert growth < 120 * 1024 * 1024, f"the node buffered {growth >> 20} MiB of replies"
        for i in range(300):
            assert c.read_reply() == ("bulk", value), f"reply {i}"
        sender.join(10)
        assert c.call("DEL", "slow:value") == ("int", 1)
    node.check_intact()


def test_no_exception_was_logged(node):
    """Runs last in this module: nothing above may have raised inside the node, even where
    the node survived (asyncio logs unhandled callback exceptions with a traceback)."""
    node.check_intact()
    log = node.server.log()
    assert "Traceback" not in log and "Exception in callback" not in log, log[-5000:]
