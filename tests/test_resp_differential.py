"""Differential test: the same RESP bytes to a real redis-server and to fastdyn, same replies.

Every case of tests/resp_cases.py runs in four ways — one command at a time (RESP2), all
commands of the case pipelined in one write, as inline commands, and after `HELLO 3` (RESP3,
where reply *types* matter: `_` nulls, maps). Replies must be identical, except:
error replies compare their first word (ERR, WRONGTYPE, NOAUTH, ...); TTL-like replies compare
within a tolerance; KEYS compares as a multiset and SCAN as the set of keys a full iteration
returns; INFO, COMMAND, CLIENT ID and HELLO compare by shape.

redis-server runs with `--databases 1`, so that `SELECT 1` is an error on both servers.
"""
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from resp_servers import (alive, start_cluster_node as _start_cluster_node,
                          start_fastdyn as _start_fastdyn, start_redis as _start_redis)
from resp_cases import (CASES, FUTURE_MS, FUTURE_S, I64_MAX, I64_MIN, PAST_MS, PAST_S, ScanAll,
                        Sleep)
from resp_client import RawClient, ServerClosed, encode_command, error_word, scan_all

# Generous enough for a busy machine: test_ttl_rounding_and_absolute_expiry_exact checks
# TTL and EXPIRETIME arithmetic exactly.
TOLERANCE = {b"TTL": 1, b"EXPIRETIME": 1, b"PTTL": 500, b"PEXPIRETIME": 500}
HELLO_FIELDS = {b"server", b"version", b"proto", b"id", b"mode", b"role", b"modules"}


class _Servers:
    """redis-server and fastdyn: a single node, or node 0 of a 3-node cluster."""

    def __init__(self, tmp, target):
        self.tmp = tmp
        self.target = target
        self.redis = _start_redis(tmp)
        self.fastdyn = _start_fastdyn(tmp) if target == "single" else _start_cluster_node(tmp)

    def ensure_alive(self):
        """A crash in one case must not fail every later case: restart and say so."""
        if not alive(self.fastdyn):
            log = self.fastdyn.log()[-3000:]
            if self.target == "single":
                self.fastdyn = _start_fastdyn(self.tmp)
            else:
                self.fastdyn.kill()
                self.fastdyn = _start_cluster_node(self.tmp / f"restart-{time.monotonic_ns()}")
            return log
        return None

    def stop(self):
        self.redis.kill()
        self.fastdyn.kill()


@pytest.fixture(scope="module", params=["single", "cluster"])
def servers(tmp_path_factory, request):
    """Every test below runs against a single node, then against one node of a cluster."""
    s = _Servers(tmp_path_factory.mktemp("differential"), request.param)
    yield s
    s.stop()


# --- normalising and comparing replies -----------------------------------------------------

def _name(step):
    if isinstance(step, ScanAll):
        return b"SCAN", b""
    name = step[0].encode() if isinstance(step[0], str) else step[0]
    sub = step[1] if len(step) > 1 else b""
    sub = sub.encode() if isinstance(sub, str) else (sub if isinstance(sub, bytes) else b"")
    return name.upper(), sub.upper()


def _info_keyspace(text: bytes):
    for line in text.splitlines():
        if line.startswith(b"db0:"):
            fields = dict(kv.split(b"=") for kv in line[4:].split(b","))
            return int(fields[b"keys"]), int(fields[b"expires"])
    return 0, 0


def _hello_fields(reply):
    if reply[0] == "map":
        pairs = reply[1]
    elif reply[0] == "array":
        items = reply[1]
        pairs = list(zip(items[0::2], items[1::2]))
    else:
        return None
    return {k[1]: v for k, v in pairs}


def _reply_shape(reply):
    """The types of a reply and of its elements, without their values."""
    if reply[0] == "map":
        return ("map", [(_reply_shape(k), _reply_shape(v)) for k, v in reply[1]])
    if reply[0] in ("array", "set", "push"):
        return (reply[0], [_reply_shape(r) for r in reply[1]])
    return reply[0]


def _errors_by_first_word(reply):
    """Errors nested in arrays (an EXEC reply) compare by their first word too."""
    if reply[0] in ("error", "bloberror"):
        return ("error", error_word(reply))
    if reply[0] in ("array", "set", "push"):
        return (reply[0], [_errors_by_first_word(r) for r in reply[1]])
    return reply


