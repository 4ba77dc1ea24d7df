"""Durability of `fastdyn serve`: acknowledged writes survive kill -9 and clean shutdowns.

With `--sync always` a write is acknowledged only after it is on disk; with `interval` and
`never` after the log's write() reached the OS. So after kill -9 at any moment every
acknowledged SET, DEL and INCR must be there; a write that was sent but not yet acknowledged
may or may not be. SIGTERM and SIGINT flush and exit 0 under every sync policy.
"""
import random
import signal
import socket
import subprocess
import threading
import time

import pytest

from resp_client import RawClient, ServerClosed, encode_command


class Ledger:
    """What each key may hold: its last acknowledged value, then writes still in flight.

    A value of None is a deletion. Counters are tracked apart: an acknowledged INCR that
    returned n means the counter is at least n after a crash, and at most n plus the
    increments still in flight.
    """

    def __init__(self):
        self.acked = {}
        self.in_flight = {}
        self.counters = {}           # key -> (acknowledged value, increments in flight)
        self.lock = threading.Lock()
        self.acks = 0

    def sent(self, key, value):
        with self.lock:
            self.in_flight.setdefault(key, []).append(value)

    def acknowledged(self, key):
        # One connection per key and replies in order: the oldest in-flight write is acked.
        with self.lock:
            self.acked[key] = self.in_flight[key].pop(0)
            self.acks += 1

    def incr_sent(self, key):
        with self.lock:
            value, pending = self.counters.get(key, (0, 0))
            self.counters[key] = (value, pending + 1)

    def incr_acknowledged(self, key, value):
        with self.lock:
            _, pending = self.counters[key]
            self.counters[key] = (value, pending - 1)
            self.acks += 1

    def verify(self, port):
        """Compare with what the restarted node holds, then adopt it as the new truth."""
        keys = sorted(set(self.acked) | {k for k, v in self.in_flight.items() if v})
        counters = sorted(self.counters)
        with RawClient(port) as c:
            replies = c.pipeline([("GET", k) for k in keys + counters]) if keys + counters else []
        problems = []
        for key, reply in zip(keys, replies):
            value = reply[1] if reply[0] == "bulk" else None
            allowed = set(self.in_flight.get(key, []))
            allowed.add(self.acked.get(key))
            if value not in allowed:
                problems.append(f"{key!r}: found {value!r}, acknowledged "
                                f"{self.acked.get(key)!r}, in flight {self.in_flight.get(key)}")
            self.acked[key] = value
        for key, reply in zip(counters, replies[len(keys):]):
            value = int(reply[1]) if reply[0] == "bulk" else 0
            acked, pending = self.counters[key]
            if not acked <= value <= acked + pending:
                problems.append(f"counter {key!r}: found {value}, acknowledged {acked}, "
                                f"{pending} increments in flight")
            self.counters[key] = (value, 0)
        self.in_flight.clear()
        return problems


def _writer(port, ledger, prefix, round_no, rng_seed, stop):
    """Pipelines of SET, DEL and INCR on this writer's own keys until the node goes away."""
    rng = random.Random(rng_seed)
    seq = 0
    counter = f"{prefix}:counter".encode()
    try:
        with RawClient(port, timeout=30) as c:
            while not stop.is_set():
                batch = []
                for _ in range(rng.randint(1, 8)):
                    key = f"{prefix}:{rng.randrange(150)}".encode()
                    roll = rng.random()
                    if roll < 0.1:
                        batch.append(("DEL", key))
                        ledger.sent(key, None)
                    elif roll < 0.2:
                        batch.append(("INCR", counter))
                        ledger.incr_sent(counter)
                    else:
                        value = b"r%d-s%d-" % (round_no, seq) + rng.randbytes(rng.randrange(300))
                        seq += 1
                        batch.append(("SET", key, value))
                        ledger.sent(key, value)
                c.send(b"".join(encode_command(*cmd) for cmd in batch))
                for cmd in batch:
                    reply = c.read_reply()
                    if cmd[0] == "INCR":
                        assert reply[0] == "int", reply
                        ledger.incr_acknowledged(cmd[1], reply[1])
                    else:
                        assert reply in (("simple", b"OK"), ("int", 0), ("int", 1)), reply
                        ledger.acknowledged(cmd[1])
    except (ServerClosed, ConnectionError, OSError):
        pass  # the node went away


