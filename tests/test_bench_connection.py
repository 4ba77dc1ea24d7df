"""The load generator's connection hot path, driven without a network through a fake transport."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdyn import _bench
from fastdyn.bench import workload


class FakeTransport:
    def __init__(self):
        self.sent = b""
        self.aborted = False

    def write(self, data):
        self.sent += data

    def abort(self):
        self.aborted = True

    def take(self):
        data, self.sent = self.sent, b""
        return data


def parse_requests(data: bytes):
    out = []
    while data:
        line, _, data = data[1:].partition(b"\r\n")
        args = []
        for _ in range(int(line)):
            line, _, data = data[1:].partition(b"\r\n")
            n = int(line)
            args.append(data[:n])
            data = data[n + 2:]
        out.append(args)
    return out


def make(mix, pipeline=4, budget=-1, setup=()):
    wl = workload.build(mix=mix, keys=100, key_dist="uniform")
    gen = _bench.Generator(**wl.generator_args("resp", 0, 1, 1))
    from fastdyn._client import encode_pipeline
    w = _bench.Worker(gen, pipeline=pipeline, budget=budget,
                      setup=encode_pipeline(setup) if setup else b"", setup_count=len(setup))
    conn = w.connection()
    t = FakeTransport()
    conn.connection_made(t)
    return w, conn, t


def feed(conn, data: bytes, cuts):
    last = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        if cut > last:
            conn.data_received(data[last:cut])
        last = cut


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(1, 40), st.data())
def test_replies_split_anywhere_are_each_counted_once(pipeline, budget, data):
    w, conn, t = make("get=1,set=1", pipeline=pipeline, budget=budget)
    done = []
    w.on_done = lambda: done.append(True)
    w.start(_bench.now_ns())
    answered = nils = 0
    while True:
        requests = parse_requests(t.take())
        if not requests:
            break
        assert len(requests) <= pipeline and conn.outstanding == len(requests)
        replies = b""
        for args in requests:
            if args[0] == b"SET":
                replies += b"+OK\r\n"
            elif data.draw(st.booleans()):
                replies += b"$-1\r\n"
                nils += 1
            else:
                replies += b"$3\r\nabc\r\n"
        cuts = data.draw(st.lists(st.integers(0, len(replies)), max_size=4))
        feed(conn, replies, cuts)
        answered += len(requests)
    snap = w.stats.take()
    assert answered == budget
    assert int(snap["ok"].sum()) == budget and int(snap["errors"].sum()) == 0
    assert int(snap["nils"].sum()) == nils
    assert int(snap["hist"].sum()) == budget
    assert done == [True] and conn.outstanding == 0


def test_dyn_read_modify_write_carries_the_context():
    w, conn, t = make("dyn_rmw=1", pipeline=1, budget=1)
    w.start(_bench.now_ns())
    [get] = parse_requests(t.take())
    assert get[0] == b"DYN.GET"
    conn.data_received(b"*2\r\n$5\r\nctx-1\r\n*1\r\n$2\r\nv0\r\n")
    [put] = parse_requests(t.take())
    assert put[:3] == [b"DYN.PUT", get[1], b"ctx-1"] and len(put[3]) == 100
    assert w.stats.take()["ok"][0] == 0      # not done until the write is acknowledged
    conn.data_received(b"$5\r\nctx-2\r\n")
    snap = w.stats.take()
    assert snap["ok"][0] == 1 and conn.outstanding == 0


def test_error_replies_are_counted_with_a_sample_and_the_connection_goes_on():
    w, conn, t = make("dyn_get=1", pipeline=2, budget=3)
    w.start(_bench.now_ns())
    conn.data_received(b"-ERR unknown command 'DYN.GET'\r\n")
    conn.data_received(b"!11\r\nERR blob er\r\n")
    conn.data_received(b"*2\r\n$1\r\nc\r\n*0\r\n")
    snap = w.stats.take()
    assert snap["errors"][0] == 2 and snap["ok"][0] == 1
    assert snap["error_samples"][0] == "ERR unknown command 'DYN.GET'"
    assert not t.aborted


def test_a_dyn_get_reply_without_context_is_an_error_not_a_crash():
    w, conn, t = make("dyn_rmw=1", pipeline=1, budget=1)
    w.start(_bench.now_ns())
    t.take()
    conn.data_received(b":5\r\n")
    snap = w.stats.take()
    assert snap["errors"][0] == 1 and "not [context, values]" in snap["error_samples"][0]
    assert t.take() == b""


def test_garbage_fails_the_in_flight_requests_and_drops_the_connection():
    w, conn, t = make("get=1", pipeline=4)
    lost = []
    w.on_lost = lambda c, reason: lost.append(reason)
    w.start(_bench.now_ns())
    conn.data_received(b"$3\r\nabc\r\n?garbage\r\n")
    snap = w.stats.take()
    assert snap["ok"][0] == 1 and snap["errors"][0] == 3
    assert t.aborted and conn.closed and "invalid reply" in lost[0]


def test_setup_replies_gate_the_load_and_a_refusal_is_fatal():
    w, conn, t = make("get=1", setup=[("AUTH", "pw")])
    ready, fatal = [], []
    w.on_ready = ready.append
    w.on_fatal = fatal.append
    w.start(_bench.now_ns())
    assert parse_requests(t.take()) == [[b"AUTH", b"pw"]]
    conn.data_received(b"+OK\r\n")
    assert ready == [conn] and len(parse_requests(t.take())) == 4

    w, conn, t = make("get=1", setup=[("AUTH", "bad")])
    w.on_fatal = fatal.append
    conn.data_received(b"-WRONGPASS invalid username-password pair\r\n")
    assert fatal == ["WRONGPASS invalid username-password pair"] and t.aborted


def test_open_loop_sends_only_what_is_due():
    wl = workload.build(mix="get=1", keys=10, key_dist="uniform")
    gen = _bench.Generator(**wl.generator_args("resp", 0, 1, 1))
    w = _bench.Worker(gen, pipeline=1000, rate=1000.0, arrival=_bench.ARRIVAL_CONST, budget=50)
    conn = w.connection()
    t = FakeTransport()
    conn.connection_made(t)
    start = _bench.now_ns()
    w.start(start + 10 ** 9)            # the schedule begins in a second: nothing is due yet
    assert t.take() == b"" and w.next_due() > 0.5
    w.start(start - 20 * 10 ** 6)       # 20 ms ago at 1000/s: 21 sends are due now
    assert len(parse_requests(t.take())) in (21, 22)


@pytest.mark.parametrize("kind", [_bench.ARRIVAL_EXP, _bench.ARRIVAL_CONST])
def test_open_loop_latency_counts_from_the_intended_time(kind):
    wl = workload.build(mix="get=1", keys=10, key_dist="uniform")
    gen = _bench.Generator(**wl.generator_args("resp", 0, 1, 1))
    w = _bench.Worker(gen, pipeline=1, rate=100.0, arrival=kind, budget=1)
    conn = w.connection()
    t = FakeTransport()
    conn.connection_made(t)
    w.start(_bench.now_ns() - 500 * 10 ** 6)   # the first send was due half a second ago
    conn.data_received(b"$-1\r\n")
    snap = w.stats.take()
    from fastdyn.bench.histogram import Histogram
    corrected = Histogram(snap["hist"][0], snap["max_ns"][0])
    service = Histogram(snap["service"][0], snap["max_service_ns"][0])
    assert corrected.max_ns >= 500 * 10 ** 6 > service.max_ns