def compare(step, r, f):
    """None when fastdyn's reply f matches redis' reply r for this step, else a reason."""
    if r == f:
        return None
    if r[0] == "error" or f[0] in ("error", "bloberror"):
        if error_word(r) != error_word(f):
            return "error replies differ"
        return None
    name, sub = _name(step)
    if name in TOLERANCE:
        if r[0] != f[0] or r[0] != "int":
            return "types differ"
        if r[1] < 0 or f[1] < 0:
            return None if r[1] == f[1] else "values differ"
        return None if abs(r[1] - f[1]) <= TOLERANCE[name] else "outside tolerance"
    if name == b"KEYS":
        if r[0] != f[0] or r[0] not in ("array", "set"):
            return "types differ"
        return None if sorted(r[1]) == sorted(f[1]) else "key lists differ"
    if name == b"INFO":
        if r[0] != f[0]:
            return "types differ"
        text = f[-1]
        if sub in (b"", b"KEYSPACE") and _info_keyspace(r[-1]) != _info_keyspace(text):
            return "keyspace section differs"
        if sub in (b"", b"SERVER") and b"redis_version:" not in text:
            return "no redis_version"
        return None
    if name == b"COMMAND":
        if r[0] != f[0]:
            return "types differ"
        if r[0] == "int" and not (f[1] > 0):
            return "COMMAND COUNT not positive"
        return None
    if name == b"CLIENT" and sub == b"ID":
        return None if r[0] == f[0] == "int" else "types differ"
    if (name == b"CLIENT" and sub in (b"LIST", b"INFO")) or name in (b"TIME", b"LASTSAVE") or \
            (name == b"MEMORY" and sub == b"USAGE"):
        # addresses, clocks and sizes differ: compare the kind of reply, and for client lists
        # whether any client is listed
        if _reply_shape(r) != _reply_shape(f):
            return "reply shapes differ"
        return None if name != b"CLIENT" or bool(r[-1]) == bool(f[-1]) else "one list is empty"
    if name == b"HELLO":
        if r[0] != f[0]:
            return "types differ"
        rf, ff = _hello_fields(r), _hello_fields(f)
        if ff is None or not HELLO_FIELDS <= set(ff):
            return "HELLO reply lacks fields"
        return None if rf[b"proto"] == ff[b"proto"] else "proto differs"
    return None if _errors_by_first_word(r) == _errors_by_first_word(f) else "replies differ"


# --- running cases -------------------------------------------------------------------------

def _inline_ok(arg) -> bool:
    b = arg.encode() if isinstance(arg, str) else str(arg).encode() if isinstance(arg, int) else arg
    return bool(b) and all(33 <= c < 127 and c not in b"\"'\\" for c in b)


def _inline_case(steps) -> bool:
    return all(isinstance(s, (Sleep, ScanAll)) or all(_inline_ok(a) for a in s) for s in steps)


def _encode(step, mode):
    if mode == "inline":
        words = (a.decode() if isinstance(a, bytes) else str(a) for a in step)
        return " ".join(words).encode() + b"\r\n"
    return encode_command(*step)


def _units(steps, mode):
    """Steps grouped as they are sent: one command at a time, or pipelined batches."""
    if mode != "pipelined":
        return [[s] for s in steps]
    units, batch = [], []
    for s in steps:
        if isinstance(s, (Sleep, ScanAll)):
            if batch:
                units.append(batch)
                batch = []
            units.append([s])
        else:
            batch.append(s)
    if batch:
        units.append(batch)
    return units


def _run_unit(client, unit, mode):
    if isinstance(unit[0], ScanAll):
        return [scan_all(client, *unit[0].options)]
    client.send(b"".join(_encode(s, mode) for s in unit))
    return [client.read_reply() for _ in unit]


def _fmt(reply, limit=160):
    text = repr(reply)
    return text if len(text) <= limit else text[:limit] + "..."