def _crash_rounds(start_fastdyn, data_dir, rounds, seed, sync="always", sig=signal.SIGKILL):
    rng = random.Random(seed)
    ledger = Ledger()
    for round_no in range(rounds):
        node = start_fastdyn("--sync", sync, data_dir=data_dir)
        problems = ledger.verify(node.port)
        assert not problems, f"after stop {round_no}:\n" + "\n".join(problems[:20])
        before = ledger.acks
        stop = threading.Event()
        writers = [threading.Thread(target=_writer, args=(node.port, ledger, f"w{i}", round_no,
                                                          rng.random(), stop))
                   for i in range(3)]
        for w in writers:
            w.start()
        time.sleep(rng.uniform(0.3, 1.0))
        if sig == signal.SIGKILL:
            node.kill()
            stop.set()
        else:
            # Writes are in flight when the signal lands; how fast the node then stops is
            # test_sigterm_under_continuous_load_exits_promptly's business.
            node.proc.send_signal(sig)
            time.sleep(0.2)
            stop.set()
            assert node.proc.wait(60) == 0, node.log()[-3000:]
        for w in writers:
            w.join(30)
        assert ledger.acks > before, f"round {round_no}: no write was acknowledged\n{node.log()}"
    node = start_fastdyn("--sync", sync, data_dir=data_dir)
    problems = ledger.verify(node.port)
    assert not problems, "after the last stop:\n" + "\n".join(problems[:20])
    assert any(v is not None for v in ledger.acked.values()), "nothing survived at all"
    assert node.stop() == 0, node.log()[-3000:]


@pytest.mark.parametrize("sync,rounds", [("always", 3), ("interval", 2), ("never", 2)])
def test_acknowledged_writes_survive_kill_9(start_fastdyn, tmp_path, sync, rounds):
    """A killed process loses nothing acknowledged under every policy (docs/protocol.md):
    `interval` and `never` reply after the turn's write() of the log, so the OS has it."""
    _crash_rounds(start_fastdyn, tmp_path / "node", rounds=rounds, seed=11, sync=sync)


@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_sigterm_under_load_keeps_every_acknowledged_write(start_fastdyn, tmp_path, sync):
    """A clean shutdown flushes what it acknowledged, whatever the sync policy."""
    _crash_rounds(start_fastdyn, tmp_path / "node", rounds=2, seed=5, sync=sync,
                  sig=signal.SIGTERM)


@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_acknowledged_flushall_survives_kill_9(start_fastdyn, tmp_path, sync):
    data_dir = tmp_path / "node"
    node = start_fastdyn("--sync", sync, data_dir=data_dir)
    with RawClient(node.port) as c:
        c.pipeline([("SET", f"old:{i}", "v") for i in range(500)])
        assert c.call("FLUSHALL") == ("simple", b"OK")
        assert c.call("SET", "new", "v") == ("simple", b"OK")
        assert c.call("SET", "old:7", "again") == ("simple", b"OK")
    node.kill()
    node = start_fastdyn("--sync", sync, data_dir=data_dir)
    with RawClient(node.port) as c:
        assert c.call("DBSIZE") == ("int", 2)
        assert c.call("MGET", "new", "old:7", "old:8") == (
            "array", [("bulk", b"v"), ("bulk", b"again"), ("nullbulk",)])
    assert node.stop() == 0


@pytest.mark.slow
def test_acknowledged_writes_survive_many_kill_9(start_fastdyn, tmp_path):
    _crash_rounds(start_fastdyn, tmp_path / "node", rounds=25, seed=29)


