"""The client-side wire codec: RESP command encoding, RESP2/RESP3 and memcached reply readers."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdyn._client import INCOMPLETE, MemcacheReader, RespReader, encode_command, encode_pipeline
from fastdyn.errors import ProtocolError, ReplyError


# ---- a reference encoder/decoder written independently of the codec under test -------------

def parse_request(data: bytes):
    """Decodes one RESP array of bulk strings; returns (args, rest)."""
    assert data[:1] == b"*"
    line, _, rest = data[1:].partition(b"\r\n")
    args = []
    for _ in range(int(line)):
        assert rest[:1] == b"$"
        line, _, rest = rest[1:].partition(b"\r\n")
        n = int(line)
        args.append(rest[:n])
        assert rest[n:n + 2] == b"\r\n"
        rest = rest[n + 2:]
    return args, rest


def resp(value, resp3=False) -> bytes:
    """Encodes a Python value the way a server would reply."""
    if value is None:
        return b"_\r\n" if resp3 else b"$-1\r\n"
    if isinstance(value, ReplyError):
        return b"-" + str(value).encode() + b"\r\n"
    if isinstance(value, bool):
        return b"#t\r\n" if value else b"#f\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(resp(v, resp3) for v in value)
    if isinstance(value, dict):
        return b"%%%d\r\n" % len(value) + b"".join(resp(k, resp3) + resp(v, resp3)
                                                  for k, v in value.items())
    raise TypeError(value)


def same(a, b) -> bool:
    if isinstance(a, ReplyError) or isinstance(b, ReplyError):
        return type(a) is type(b) and str(a) == str(b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


error_text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
                     max_size=30).map(lambda s: ReplyError("ERR " + s))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 63 - 1),
                    st.binary(max_size=64), error_text)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5),
    st.dictionaries(st.binary(max_size=8), inner, max_size=4)), max_leaves=20)


def feed_in_chunks(reader, data: bytes, cuts):
    """Feeds data split at the given offsets, collecting every reply as soon as it is whole."""
    out, last = [], 0
    for cut in sorted(set(cuts)) + [len(data)]:
        reader.feed(data[last:cut])
        last = cut
        while (reply := reader.gets()) is not INCOMPLETE:
            out.append(reply)
    return out


# ---- encoding -------------------------------------------------------------------------------

@given(st.lists(st.one_of(st.binary(max_size=100), st.text(max_size=20),
                          st.integers(-10 ** 18, 10 ** 18)), min_size=1, max_size=10))
def test_encode_command_round_trips(args):
    encoded = encode_command(args)
    decoded, rest = parse_request(encoded)
    assert rest == b""
    expected = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    assert decoded == expected


def test_encode_pipeline_concatenates_commands():
    data = encode_pipeline([("SET", "k", b"v"), ("GET", "k")])
    first, rest = parse_request(data)
    second, rest = parse_request(rest)
    assert (first, second, rest) == ([b"SET", b"k", b"v"], [b"GET", b"k"], b"")


def test_encode_rejects_what_is_not_an_argument():
    with pytest.raises(TypeError):
        encode_command(["SET", "k", None])
    with pytest.raises(TypeError):
        encode_command(["SET", "k", True])
    with pytest.raises(ValueError):
        encode_command([])


# ---- RESP replies ---------------------------------------------------------------------------

@settings(max_examples=200)
@given(st.lists(values, min_size=1, max_size=8), st.booleans(), st.data())
def test_resp_replies_round_trip_through_any_split(replies, resp3, data):
    wire = b"".join(resp(r, resp3) for r in replies)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=6))
    got = feed_in_chunks(RespReader(), wire, cuts)
    assert len(got) == len(replies)
    for a, b in zip(replies, got):
        assert same(a, b), (a, b)


@given(st.lists(values, min_size=1, max_size=20), st.data())
def test_skip_counts_replies_errors_and_nils(replies, data):
    wire = b"".join(resp(r) for r in replies)
    cut = data.draw(st.integers(0, len(wire)))
    reader = RespReader()
    reader.feed(wire[:cut])
    counted = reader.skip()
    reader.feed(wire[cut:])
    counted += reader.skip()
    assert counted == len(replies)
    assert reader.errors == sum(isinstance(r, ReplyError) for r in replies)
    assert reader.nils == sum(r is None for r in replies)
    assert reader.pending == 0


def test_skip_respects_max_and_ignores_push_messages():
    reader = RespReader()
    reader.feed(b">2\r\n$7\r\nmessage\r\n$1\r\nx\r\n+OK\r\n:1\r\n:2\r\n")
    assert reader.skip(2) == 2
    assert reader.skip() == 1


def test_resp3_types():
    reader = RespReader()
    reader.feed(b",1.5\r\n(12345678901234567890\r\n=7\r\ntxt:abc\r\n!5\r\nERR x\r\n~2\r\n:1\r\n:2\r\n"
                b"|1\r\n+ttl\r\n:3\r\n+OK\r\n*-1\r\n")
    assert reader.gets() == 1.5
    assert reader.gets() == 12345678901234567890
    assert reader.gets() == b"abc"
    err = reader.gets()
    assert isinstance(err, ReplyError) and str(err) == "ERR x"
    assert reader.gets() == {1, 2}
    assert reader.gets() == b"OK"   # the attribute before it is dropped
    assert reader.gets() is None
    assert reader.gets() is INCOMPLETE


@pytest.mark.parametrize("bad", [b"?what\r\n", b"$abc\r\n", b"$3\r\nabcd\r\n", b"*-2\r\n",
                                 b"$-5\r\n", b"+OK\rX", b":12345678901234567890123\r\n"])
def test_malformed_replies_are_a_protocol_error(bad):
    reader = RespReader()
    reader.feed(bad)
    with pytest.raises(ProtocolError):
        reader.skip()
    reader = RespReader()
    reader.feed(bad)
    with pytest.raises(ProtocolError):
        reader.gets()


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_reader(data):
    for reader in (RespReader(), MemcacheReader()):
        reader.feed(data)
        try:
            while reader.gets() is not INCOMPLETE:
                pass
        except ProtocolError:
            pass


def test_deep_nesting_is_refused_not_a_stack_overflow():
    reader = RespReader()
    reader.feed(b"*1\r\n" * 100000 + b":1\r\n")
    with pytest.raises(ProtocolError):
        reader.skip()


# ---- memcached replies ----------------------------------------------------------------------

# memcached keys are printable ASCII without spaces or control characters
memcache_keys = st.lists(st.integers(33, 126), min_size=1, max_size=10).map(bytes)


@given(st.lists(st.one_of(
    st.lists(st.tuples(memcache_keys,
        st.integers(0, 2 ** 16), st.binary(max_size=50)), max_size=3),
    st.sampled_from([b"STORED", b"NOT_STORED", b"DELETED", b"NOT_FOUND", b"42"]),
    st.sampled_from([b"ERROR", b"CLIENT_ERROR bad data chunk", b"SERVER_ERROR out of memory"])),
    min_size=1, max_size=8), st.data())
def test_memcache_replies_round_trip(replies, data):
    wire = b""
    for r in replies:
        if isinstance(r, list):
            for key, flags, value in r:
                wire += b"VALUE %s %d %d\r\n%s\r\n" % (key, flags, len(value), value)
            wire += b"END\r\n"
        else:
            wire += r + b"\r\n"
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=5))
    got = feed_in_chunks(MemcacheReader(), wire, cuts)
    assert len(got) == len(replies)
    for want, have in zip(replies, got):
        if isinstance(want, list):
            assert have == want
        elif want.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")):
            assert isinstance(have, ReplyError) and str(have) == want.decode()
        else:
            assert have == want
    reader = MemcacheReader()
    reader.feed(wire)
    assert reader.skip() == len(replies)
    assert reader.errors == sum(isinstance(r, bytes) and r.startswith((b"ERROR", b"CLIENT_", b"SERVER_"))
                                for r in replies)
    assert reader.nils == sum(r == [] or r == b"NOT_FOUND" for r in replies)


@pytest.mark.parametrize("bad", [b"VALUE k 0 3\r\nabcd\r\nEND\r\n", b"VALUE k\r\n",
                                 b"VALUE k 0 3\r\nabc\r\nSTORED\r\n"])
def test_malformed_memcache_replies_are_a_protocol_error(bad):
    reader = MemcacheReader()
    reader.feed(bad)
    with pytest.raises(ProtocolError):
        reader.skip()


def test_memcache_value_with_bad_flags_is_a_protocol_error():
    reader = MemcacheReader()
    reader.feed(b"VALUE k x 3\r\nabc\r\nEND\r\n")
    assert reader.skip(0) == 0
    with pytest.raises(ProtocolError):
        reader.gets()


# ---- the small client on top of the codec ---------------------------------------------------

def test_parse_target():
    from fastdyn.client import parse_target

    t = parse_target("redis://user:p%40ss@127.0.0.1:6380/2")
    assert (t.scheme, t.host, t.port, t.username, t.password, t.db) == \
        ("redis", "127.0.0.1", 6380, "user", "p@ss", 2)
    assert parse_target("memcache://127.0.0.1").port == 11211
    assert parse_target("redis://:pw@localhost:7379").password == "pw"
    for bad, message in [("http://x:1", "scheme"), ("redis://:99999999", "port"),
                         ("redis://h:1/x", "database"), ("memcache://:pw@h:1", "password")]:
        with pytest.raises(ValueError, match=message):
            parse_target(bad)


def test_resp_client_against_redis(redis_server):
    from fastdyn.client import connect
    from fastdyn.errors import TargetUnavailable

    with connect(redis_server.url) as c:
        assert c.execute("SET", "k", b"\x00v\r\n") == b"OK"
        replies = c.pipeline([("GET", "k"), ("INCR", "k"), ("DEL", "k")])
        assert replies[0] == b"\x00v\r\n" and isinstance(replies[1], ReplyError)
        assert replies[2] == 1
        with pytest.raises(ReplyError, match="wrong number of arguments"):
            c.execute("GET")
    with pytest.raises(TargetUnavailable, match="refused AUTH"):
        connect(redis_server.url.replace("redis://", "redis://:nope@"))


def test_memcache_client(memcached_server):
    from fastdyn.client import connect

    with connect(f"memcache://127.0.0.1:{memcached_server.port}") as c:
        assert c.set(b"k", b"value") and c.get(b"k") == b"value"
        assert c.delete(b"k") and c.get(b"k") is None
        with pytest.raises(ReplyError):
            c.raw(b"bogus\r\n")