def run_differential(redis_port, fastdyn_port, steps, mode, setup=(("FLUSHALL",),)):
    """Run steps against both servers, interleaved unit by unit; returns mismatch lines."""
    mismatches = []
    with RawClient(redis_port) as rc, RawClient(fastdyn_port, timeout=5) as fc:
        prefix = list(setup) + ([("HELLO", 3)] if mode == "resp3" else [])
        for step in prefix:
            r, f = rc.call(*step), fc.call(*step)
            why = compare(step, r, f)
            if why:
                mismatches.append(f"setup {step!r}: {why}: redis={_fmt(r)} fastdyn={_fmt(f)}")
        index = 0
        for unit in _units(steps, mode):
            if isinstance(unit[0], Sleep):
                time.sleep(unit[0].seconds)
                index += 1
                continue
            r_replies = _run_unit(rc, unit, mode)
            try:
                f_replies = _run_unit(fc, unit, mode)
            except (ServerClosed, ConnectionError, TimeoutError) as exc:
                mismatches.append(f"step {index} {unit[0]!r}: no reply from fastdyn: {exc!r}")
                break
            for step, r, f in zip(unit, r_replies, f_replies):
                why = compare(step, r, f)
                if why:
                    mismatches.append(
                        f"step {index} {step!r}: {why}: redis={_fmt(r)} fastdyn={_fmt(f)}")
                index += 1
    return mismatches


MODES = ["steps", "pipelined", "inline", "resp3"]
PARAMS = [pytest.param(name, mode, id=f"{mode}-{name}")
          for mode in MODES for name in CASES
          if mode != "inline" or _inline_case(CASES[name])]


@pytest.mark.parametrize("case,mode", PARAMS)
def test_case_matches_redis(servers, case, mode):
    crash_log = servers.ensure_alive()
    assert crash_log is None, f"fastdyn had died before this case:\n{crash_log}"
    mismatches = run_differential(servers.redis.port, servers.fastdyn.port, CASES[case], mode)
    crash_log = servers.ensure_alive()
    assert crash_log is None, f"fastdyn died during this case:\n{crash_log}"
    assert not mismatches, "\n".join(mismatches)


# --- inline and framing details ------------------------------------------------------------

def _same_bytes_same_replies(servers, payload: bytes, nreplies: int):
    replies = []
    for port in (servers.redis.port, servers.fastdyn.port):
        with RawClient(port) as c:
            c.call("FLUSHALL")
            c.send(payload)
            replies.append([c.read_reply() for _ in range(nreplies)])
            replies[-1].append(c.call("PING"))
    return replies


def test_inline_quoting_and_blank_lines(servers):
    payload = (b"\r\n\r\nSET \"a b\" 'c d'\r\nGET \"a b\"\r\n"
               b"SET bin \"\\x41\\x00\\n\"\n"
               b"GET bin\nset   spaced    out\r\nget spaced\r\n  PING  \r\n")
    r, f = _same_bytes_same_replies(servers, payload, 7)
    for i, (a, b) in enumerate(zip(r, f)):
        assert compare(("X",), a, b) is None, f"reply {i}: redis={a!r} fastdyn={b!r}"


def test_mixed_inline_and_multibulk_in_one_write(servers, request):
    payload = (b"SET a 1\r\n" + encode_command("INCR", "a") + b"GET a\r\n"
               + encode_command("MGET", "a", "b") + b"DEL a\r\n")
    r, f = _same_bytes_same_replies(servers, payload, 5)
    assert r == f


def test_large_pipeline_in_one_write(servers, request):
    commands = []
    for i in range(2000):
        commands.append(("SET", f"key:{i}", f"value-{i}" * (i % 7)))
        commands.append(("INCR", f"counter:{i % 13}"))
        commands.append(("GET", f"key:{i // 2}"))
    commands.append(("DBSIZE",))
    replies = []
    for port in (servers.redis.port, servers.fastdyn.port):
        with RawClient(port) as c:
            c.call("FLUSHALL")
            replies.append(c.pipeline(commands))
    assert replies[0] == replies[1]


def test_quit_replies_ok_then_closes(servers):
    results = []
    for port in (servers.redis.port, servers.fastdyn.port):
        with RawClient(port) as c:
            c.send(encode_command("PING") + encode_command("QUIT") + encode_command("PING"))
            results.append(c.read_until_closed(timeout=3.0))
    assert results[0] == results[1] == ([("simple", b"PONG"), ("simple", b"OK")], True)


