"""A single node runs GET and unconditional SET (plain, EX/PX, SETEX, PSETEX) straight from its
receive buffer (run_received in ext/_commands.pyx); every other form goes through the parser
and the command table. These
tests hold the two ways to the same answers: against redis-server for random pipelines split
at random points, and at the edges where the direct way must step aside (limits, malformed
lengths, MULTI, AUTH, values stored compressed, group commit)."""
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import info_fields
from resp_client import RawClient, encode_command, error_word
from resp_servers import start_fastdyn, start_redis


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("direct")
    redis = start_redis(tmp)
    node = start_fastdyn(tmp)
    yield node, redis
    node.kill()
    redis.kill()


def spelled(name: str, case: int) -> str:
    """A command name in one of the letter cases clients send."""
    return (name.upper(), name.lower(), name.capitalize())[case % 3]


keys = st.sampled_from([b"k", b"\x00\r\n", b"x" * 300])
values = st.one_of(st.binary(max_size=300), st.binary(min_size=100, max_size=3000), st.just(b""),
                   st.just(b"v" * 5000),                         # stored compressed
                   st.just(random.Random(1).randbytes(5000)),    # too random to compress
                   st.just(random.Random(2).randbytes(300 << 10)))   # past the copy limit
# expiry amounts far enough ahead not to pass during a test, and ones the command refuses
amounts = st.one_of(st.integers(100000, 10 ** 12), st.sampled_from([0, -1, 10 ** 13, "01", "x"]))
ops = st.one_of(
    st.tuples(st.just("GET"), keys),
    st.tuples(st.just("SET"), keys, values),
    st.tuples(st.just("SET"), keys, values, st.sampled_from(["EX", "px", "Ex"]), amounts),
    st.tuples(st.sampled_from(["SETEX", "PSETEX"]), keys, amounts, values),
    # commands the direct way leaves to the table, between the ones it takes
    st.tuples(st.just("STRLEN"), keys),
    st.tuples(st.just("APPEND"), keys, st.binary(max_size=8)),
    st.tuples(st.just("SET"), keys, st.binary(max_size=8), st.just("XX")),
    st.tuples(st.just("GET"), keys, keys),            # wrong arity
)


def run_pipeline(port, frames, cuts):
    """Send the frames as one byte stream cut at `cuts`, pausing at each cut so that the
    server sees partial frames; the replies, one per frame."""
    data = b"".join(frames)
    with RawClient(port) as c:
        c.send(encode_command("FLUSHALL"))
        assert c.read_reply() == ("simple", b"OK")
        last = 0
        for cut in sorted({min(x, len(data)) for x in cuts}):
            c.send(data[last:cut])
            time.sleep(0.002)
            last = cut
        c.send(data[last:])
        return [c.read_reply() for _ in frames]


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(ops, st.integers(0, 2)), min_size=4, max_size=40),
       st.lists(st.integers(0, 20000), max_size=6))
def test_pipelines_answer_as_redis_does(pair, commands, cuts):
    node, redis = pair
    frames = [encode_command(spelled(op[0], case), *op[1:]) for op, case in commands]
    assert run_pipeline(node.port, frames, cuts) == run_pipeline(redis.port, frames, cuts)


@pytest.mark.parametrize("frame", [
    b"*2\r\n$3\r\nGET\r\n$01\r\nk\r\n",          # a leading zero
    b"*2\r\n$3\r\nGET\r\n$-1\r\n",                 # a negative length
    b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$+1\r\nv\r\n",  # a sign
    b"*2\r\n$3\r\nGET\r\n$1 \r\nk\r\n",            # a space
])
def test_malformed_frames_answer_as_redis_does(pair, frame):
    node, redis = pair
    answers = []
    for server in (node, redis):
        with RawClient(server.port) as c:
            c.send(encode_command("SET", "k", "v") + frame + encode_command("GET", "k"))
            replies, closed = c.read_until_closed(timeout=1.0)
            answers.append(([error_word(r) or r for r in replies], closed))
    assert answers[0] == answers[1]


def test_limits_are_the_parsers_and_the_stores(tmp_path):
    node = start_fastdyn(tmp_path, "--max-value-bytes", "16", "--max-bulk-bytes", "100")
    try:
        with RawClient(node.port) as c:
            assert c.call("SET", "k", b"v" * 16) == ("simple", b"OK")
            refused = c.call("SET", "k", b"v" * 17)
            assert refused[0] == "error" and refused[1].startswith(b"ERR")
            assert c.call("GET", "k") == ("bulk", b"v" * 16)
            assert c.call("SET", b"q" * 100, "v") == ("simple", b"OK")
            c.send(encode_command("GET", b"q" * 101))
            assert c.read_reply() == ("error", b"ERR Protocol error: invalid bulk length")
            assert c.read_until_closed() == ([], True)
    finally:
        node.kill()