@pytest.mark.parametrize("sync", ["always", "interval", "never"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_clean_shutdown_keeps_everything(start_fastdyn, tmp_path, sync, sig):
    data_dir = tmp_path / "node"
    node = start_fastdyn("--sync", sync, data_dir=data_dir)
    values = {f"key:{i}".encode(): b"%d\x00\r\n" % i * (i % 50) for i in range(3000)}
    with RawClient(node.port) as c:
        c.pipeline([("SET", f"flushed:{i}", "old") for i in range(100)])
        assert c.call("FLUSHALL") == ("simple", b"OK")
        replies = c.pipeline([("SET", k, v) for k, v in values.items()])
        assert replies == [("simple", b"OK")] * len(values)
        assert c.call("DEL", "key:0", "key:1") == ("int", 2)
        assert c.call("SET", "ttl", "v", "EX", 1000) == ("simple", b"OK")
        assert c.call("SET", "short", "v", "PX", 200) == ("simple", b"OK")
        assert c.call("INCRBY", "counter", 41) == ("int", 41)
        assert c.call("APPEND", "key:2", "+") == ("int", len(values[b"key:2"]) + 1)
    assert node.stop(sig) == 0, node.log()
    time.sleep(0.3)  # "short" expires while the node is down

    node = start_fastdyn("--sync", sync, data_dir=data_dir)
    with RawClient(node.port) as c:
        keys = list(values)
        got = c.pipeline([("GET", k) for k in keys])
        assert got[0] == got[1] == ("nullbulk",)
        assert got[2] == ("bulk", values[b"key:2"] + b"+")
        assert got[3:] == [("bulk", values[k]) for k in keys[3:]]
        assert 990 <= c.call("TTL", "ttl")[1] <= 1000
        assert c.call("GET", "short") == ("nullbulk",)
        assert c.call("INCR", "counter") == ("int", 42)
        assert c.call("EXISTS", *[f"flushed:{i}" for i in range(100)]) == ("int", 0)
        assert c.call("DBSIZE") == ("int", len(values))  # -2 deleted, +ttl +counter
        keyspace = c.call("INFO", "keyspace")[1]
        assert f"db0:keys={len(values)},expires=1,".encode() in keyspace, keyspace
    assert node.stop() == 0, node.log()


def test_sigterm_with_a_half_sent_request_exits_promptly(start_fastdyn, tmp_path):
    data_dir = tmp_path / "node"
    node = start_fastdyn("--sync", "always", data_dir=data_dir)
    with RawClient(node.port) as c, RawClient(node.port) as idle:
        assert c.call("SET", "k", "v") == ("simple", b"OK")
        c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nz\r\n$100\r\nonly part of the value")
        assert idle.call("PING") == ("simple", b"PONG")
        started = time.monotonic()
        assert node.stop(signal.SIGTERM, timeout=15) == 0, node.log()[-3000:]
        assert time.monotonic() - started < 10
    node = start_fastdyn("--sync", "always", data_dir=data_dir)
    with RawClient(node.port) as c:
        assert c.call("MGET", "k", "z") == ("array", [("bulk", b"v"), ("nullbulk",)])


def test_second_server_on_the_same_data_dir_is_refused(start_fastdyn, tmp_path):
    data_dir = tmp_path / "node"
    first = start_fastdyn(data_dir=data_dir)
    with RawClient(first.port) as c:
        assert c.call("SET", "k", "v") == ("simple", b"OK")
    with pytest.raises(RuntimeError, match="(?i)lock|in use|another"):
        start_fastdyn(data_dir=data_dir)
    with RawClient(first.port) as c:
        assert c.call("SET", "k2", "v2") == ("simple", b"OK")
    assert first.stop() == 0
    node = start_fastdyn(data_dir=data_dir)
    with RawClient(node.port) as c:
        assert c.call("MGET", "k", "k2") == ("array", [("bulk", b"v"), ("bulk", b"v2")])


# --- a restart is invisible: fastdyn after kill -9 holds what redis-server holds -------------

RESTART_CASES = ["set_ex_px", "set_exat_pxat", "set_nx_xx", "set_keepttl", "set_get_option",
                 "setex_psetex_setnx", "getset_getdel", "getex", "mget_mset_msetnx",
                 "expire_basic", "expire_nx_xx_gt_lt", "expire_nonpositive_deletes",
                 "ttl_edges", "incr_decr", "incr_overflow", "append_strlen",
                 "binary_keys_values", "del_exists_unlink_touch", "dbsize_flush",
                 "multi_exec", "multi_runtime_errors_do_not_abort"]


def _state(client):
    """Every live key with its value and remaining lifetime in ms (-1: none)."""
    keys = sorted(item[1] for item in client.call("KEYS", "*")[1])
    state = {}
    for key in keys:
        value, pttl = client.pipeline([("GET", key), ("PTTL", key)])
        state[key] = (value, pttl[1])
    return state


def _same_state(redis_state, fastdyn_state):
    if set(redis_state) != set(fastdyn_state):
        return f"keys differ: redis={sorted(redis_state)} fastdyn={sorted(fastdyn_state)}"
    for key, (value, pttl) in redis_state.items():
        f_value, f_pttl = fastdyn_state[key]
        if value != f_value:
            return f"{key!r}: redis={value!r} fastdyn={f_value!r}"
        if ((pttl < 0 or f_pttl < 0) and pttl != f_pttl) or abs(pttl - f_pttl) > 500:
            return f"{key!r}: PTTL redis={pttl} fastdyn={f_pttl}"
    return None


def _restart_matches_redis(start_fastdyn, tmp_path, case_names):
    from resp_cases import CASES, ScanAll, Sleep
    from resp_servers import start_redis

    redis = start_redis(tmp_path)
    data_dir = tmp_path / "node"
    node = start_fastdyn("--sync", "always", data_dir=data_dir)
    problems, compared = [], 0
    try:
        for name in case_names:
            steps = [s for s in CASES[name] if not isinstance(s, (Sleep, ScanAll))]
            with RawClient(redis.port) as rc, RawClient(node.port) as fc:
                for c in (rc, fc):
                    c.call("FLUSHALL")
                    for step in steps:
                        c.call(*step)
            node.kill()
            node = start_fastdyn("--sync", "always", data_dir=data_dir)
            with RawClient(redis.port) as rc, RawClient(node.port) as fc:
                redis_state = _state(rc)
                why = _same_state(redis_state, _state(fc))
            compared += len(redis_state)
            if why:
                problems.append(f"{name}: {why}")
    finally:
        redis.kill()
    assert not problems, "\n".join(problems)
    assert compared >= 40  # the cases leave 48 keys in all


def test_restart_after_kill_9_is_invisible(start_fastdyn, tmp_path):
    _restart_matches_redis(start_fastdyn, tmp_path, RESTART_CASES)


@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "kill-9"])
def test_overwrites_through_merges_and_restart(start_fastdyn, tmp_path, crash):
    """~260 MB of overwrites fill and seal several 64 MiB segments, so the background merge
    runs while clients keep reading and writing; the latest values survive it and a restart,
    and neither flushed nor deleted keys come back."""
    data_dir = tmp_path / "node"
    node = start_fastdyn("--sync", "never", data_dir=data_dir)
    rng = random.Random(17)
    latest = {}
    flushed = [f"flushed:{i}" for i in range(500)]
    deleted = []
    with RawClient(node.port) as c:
        c.pipeline([("SET", k, b"old" * 100) for k in flushed])
        assert c.call("FLUSHALL") == ("simple", b"OK")
        for round_no in range(13):
            if round_no == 6:  # tombstones must outlive the merges of the values they delete
                deleted = [k for k in sorted(latest) if k.startswith(b"small:")][::3]
                assert c.call("DEL", *deleted) == ("int", len(deleted))
                for k in deleted:
                    del latest[k]
            batch = {f"big:{i}".encode(): rng.randbytes(1 << 20) for i in range(20)}
            assert c.pipeline([("SET", k, v) for k, v in batch.items()]) == [("simple", b"OK")] * 20
            latest.update(batch)
            small = {f"small:{round_no}:{i}".encode(): b"%d" % i for i in range(200)}
            c.pipeline([("SET", k, v) for k, v in small.items()])
            latest.update(small)
            probe = rng.sample(sorted(latest), 30)
            assert c.pipeline([("GET", k) for k in probe]) == [("bulk", latest[k]) for k in probe]
    if crash:
        node.kill()
    else:
        assert node.stop() == 0, node.log()[-3000:]
    node = start_fastdyn("--sync", "never", data_dir=data_dir)
    with RawClient(node.port) as c:
        keys = sorted(latest)
        assert c.call("DBSIZE") == ("int", len(keys))
        assert c.call("EXISTS", *flushed) == ("int", 0), "flushed keys came back"
        assert c.call("EXISTS", *deleted) == ("int", 0), "deleted keys came back"
        for i in range(0, len(keys), 100):
            chunk = keys[i:i + 100]
            assert c.pipeline([("GET", k) for k in chunk]) == [("bulk", latest[k]) for k in chunk]
    assert node.stop() == 0