def test_unauthenticated_exec_matches_redis(tmp_path, start_fastdyn):
    redis = _start_redis(tmp_path, "--requirepass", "pw")
    fastdyn = start_fastdyn("--requirepass", "pw")
    try:
        steps = [("MULTI",), ("SET", "k", "v"), ("EXEC",), ("AUTH", "pw"), ("EXEC",)]
        mismatches = run_differential(redis.port, fastdyn.port, steps, "steps", setup=())
    finally:
        redis.kill()
    assert not mismatches, "\n".join(mismatches)


def test_requirepass_paths_match_redis(tmp_path, start_fastdyn):
    redis = _start_redis(tmp_path, "--requirepass", "s3cret")
    fastdyn = start_fastdyn("--requirepass", "s3cret")
    steps = [("GET", "k"), ("PING",), ("SET", "k", "v"), ("CLIENT", "SETNAME", "x"),
             ("FLUSHALL",), ("DEL", "k"), ("MULTI",), ("SET", "k", "v"), ("DISCARD",),
             ("HELLO", 3), ("HELLO",), ("COMMAND", "COUNT"), ("CLIENT", "ID"), ("ECHO", "x"),
             ("SELECT", 0), ("INFO",), ("NOSUCH",), ("AUTH", "wrong"),
             ("AUTH", "default", "wrong"), ("AUTH", "someone", "s3cret"), ("GET", "k"),
             ("HELLO", 3, "AUTH", "default", "wrong"), ("HELLO", 2), ("GET", "k"),
             ("AUTH", "s3cret"), ("SET", "k", "v"), ("GET", "k"), ("AUTH", "default", "s3cret"),
             ("AUTH", "wrong"), ("GET", "k")]
    try:
        mismatches = run_differential(redis.port, fastdyn.port, steps, "steps", setup=())
        with RawClient(redis.port) as rc, RawClient(fastdyn.port) as fc:
            for step in [("HELLO", 3, "AUTH", "default", "s3cret"), ("GET", "k"), ("PING",)]:
                r, f = rc.call(*step), fc.call(*step)
                why = compare(step, r, f)
                if why:
                    mismatches.append(f"{step!r}: {why}: redis={_fmt(r)} fastdyn={_fmt(f)}")
    finally:
        redis.kill()
    assert not mismatches, "\n".join(mismatches)


# --- random command sequences --------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", b"\x00k\r\n"])
VALUES = st.sampled_from(["", "0", "1", "-1", "41", "9223372036854775806", "abc", b"\x00\r\n\xff",
                          "01", " 1", "1.5"])
# Expiry arguments stay far from "now" (or in the past) so that a key cannot expire between
# the moment redis-server runs a command and the moment fastdyn does.
SECONDS = st.sampled_from([-5, 0, 1000, 100000, FUTURE_S, PAST_S, I64_MAX, "x", "+10", "1.5"])
MILLIS = st.sampled_from([-5, 0, 1000000, FUTURE_MS, PAST_MS, I64_MAX, I64_MIN, "010"])
DELTAS = st.sampled_from([0, 1, -1, 100, I64_MAX, I64_MIN, "x", "-0", "9223372036854775808"])
FLAGS = st.lists(st.sampled_from(["NX", "XX", "GT", "LT"]), max_size=2)
NX_XX = st.lists(st.sampled_from(["NX", "XX"]), max_size=2)
OFFSETS = st.sampled_from([0, 1, 2, 3, 7, 8, 15, 100, -1, -2, -9, -100, I64_MIN, "x"])