def test_longest_key(fastdyn_server):
    with RawClient(fastdyn_server.port) as c:
        longest = b"k" * 65536
        assert c.call("SET", longest, "v") == ("simple", b"OK")
        assert c.call("GET", longest) == ("bulk", b"v")
        too_long = c.call("SET", longest + b"k", "v")
        assert too_long[0] == "error"
        assert c.call("GET", longest + b"k")[0] == "error"
        assert c.call("GET", "")[0] == "error"            # keys are 1 B .. 64 KiB
        assert c.call("PING") == ("simple", b"PONG")    # the connection goes on


def test_multi_queues_and_auth_comes_first(tmp_path):
    node = start_fastdyn(tmp_path, "--requirepass", "pw")
    try:
        with RawClient(node.port) as c:
            assert c.call("SET", "k", "v")[1].startswith(b"NOAUTH")
            assert c.call("GET", "k")[1].startswith(b"NOAUTH")
            assert c.call("AUTH", "pw") == ("simple", b"OK")
            replies = c.pipeline([("MULTI",), ("SET", "k", "1"), ("GET", "k"), ("EXEC",),
                                  ("GET", "k")])
            assert replies == [("simple", b"OK"), ("simple", b"QUEUED"), ("simple", b"QUEUED"),
                               ("array", [("simple", b"OK"), ("bulk", b"1")]), ("bulk", b"1")]
    finally:
        node.kill()


def test_counted_in_info(fastdyn_server):
    port = fastdyn_server.port
    with RawClient(port) as c:
        c.call("CONFIG", "RESETSTAT")
        c.pipeline([("SET", "a", "1"), ("GET", "a"), ("GET", "nope"), ("get", "a")])
    stats = info_fields(port, "stats")
    assert int(stats["keyspace_hits"]) == 2
    assert int(stats["keyspace_misses"]) == 1
    assert int(stats["total_commands_processed"]) >= 5


def test_group_commit_holds_direct_replies(tmp_path):
    """Under --sync always a SET's OK (and a GET that may have read it) leaves only after the
    fsync; killed right after the replies, the node still has every acknowledged write."""
    node = start_fastdyn(tmp_path, "--sync", "always")
    try:
        with RawClient(node.port) as c:
            frames = [("SET", f"k{i}", f"v{i}") for i in range(200)] + [("GET", "k199")]
            replies = c.pipeline(frames)
        assert replies[:-1] == [("simple", b"OK")] * 200 and replies[-1] == ("bulk", b"v199")
        node.kill()
        node.start()
        with RawClient(node.port) as c:
            assert c.pipeline([("GET", f"k{i}") for i in range(200)]) == \
                [("bulk", b"v%d" % i) for i in range(200)]
    finally:
        node.kill()


def test_a_pipeline_larger_than_the_output_limit_is_answered_in_full(fastdyn_server):
    """Past the output high-water mark (1 MiB of replies in one batch) the rest of the batch
    waits for the client to read."""
    with RawClient(fastdyn_server.port) as c:
        value = b"x" * 3000
        assert c.call("SET", "big", value) == ("simple", b"OK")
        n = 2000                                   # about 6 MB of replies
        c.send(encode_command("GET", "big") * n + encode_command("PING"))
        time.sleep(0.3)
        for _ in range(n):
            assert c.read_reply() == ("bulk", value)
        assert c.read_reply() == ("simple", b"PONG")


def test_expiry_forms(fastdyn_server):
    with RawClient(fastdyn_server.port) as c:
        replies = c.pipeline([("SET", "a", "1", "PX", 300), ("SETEX", "b", 100, "2"),
                              ("PSETEX", "c", 300, "3"), ("set", "d", "4", "ex", 100),
                              ("PTTL", "a"), ("TTL", "b"), ("PTTL", "c"), ("TTL", "d")])
        assert replies[:4] == [("simple", b"OK")] * 4
        assert 0 < replies[4][1] <= 300 and 99 <= replies[5][1] <= 100
        assert 0 < replies[6][1] <= 300 and 99 <= replies[7][1] <= 100
        time.sleep(0.4)
        assert c.pipeline([("GET", k) for k in "abcd"]) == \
            [("nullbulk",), ("bulk", b"2"), ("nullbulk",), ("bulk", b"4")]