def _hammer(port, stop, index, replies):
    """Pipelines of 20 SETs as fast as the node answers, until told to stop or cut off."""
    try:
        with RawClient(port, timeout=10) as c:
            n = 0
            while not stop.is_set():
                c.send(b"".join(encode_command("SET", f"h{index}:{n + i}", b"v" * 100)
                                for i in range(20)))
                for _ in range(20):
                    c.read_reply()
                n += 20
                replies[index] = n
    except (ServerClosed, ConnectionError, OSError):
        pass


@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_sigterm_under_continuous_load_exits_promptly(start_fastdyn, tmp_path, sync):
    """Clients that never pause must not hold a shutdown open (Redis stops at once).

    After the signal the node may answer what it had already read (one pipeline of 20 per
    client, 160 in all) and what arrives before its event loop runs the signal handler (a few
    turns on a loaded machine), not go on serving new requests: far less than a quarter of a
    second of the rate it served before the signal.
    """
    node = start_fastdyn("--sync", sync, data_dir=tmp_path / "node")
    stop = threading.Event()
    replies = [0] * 8
    writers = [threading.Thread(target=_hammer, args=(node.port, stop, i, replies))
               for i in range(8)]
    for w in writers:
        w.start()
    try:
        began = time.monotonic()
        time.sleep(0.7)
        at_signal = sum(replies)
        rate = at_signal / (time.monotonic() - began)
        assert at_signal > 0, "the writers got no replies before the signal"
        node.proc.send_signal(signal.SIGTERM)
        try:
            code = node.proc.wait(10)
        except subprocess.TimeoutExpired:
            code = None
        after = sum(replies) - at_signal
        assert after <= max(500, rate / 4), \
            f"{after} replies were sent after SIGTERM (at {rate:.0f} replies/s before it)"
        assert code == 0, "the node did not exit with 0 within 10 s of SIGTERM"
    finally:
        stop.set()
        for w in writers:
            w.join(30)