@st.composite
def commands(draw):
    k = draw(KEYS)
    kind = draw(st.integers(0, 20))
    if kind == 0:
        extra = []
        if draw(st.booleans()):
            unit = draw(st.sampled_from(["EX", "PX", "EXAT", "PXAT"]))
            extra += [unit, draw(SECONDS if unit in ("EX", "EXAT") else MILLIS)]
        extra += draw(st.lists(st.sampled_from(["NX", "XX", "KEEPTTL", "GET"]), max_size=2))
        extra = draw(st.permutations(extra))
        return ("SET", k, draw(VALUES), *extra)
    if kind == 1:
        return (draw(st.sampled_from(["GET", "GETDEL", "TTL", "PTTL", "EXPIRETIME",
                                      "PEXPIRETIME", "TYPE", "STRLEN", "PERSIST", "INCR",
                                      "DECR"])), k)
    if kind == 2:
        option = draw(st.sampled_from([[], ["PERSIST"], ["EX"], ["PX"], ["EXAT"], ["PXAT"]]))
        if option and option[0] != "PERSIST":
            option.append(draw(SECONDS if option[0] in ("EX", "EXAT") else MILLIS))
        return ("GETEX", k, *option)
    # GT/LT only with absolute times: "EXPIRE k 1000 GT" after "SET k v EX 1000" compares two
    # expiries that differ by the milliseconds between the commands, which are 0 or more.
    if kind == 3:
        name = draw(st.sampled_from(["EXPIRE", "EXPIREAT"]))
        return (name, k, draw(SECONDS), *draw(FLAGS if name == "EXPIREAT" else NX_XX))
    if kind == 4:
        name = draw(st.sampled_from(["PEXPIRE", "PEXPIREAT"]))
        return (name, k, draw(MILLIS), *draw(FLAGS if name == "PEXPIREAT" else NX_XX))
    if kind == 5:
        if draw(st.booleans()):
            return ("INCRBYFLOAT", k, draw(st.sampled_from(["0.1", "-2.5e3", "1e300", "inf", "3",
                                                            "x", "-0", "1.00000000000000001"])))
        return (draw(st.sampled_from(["INCRBY", "DECRBY"])), k, draw(DELTAS))
    if kind == 6:
        return ("APPEND", k, draw(VALUES))
    if kind == 7:
        return (draw(st.sampled_from(["SETNX", "GETSET"])), k, draw(VALUES))
    if kind == 8:
        return (draw(st.sampled_from(["SETEX"])), k, draw(SECONDS), draw(VALUES))
    if kind == 9:
        return ("PSETEX", k, draw(MILLIS), draw(VALUES))
    if kind == 10:
        return ("MGET", *draw(st.lists(KEYS, min_size=1, max_size=4)))
    if kind == 11:
        pairs = draw(st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=3))
        return (draw(st.sampled_from(["MSET", "MSETNX"])), *[x for p in pairs for x in p])
    if kind == 12:
        return (draw(st.sampled_from(["DEL", "UNLINK", "EXISTS", "TOUCH"])),
                *draw(st.lists(KEYS, min_size=1, max_size=4)))
    if kind == 13:
        return ("KEYS", draw(st.sampled_from(["*", "?", "[ab]", "[^a]", "\\x00*", "*\\n*"])))
    if kind == 14:
        return ScanAll(*draw(st.sampled_from([[], ["MATCH", "[a-b]"], ["COUNT", 1]])))
    if kind == 15:
        # Not DBSIZE: redis-server counts expired keys until its sweep or a lookup drops them.
        return ("KEYS", "*")
    if kind == 16:
        return (draw(st.sampled_from(["HELLO"])), draw(st.sampled_from([2, 3])))
    if kind == 17:
        name = draw(st.sampled_from(["GETRANGE", "SETRANGE", "GETBIT", "SETBIT"]))
        if name == "SETRANGE":
            return (name, k, draw(OFFSETS), draw(VALUES))
        if name == "SETBIT":
            return (name, k, draw(OFFSETS), draw(st.sampled_from([0, 1, 2])))
        return (name, k, draw(OFFSETS), *([draw(OFFSETS)] if name == "GETRANGE" else []))
    if kind == 18:
        name = draw(st.sampled_from(["BITCOUNT", "BITPOS"]))
        head = [draw(st.sampled_from([0, 1, 2]))] if name == "BITPOS" else []
        rng = draw(st.lists(OFFSETS, max_size=2))
        unit = draw(st.sampled_from([[], ["BIT"], ["BYTE"], ["x"]])) if len(rng) == 2 else []
        return (name, k, *head, *rng, *unit)
    if kind == 19:
        return ("LCS", k, draw(KEYS), *draw(st.sampled_from(
            [[], ["LEN"], ["IDX"], ["IDX", "WITHMATCHLEN"], ["IDX", "MINMATCHLEN", 2]])))
    return (draw(st.sampled_from(["RENAME", "RENAMENX", "COPY"])), k, draw(KEYS),
            *draw(st.sampled_from([[], ["REPLACE"]])))


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(commands(), min_size=1, max_size=25))
def test_random_command_sequences_match_redis(servers, steps):
    assert servers.ensure_alive() is None, "fastdyn died in an earlier example"
    mismatches = run_differential(servers.redis.port, servers.fastdyn.port, steps, "steps")
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["steps", "pipelined", "resp3"])
@settings(max_examples=3000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(commands(), min_size=1, max_size=40))
def test_many_random_command_sequences_match_redis(servers, mode, steps):
    assert servers.ensure_alive() is None, "fastdyn died in an earlier example"
    mismatches = run_differential(servers.redis.port, servers.fastdyn.port, steps, mode)
    assert not mismatches, "\n".join(mismatches)


