"""The RESP codec (fastdyn._resp) and the glob matcher (fastdyn._glob), without sockets."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdyn._glob import GlobPattern
from fastdyn._resp import ReplyWriter, RequestParser, incr_float, parse_int


def encode_command(args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


commands = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=6), max_size=20)


@given(commands, st.data())
@settings(max_examples=300)
def test_round_trip_in_arbitrary_chunks(cmds, data):
    """However the stream is cut, the parser yields exactly the commands that were sent."""
    stream = b"".join(encode_command(c) for c in cmds)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    parser = RequestParser()
    got = []
    prev = 0
    for cut in cuts + [len(stream)]:
        got.extend(parser.parse(stream[prev:cut]))
        prev = cut
    assert got == cmds
    assert parser.error is None
    assert parser.buffered == 0


@given(commands)
def test_byte_by_byte(cmds):
    stream = b"".join(encode_command(c) for c in cmds)
    parser = RequestParser()
    got = []
    for i in range(len(stream)):
        got.extend(parser.parse(stream[i:i + 1]))
    assert got == cmds


def test_many_pipelined_commands_in_one_call():
    stream = encode_command([b"SET", b"k", b"v"]) * 1000 + b"PING\r\n" * 10
    got = RequestParser().parse(stream)
    assert len(got) == 1010
    assert got[0] == [b"SET", b"k", b"v"] and got[-1] == [b"PING"]


def test_limit_returns_at_most_n_and_keeps_the_rest():
    parser = RequestParser()
    assert parser.parse(b"PING\r\nPING\r\nPING\r\n", 1) == [[b"PING"]]
    assert parser.parse(b"", 0) == [[b"PING"], [b"PING"]]


def test_inline_quoting_like_redis_cli():
    parser = RequestParser()
    got = parser.parse(b'set "a b\\x41\\n" \'it\\\'s\'  plain\r\n  \r\nPING\n')
    assert got == [[b"set", b"a bA\n", b"it's", b"plain"], [b"PING"]]


def test_empty_frames_are_skipped():
    assert RequestParser().parse(b"*0\r\n*-1\r\n\r\nPING\r\n") == [[b"PING"]]


@pytest.mark.parametrize("stream, message", [
    (b"*abc\r\n", "Protocol error: invalid multibulk length"),
    (b"*3000000000\r\n", "Protocol error: invalid multibulk length"),
    (b"*1\r\nx\r\n", "Protocol error: expected '$', got 'x'"),
    (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$x\r\n", "Protocol error: invalid bulk length"),
    (b'"abc\r\n', "Protocol error: unbalanced quotes in request"),
    (b'"a"b\r\n', "Protocol error: unbalanced quotes in request"),
    (b"x" * 70000, "Protocol error: too big inline request"),
    (b"*1\r\n$" + b"1" * 70000, "Protocol error: too big bulk count string"),
])
def test_malformed_frames(stream, message):
    parser = RequestParser()
    assert parser.parse(stream) == []
    assert parser.error == message
    assert parser.parse(b"PING\r\n") == []  # nothing more is read on a broken connection


def test_commands_before_a_malformed_frame_are_returned():
    parser = RequestParser()
    assert parser.parse(b"PING\r\n*1\r\nx\r\n") == [[b"PING"]]
    assert parser.error.startswith("Protocol error")


def test_bulk_length_limit_and_unauthenticated_limits():
    parser = RequestParser(max_bulk=100)
    parser.parse(b"*1\r\n$101\r\n")
    assert parser.error == "Protocol error: invalid bulk length"
    parser = RequestParser(auth_required=True)
    parser.parse(b"*11\r\n")
    assert parser.error == "Protocol error: unauthenticated multibulk length"
    parser = RequestParser(auth_required=True)
    parser.parse(b"*1\r\n$16385\r\n")
    assert parser.error == "Protocol error: unauthenticated bulk length"
    parser = RequestParser(auth_required=True)
    assert parser.parse(b"*2\r\n$4\r\nAUTH\r\n$16384\r\n") == []
    assert parser.error is None


def test_query_buffer_limit():
    parser = RequestParser(max_query=1024)
    parser.parse(b"*1\r\n$2000\r\n" + b"x" * 1000)
    assert parser.error is None
    parser.parse(b"x" * 100)
    assert parser.error == "Protocol error: query buffer limit reached"


def test_large_bulk_in_pieces():
    value = bytes(range(256)) * 4096  # 1 MiB
    stream = encode_command([b"SET", b"k", value])
    parser = RequestParser()
    got = []
    for i in range(0, len(stream), 65536):
        got += parser.parse(stream[i:i + 65536])
    assert got == [[b"SET", b"k", value]]


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_fuzz_never_crashes(junk):
    """Any bytes either parse, wait for more, or give a protocol error; the parser survives."""
    parser = RequestParser(auth_required=True)
    out = parser.parse(junk)
    assert isinstance(out, list)
    for cmd in out:
        assert cmd and all(isinstance(a, bytes) for a in cmd)
    assert parser.error is None or parser.error.startswith("Protocol error: ")


def test_reply_writer_resp2_and_resp3():
    w = ReplyWriter()
    w.ok(); w.simple("PONG"); w.error("ERR bad\r\nthing"); w.integer(-7); w.bulk(b"ab")
    w.null(); w.null_array(); w.bulks([b"a", None]); w.map(1); w.boolean(True); w.dbl(1.5)
    assert w.take() == (b"+OK\r\n+PONG\r\n-ERR bad  thing\r\n:-7\r\n$2\r\nab\r\n$-1\r\n*-1\r\n"
                        b"*2\r\n$1\r\na\r\n$-1\r\n*2\r\n:1\r\n$3\r\n1.5\r\n")
    w.proto = 3
    w.null(); w.null_array(); w.map(2); w.set(1); w.boolean(False); w.dbl(2.0); w.verbatim("x")
    assert w.take() == b"_\r\n_\r\n%2\r\n~1\r\n#f\r\n,2\r\n=5\r\ntxt:x\r\n"
    assert w.take() == b""


@given(st.lists(st.one_of(st.binary(max_size=50), st.none()), max_size=30))
def test_bulks_decode_back(items):
    w = ReplyWriter()
    w.bulks(items)
    data = w.take()
    # decode with a minimal independent reader
    header, _, rest = data.partition(b"\r\n")
    assert header == b"*%d" % len(items)
    got = []
    while rest:
        head, _, rest = rest.partition(b"\r\n")
        n = int(head[1:])
        if n < 0:
            got.append(None)
        else:
            got.append(rest[:n])
            rest = rest[n + 2:]
    assert got == items


@pytest.mark.parametrize("text, value", [
    (b"0", 0), (b"-1", -1), (b"9223372036854775807", 2 ** 63 - 1),
    (b"-9223372036854775808", -2 ** 63), (b"9223372036854775808", None), (b"-0", None),
    (b"01", None), (b"+1", None), (b" 1", None), (b"1 ", None), (b"", None), (b"1.0", None),
])
def test_parse_int_is_strict_like_redis(text, value):
    assert parse_int(text) == value


@given(st.integers(-2 ** 63, 2 ** 63 - 1))
def test_parse_int_round_trip(n):
    assert parse_int(str(n).encode()) == n


def test_incr_float_matches_redis_long_double_output():
    assert incr_float(b"10.50", b"0.1") == b"10.6"
    assert incr_float(None, b"5.0e3") == b"5000"
    assert incr_float(b"0.1", b"0.2") == b"0.3"
    assert incr_float(b"3", b"-3") == b"0"
    with pytest.raises(ValueError, match="ERR value is not a valid float"):
        incr_float(b"abc", b"1")
    with pytest.raises(ValueError, match="ERR value is not a valid float"):
        incr_float(b"1", b" 1")
    with pytest.raises(ValueError, match="NaN or Infinity"):
        incr_float(b"1", b"inf")
    for bad in (b"1\x00abc", b"\x00", b"1e5000", b"1e-5000"):  # NUL bytes, out of range
        with pytest.raises(ValueError, match="ERR value is not a valid float"):
            incr_float(bad, b"1")


def redis_glob_reference(pattern: bytes, key: bytes) -> bool:
    """A regex translation valid for patterns without Redis' odd corners (no '[' or '\\')."""
    rx = b"".join(b".*" if c == ord("*") else b"." if c == ord("?") else re.escape(bytes([c]))
                  for c in pattern)
    return re.fullmatch(rx, key, re.S) is not None


@given(st.text("ab*?", max_size=8).map(str.encode), st.text("ab", max_size=10).map(str.encode))
@settings(max_examples=500)
def test_glob_star_and_question_mark(pattern, key):
    assert GlobPattern(pattern).match(key) == redis_glob_reference(pattern, key)


@pytest.mark.parametrize("pattern, key, expected", [
    (b"h?llo", b"hello", True), (b"h*llo", b"heeeello", True), (b"h[ae]llo", b"hallo", True),
    (b"h[ae]llo", b"hillo", False), (b"h[^e]llo", b"hallo", True), (b"h[^e]llo", b"hello", False),
    (b"h[a-b]llo", b"hbllo", True), (b"h[b-a]llo", b"hallo", True), (b"h\\*llo", b"h*llo", True),
    (b"h\\*llo", b"hxllo", False), (b"[abc", b"c", True), (b"[]", b"a", False),
    (b"a\\", b"a\\", True), (b"*", b"", True), (b"?", b"", False), (b"user:*:name", b"user:1:name", True),
])
def test_glob_redis_cases(pattern, key, expected):
    assert GlobPattern(pattern).match(key) is expected


def test_glob_filter():
    assert GlobPattern(b"k[12]").filter([b"k1", b"k2", b"k3"]) == [b"k1", b"k2"]