def test_writes_before_quit_or_protocol_error_are_acknowledged(start_fastdyn, tmp_path):
    """With --sync always, replies wait for the fsync; a QUIT or a malformed frame right after
    the writes must not close the connection before those replies go out."""
    node = start_fastdyn("--sync", "always", data_dir=tmp_path / "node")
    writes = [encode_command("SET", f"q:{i}", "v") for i in range(10)]
    for tail, last in ((encode_command("QUIT"), ("simple", b"OK")),
                       (b"*1\r\n$-5\r\n", ("error", b"ERR Protocol error: invalid bulk length"))):
        for _ in range(10):
            with RawClient(node.port) as c:
                c.send(b"".join(writes) + tail)
                replies, closed = c.read_until_closed(timeout=5)
            assert replies == [("simple", b"OK")] * 10 + [last] and closed, replies


@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_half_closed_client_gets_every_reply(start_fastdyn, tmp_path, sync):
    """A client may send its requests and shut down its side (nc -N, scripts): like
    redis-server, the node answers everything it received, then closes."""
    node = start_fastdyn("--sync", sync, data_dir=tmp_path / "node")
    for i in range(5):
        sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        sock.sendall(b"".join(encode_command("SET", f"half:{i}:{j}", "v") for j in range(100))
                     + encode_command("GET", f"half:{i}:7") + encode_command("PING"))
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        sock.close()
        assert received == b"+OK\r\n" * 100 + b"$1\r\nv\r\n+PONG\r\n", received[:200]


def test_clients_vanishing_during_group_commit(start_fastdyn, tmp_path):
    """Connections reset while their replies wait for the fsync leave the node serving."""
    node = start_fastdyn("--sync", "always", data_dir=tmp_path / "node")
    for i in range(60):
        sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        sock.sendall(b"".join(encode_command("SET", f"gone:{i}:{j}", b"v" * 50)
                              for j in range(300)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    with RawClient(node.port) as c:
        assert c.call("PING") == ("simple", b"PONG")
        assert c.call("SET", "after", "v") == ("simple", b"OK")
    assert node.stop() == 0, node.log()[-3000:]
    assert "Traceback" not in node.log(), node.log()[-3000:]


def test_repeated_sigterm_still_exits_cleanly(start_fastdyn, tmp_path):
    """An impatient operator (or init system) may signal again while the node shuts down:
    redis-server keeps shutting down and exits 0; so must fastdyn, with nothing lost."""
    data_dir = tmp_path / "node"
    for _ in range(3):
        node = start_fastdyn("--sync", "never", data_dir=data_dir)
        with RawClient(node.port) as c:
            c.pipeline([("SET", f"k{j}", b"v" * 100) for j in range(20000)])
        node.proc.send_signal(signal.SIGTERM)
        while node.proc.poll() is None:
            time.sleep(0.005)
            try:
                node.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                break
        assert node.proc.wait(20) == 0
    node = start_fastdyn("--sync", "never", data_dir=data_dir)
    with RawClient(node.port) as c:
        assert c.call("DBSIZE") == ("int", 20000)