# --- INFO as monitoring tools read it --------------------------------------------------------

MONITORED_FIELDS = [
    "redis_version", "redis_mode", "os", "arch_bits", "process_id", "tcp_port",
    "uptime_in_seconds", "uptime_in_days", "connected_clients", "blocked_clients", "maxclients",
    "used_memory", "used_memory_human", "used_memory_rss", "used_memory_peak", "maxmemory",
    "maxmemory_policy", "mem_fragmentation_ratio", "loading", "rdb_changes_since_last_save",
    "rdb_last_save_time", "aof_enabled", "total_connections_received",
    "total_commands_processed", "instantaneous_ops_per_sec", "keyspace_hits",
    "keyspace_misses", "expired_keys", "evicted_keys", "rejected_connections", "role",
    "connected_slaves", "run_id",
]


def _info_fields(client):
    text = client.call("INFO")[1].decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _stats(client):
    fields = _info_fields(client)
    return tuple(int(fields[f]) for f in ("keyspace_hits", "keyspace_misses", "expired_keys"))


STAT_PROBES = [
    ("SET", "hit", "v"), ("GET", "hit"), ("GET", "miss"), ("MGET", "miss", "hit"),
    ("EXISTS", "miss", "hit"), ("TTL", "miss"), ("TYPE", "hit"), ("STRLEN", "miss"),
    ("GETEX", "miss"), ("GETEX", "hit"), ("INCR", "counter"), ("SET", "s", "v", "GET"),
    ("APPEND", "ap", "x"), ("GETDEL", "miss"), ("GETSET", "gs", "v"), ("SETNX", "nx", "v"),
    ("EXPIRE", "miss", 10), ("KEYS", "*"), ("DEL", "miss"), ("PERSIST", "hit"),
    ("TOUCH", "miss", "hit"),
]


def test_info_fields_monitoring_tools_read(servers):
    """Exporters and dashboards read these fields; hits, misses and expired keys must count
    like redis-server, command by command."""
    per_server = []
    for port in (servers.redis.port, servers.fastdyn.port):
        with RawClient(port) as c:
            c.call("FLUSHALL")
            fields = _info_fields(c)
            missing = [f for f in MONITORED_FIELDS if f not in fields]
            assert not missing, f"INFO on port {port} lacks {missing}"
            deltas = []
            for step in STAT_PROBES:
                before = _stats(c)
                c.call(*step)
                deltas.append(tuple(b - a for a, b in zip(before, _stats(c))))
            c.pipeline([("SET", f"exp:{i}", "v", "PX", 50) for i in range(5)])
            time.sleep(0.3)
            before = _stats(c)
            c.call("EXISTS", *[f"exp:{i}" for i in range(5)])
            deltas.append(tuple(b - a for a, b in zip(before, _stats(c))))
            assert c.call("CONFIG", "RESETSTAT") == ("simple", b"OK")
            deltas.append(_stats(c))
            per_server.append(deltas)
    steps = STAT_PROBES + [("EXISTS", "<5 expired keys>"), ("CONFIG RESETSTAT", "then INFO")]
    diffs = [f"{step!r}: (hits, misses, expired) redis +{r} fastdyn +{f}"
             for step, r, f in zip(steps, *per_server) if r != f]
    assert not diffs, "\n".join(diffs)


def test_info_sections(servers):
    wanted = {"Server", "Clients", "Memory", "Persistence", "Stats", "Replication", "Keyspace"}
    for section, expected in [("all", wanted), ("everything", wanted), ("default", wanted),
                              ("server keyspace", {"Server", "Keyspace"}),
                              ("KEYSPACE", {"Keyspace"}), ("stats clients", {"Stats", "Clients"}),
                              ("nosuchsection", set())]:
        for port in (servers.redis.port, servers.fastdyn.port):
            with RawClient(port) as c:
                reply = c.call("INFO", *section.split())
            headers = {line[2:].strip() for line in reply[1].decode().splitlines()
                       if line.startswith("# ")}
            assert expected <= headers, f"INFO {section} on port {port}: {sorted(headers)}"
            if not expected:
                assert reply == ("bulk", b""), reply


def test_active_expiry_without_access(servers):
    """Expired keys leave DBSIZE even when nobody touches them (Redis' background sweep)."""
    for port in (servers.redis.port, servers.fastdyn.port):
        with RawClient(port) as c:
            c.call("FLUSHALL")
            c.pipeline([("SET", f"k{i}", "v", "PX", 100) for i in range(300)])
            c.call("SET", "stays", "v")
    time.sleep(2.0)
    for port in (servers.redis.port, servers.fastdyn.port):
        with RawClient(port) as c:
            assert c.call("DBSIZE") == ("int", 1), f"port {port}"


@pytest.mark.parametrize("target", ["redis", "fastdyn"])
def test_scan_guarantee_under_concurrent_writes(servers, target):
    """A full SCAN returns every key that existed for the whole iteration, even while other
    keys are added (the keyspace may grow and rehash) and deleted between calls."""
    port = servers.redis.port if target == "redis" else servers.fastdyn.port
    with RawClient(port) as c, RawClient(port) as writer:
        c.call("FLUSHALL")
        stable = {f"stable:{i}".encode() for i in range(2000)}
        writer.pipeline([("SET", k, "v") for k in stable])
        writer.pipeline([("SET", f"doomed:{i}", "v") for i in range(1000)])
        seen, cursor, calls, added = set(), b"0", 0, 0
        while True:
            reply = c.call("SCAN", cursor, "COUNT", 25)
            cursor = reply[1][0][1]
            seen.update(item[1] for item in reply[1][1][1])
            calls += 1
            writer.pipeline([("SET", f"new:{added + j}", "v") for j in range(60)])
            writer.call("DEL", *[f"doomed:{(calls * 7 + j) % 1000}" for j in range(7)])
            added += 60
            if cursor == b"0":
                break
            assert calls < 100000
    assert stable <= seen, f"{len(stable - seen)} keys that never changed were not returned"


def test_ttl_rounding_and_absolute_expiry_exact(servers):
    """TTL and EXPIRETIME round milliseconds to the nearest second ((ms + 500) / 1000);
    no tolerance: each PX value rounds the same way however late (up to ~400 ms) TTL runs,
    and 1999 -> 2 tells rounding from truncation, 1400 -> 1 rounding from ceiling."""
    steps = []
    for px in (400, 1400, 1999, 2999, 99999):
        steps += [("SET", f"k{px}", "v", "PX", px), ("TTL", f"k{px}")]
    for ms in (FUTURE_MS, FUTURE_MS + 1, FUTURE_MS + 499, FUTURE_MS + 500, FUTURE_MS + 999):
        steps += [("SET", "abs", "v", "PXAT", ms), ("EXPIRETIME", "abs"), ("PEXPIRETIME", "abs"),
                  ("PEXPIREAT", "abs", ms + 1), ("PEXPIRETIME", "abs"),
                  ("GETEX", "abs", "PXAT", ms + 2), ("PEXPIRETIME", "abs")]
    results = []
    for port in (servers.redis.port, servers.fastdyn.port):
        with RawClient(port) as c:
            c.call("FLUSHALL")
            results.append([c.call(*step) for step in steps])
    diffs = [f"{step!r}: redis={r!r} fastdyn={f!r}"
             for step, r, f in zip(steps, *results) if r != f]
    assert not diffs, "\n".join(diffs)


INLINE_CHARS = st.sampled_from(['a', 'b', ' ', '\t', '"', "'", '\\', 'x', '4', 'F', 'n', 'r',
                                't', '0'])


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=st.text(INLINE_CHARS, max_size=20))
def test_inline_argument_splitting_matches_redis(servers, text):
    """Inline commands split like redis-server: spaces and tabs, "double quotes" with \\x41,
    \\n, \\t escapes, 'single quotes', and unbalanced quotes closing the connection."""
    payload = b"ECHO " + text.encode() + b"\r\nPING\r\nQUIT\r\n"
    results = []
    for port in (servers.redis.port, servers.fastdyn.port):
        with RawClient(port) as c:
            c.send(payload)
            replies, closed = c.read_until_closed(timeout=3.0)
        results.append(([(error_word(r), b"Protocol error" in r[1]) if error_word(r) else r
                         for r in replies], closed))
    assert results[0] == results[1], f"redis={results[0]} fastdyn={results[1]}"


def test_very_long_argument_lists(servers):
    pairs = [x for i in range(20000) for x in (f"many:{i}", f"v{i}")]
    keys = [f"many:{i}" for i in range(0, 20000, 3)] + ["many:none"]
    replies = []
    for port in (servers.redis.port, servers.fastdyn.port):
        with RawClient(port) as c:
            c.call("FLUSHALL")
            replies.append([c.call("MSET", *pairs), c.call("MGET", *keys),
                            c.call("EXISTS", *keys), c.call("DEL", *keys), c.call("DBSIZE"),
                            c.call("MSETNX", *pairs)])
    assert replies[0] == replies[1]


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_config_get_as_tools_read_it(servers, resp3):
    """redis-benchmark and monitoring tools read a few settings with CONFIG GET."""
    replies = []
    for port in (servers.redis.port, servers.fastdyn.port):
        with RawClient(port) as c:
            if resp3:
                c.call("HELLO", 3)
            replies.append([c.call("CONFIG", "GET", name) for name in
                            ("maxclients", "databases", "nonexistent-setting")]
                           + [c.call("CONFIG", "GET", "maxclients", "databases")])
            for reply in replies[-1]:
                assert reply[0] == ("map" if resp3 else "array"), reply
            assert error_word(c.call("CONFIG", "GET")) == b"ERR"
    assert [_config_pairs(r) for r in replies[0]] == [_config_pairs(r) for r in replies[1]]


def _config_pairs(reply):
    """CONFIG GET's name/value pairs; their order is unspecified (redis-server's varies)."""
    if reply[0] == "map":
        return sorted(reply[1])
    items = reply[1]
    return sorted(zip(items[0::2], items[1::2]))


def test_nothing_after_quit_or_a_malformed_frame_runs(servers):
    payloads = [
        encode_command("SET", "a", "1") + encode_command("QUIT") + encode_command("SET", "b", "2"),
        encode_command("SET", "a", "1") + b"*1\r\n$-3\r\n" + encode_command("SET", "b", "2"),
        b"SET a 1\r\nQUIT\r\nSET b 2\r\n",
    ]
    for payload in payloads:
        outcomes = []
        for port in (servers.redis.port, servers.fastdyn.port):
            with RawClient(port) as c:
                c.call("FLUSHALL")
                c.send(payload)
                replies, closed = c.read_until_closed(timeout=3.0)
            with RawClient(port) as c:
                outcomes.append(([error_word(r) or r for r in replies], closed,
                                 c.call("MGET", "a", "b")))
        assert outcomes[0] == outcomes[1], payload
        assert outcomes[0][2] == ("array", [("bulk", b"1"), ("nullbulk",)])


def test_hello_describes_this_connection(servers):
    for port in (servers.redis.port, servers.fastdyn.port):
        with RawClient(port) as c, RawClient(port) as other:
            fields = {k[1]: v for k, v in c.call("HELLO", 3)[1]}
            assert fields[b"id"] == c.call("CLIENT", "ID")
            assert other.call("CLIENT", "ID")[1] > fields[b"id"][1]  # ids only grow
            assert fields[b"proto"] == ("int", 3)
            assert (fields[b"mode"], fields[b"role"], fields[b"modules"]) == (
                ("bulk", b"standalone"), ("bulk", b"master"), ("array", []))


def test_no_exception_was_logged(servers):
    """Runs last in this module: no command above raised inside fastdyn."""
    assert servers.ensure_alive() is None
    log = servers.fastdyn.log()
    assert "Traceback" not in log and "Exception in callback" not in log, log[-5000:]
