"""The peer transport over real loopback sockets, in one process on uvloop: a pool dialling a
PeerServer, multiplexing, coalescing, deadlines, reachability and the fault hook."""
import asyncio
import contextlib
import socket
import subprocess
import sys

import pytest
import uvloop

from fastdyn.errors import PeerRequestFailed, PeerTimeout, PeerUnreachable
from fastdyn.peer import messages as m
from fastdyn.peer.codec import FLAG_ERROR, FLAG_RESPONSE, FrameDecoder, encode_frame
from fastdyn.peer.faults import Faults
from fastdyn.peer.memory import MemoryReplica
from fastdyn.peer.pool import PeerPool, split_address
from fastdyn.peer.server import PeerServer

HOST = "127.0.0.1"
CLIENT = "127.0.0.1:1"     # the dialling node's name, as its HELLO announces it


def run(coro):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def eventually(predicate, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class Results:
    """Collects callback results by index and counts calls (each must come exactly once)."""

    def __init__(self):
        self.got = {}
        self.calls = 0

    def callback(self, index):
        def done(result):
            assert index not in self.got, "callback invoked twice"
            self.calls += 1
            self.got[index] = bytes(result) if isinstance(result, memoryview) else result
        return done

    def of_type(self, cls):
        return [r for r in self.got.values() if isinstance(r, cls)]


class HoldingReplica(MemoryReplica):
    """Keeps requests of the held kinds unanswered; serves the others."""

    def __init__(self, held=(m.REPLICA_PUT,)):
        super().__init__()
        self.held = set(held)
        self.frames = []

    def handle(self, conn, frame):
        if frame.kind in self.held:
            self.frames.append(frame)
        else:
            super().handle(conn, frame)


@contextlib.asynccontextmanager
async def peer_pair(handler=None, port=0, **pool_options):
    server = PeerServer(handler or MemoryReplica(), "", faults=Faults(seed=1))
    port = await server.start(HOST, port)
    server.local_name = peer = f"{HOST}:{port}"
    pool_options.setdefault("backoff_min_s", 0.01)
    pool_options.setdefault("backoff_max_s", 0.1)
    pool = PeerPool(CLIENT, faults=Faults(seed=2), **pool_options)
    try:
        yield pool, server, peer
    finally:
        pool.close()
        server.close()
        await server.wait_closed()


async def call(pool, peer, kind, payload, deadline_s=10.0):
    """One request, awaited (tests only: the pool itself creates no future per request)."""
    future = asyncio.get_running_loop().create_future()
    pool.request(peer, kind, payload, deadline_s, future.set_result)
    result = await asyncio.wait_for(future, 30)
    return bytes(result) if isinstance(result, memoryview) else result


async def connected(pool, peer):
    assert await call(pool, peer, m.PING, b"") == b""
    return pool._links[peer].conn


class Counting:
    """Stands in front of an object (a transport, a decoder) and counts calls of one method."""

    def __init__(self, inner, method):
        self.inner = inner
        self.method = method
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def counted(*args):
            self.calls += 1
            return attr(*args)
        return counted


def test_ten_thousand_multiplexed_requests_get_their_own_answers():
    async def main():
        async with peer_pair() as (pool, server, peer):
            n = 10_000
            puts = Results()
            for i in range(n):
                pool.request(peer, m.REPLICA_PUT, m.pack_puts([(b"k%d" % i, b"v%d" % i)]), 30,
                             puts.callback(i))
            await eventually(lambda: puts.calls == n, 60)
            assert all(m.unpack_results(puts.got[i]) == [(m.OK, b"")] for i in range(n))
            gets = Results()
            for i in range(n):
                pool.request(peer, m.REPLICA_GET, m.pack_keys([b"k%d" % i]), 30,
                             gets.callback(i))
            await eventually(lambda: gets.calls == n, 60)
            for i in range(n):
                [(status, obj)] = m.unpack_results(gets.got[i])
                assert (status, bytes(obj)) == (m.OK, b"v%d" % i)
            assert len(server.connections) == 1
    run(main())


def test_a_batch_of_keys_travels_in_one_request():
    async def main():
        async with peer_pair() as (pool, server, peer):
            items = [(b"key%d" % i, b"object%d" % i) for i in range(50)]
            put = await call(pool, peer, m.REPLICA_PUT, m.pack_puts(items, m.PUT_DURABLE))
            assert [s for s, _ in m.unpack_results(put)] == [m.OK] * 50
            got = await call(pool, peer, m.REPLICA_GET,
                             m.pack_keys([b"key7", b"missing", b"key49"]))
            assert [(s, bytes(o)) for s, o in m.unpack_results(got)] == [
                (m.OK, b"object7"), (m.NOT_FOUND, b""), (m.OK, b"object49")]
            await call(pool, peer, m.HINT, m.pack_hints([("10.0.0.9:17000", b"h", b"obj")]))
            assert server.handler.hints == {("10.0.0.9:17000", b"h"): b"obj"}
    run(main())


def test_frames_queued_in_one_turn_leave_in_one_write_each_way():
    async def main():
        async with peer_pair() as (pool, server, peer):
            conn = await connected(pool, peer)
            client_out = conn.transport = Counting(conn.transport, "write")
            [server_conn] = server.connections
            server_out = server_conn.transport = Counting(server_conn.transport, "write")
            server_in = server_conn.decoder = Counting(server_conn.decoder, "feed")
            done = Results()
            for i in range(200):
                pool.request(peer, m.PING, b"", 30, done.callback(i))
            await eventually(lambda: done.calls == 200)
            assert client_out.calls == 1
            assert 1 <= server_out.calls <= server_in.calls
    run(main())


def test_a_closed_server_fails_pending_requests_with_unreachable_and_reconnect_works():
    async def main():
        events = []
        handler = HoldingReplica()
        async with peer_pair(handler, on_unreachable=lambda p: events.append(("down", p)),
                             on_reachable=lambda p: events.append(("up", p))) as (
                pool, server, peer):
            await connected(pool, peer)
            waiting = Results()
            for i in range(20):
                pool.request(peer, m.REPLICA_PUT, m.pack_puts([(b"k", b"v")]), 60,
                             waiting.callback(i))
            await eventually(lambda: len(handler.frames) == 20)
            assert pool.describe() == {peer: {"reachable": True, "connected": True,
                                              "in_flight": 20, "down_reason": ""}}
            server.close()                  # drops the connection as a killed node does
            await server.wait_closed()
            await eventually(lambda: waiting.calls == 20)
            assert len(waiting.of_type(PeerUnreachable)) == 20
            assert not pool.reachable(peer) and pool.down == 1
            assert events == [("down", peer)]
            [status] = pool.describe().values()
            assert status["reachable"] is False and status["in_flight"] == 0
            assert status["down_reason"].startswith("connection")
            refused = await call(pool, peer, m.PING, b"")
            assert isinstance(refused, PeerUnreachable)
            await asyncio.sleep(0.05)       # probes keep failing while nothing listens
            assert events == [("down", peer)]

            again = PeerServer(MemoryReplica(), peer, faults=Faults())
            await again.start(HOST, split_address(peer)[1])
            try:
                await eventually(lambda: pool.reachable(peer))
                assert events == [("down", peer), ("up", peer)] and pool.down == 0
                assert await call(pool, peer, m.PING, b"") == b""
            finally:
                again.close()
                await again.wait_closed()
    run(main())


# A peer node in its own process: serves PING and HELLO, never answers REPLICA_PUT.
SILENT_PEER = """
import asyncio, sys, uvloop
from fastdyn.peer.server import PeerServer

class Silent:
    def handle(self, conn, frame):
        pass

async def main():
    server = PeerServer(Silent(), "silent")
    print(await server.start("127.0.0.1", int(sys.argv[1])), flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


async def start_silent_peer(port=0):
    proc = subprocess.Popen([sys.executable, "-c", SILENT_PEER, str(port)],
                            stdout=subprocess.PIPE)
    line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
    return proc, f"{HOST}:{int(line)}"


def test_a_peer_process_killed_9_fails_pending_requests_and_is_reached_again_on_restart():
    async def main():
        events = []
        proc, peer = await start_silent_peer()
        pool = PeerPool(CLIENT, backoff_min_s=0.01, backoff_max_s=0.1,
                        on_unreachable=lambda p: events.append("down"),
                        on_reachable=lambda p: events.append("up"))
        try:
            assert await call(pool, peer, m.PING, b"") == b""
            waiting = Results()
            for i in range(10):
                pool.request(peer, m.REPLICA_PUT, m.pack_puts([(b"k", b"v")]), 60,
                             waiting.callback(i))
            await asyncio.sleep(0.05)
            assert waiting.calls == 0
            proc.kill()
            await eventually(lambda: waiting.calls == 10)
            assert len(waiting.of_type(PeerUnreachable)) == 10
            assert events == ["down"]
            proc.wait()
            proc, _ = await start_silent_peer(split_address(peer)[1])
            await eventually(lambda: pool.reachable(peer))
            assert events == ["down", "up"]
            assert await call(pool, peer, m.PING, b"") == b""
        finally:
            pool.close()
            proc.kill()
            proc.wait()
    run(main())


def test_nothing_listening_is_unreachable():
    async def main():
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        pool = PeerPool(CLIENT)
        try:
            result = await call(pool, f"{HOST}:{port}", m.PING, b"")
            assert isinstance(result, PeerUnreachable)
            assert "cannot connect" in str(result)
            assert not pool.reachable(f"{HOST}:{port}")
            assert pool.unreachable() == [f"{HOST}:{port}"] and pool.down == 1
            pool.remove(f"{HOST}:{port}")
            assert pool.down == 0
            bad = await call(pool, "no-port", m.PING, b"")
            assert isinstance(bad, PeerUnreachable) and "host:port" in str(bad)
        finally:
            pool.close()
        closed = await call(pool, f"{HOST}:{port}", m.PING, b"")
        assert isinstance(closed, PeerUnreachable) and "closed" in str(closed)
    run(main())


def test_a_deadline_fires_peer_timeout_and_a_silent_peer_is_probed_back():
    async def main():
        events = []
        handler = HoldingReplica()
        async with peer_pair(handler, on_unreachable=lambda p: events.append("down"),
                             on_reachable=lambda p: events.append("up")) as (
                pool, server, peer):
            await connected(pool, peer)
            result = await call(pool, peer, m.REPLICA_PUT, m.pack_puts([(b"k", b"v")]), 0.05)
            assert isinstance(result, PeerTimeout)
            # nothing was heard from the peer after the request left: unreachable, then the
            # PING probe (answered by the connection itself) brings it back
            assert events[0] == "down"
            await eventually(lambda: pool.reachable(peer))
            assert events == ["down", "up"]
    run(main())


def test_requests_of_one_turn_keep_their_own_deadlines():
    async def main():
        handler = HoldingReplica()
        async with peer_pair(handler) as (pool, server, peer):
            await connected(pool, peer)
            done = Results()
            put = m.pack_puts([(b"k", b"v")])
            for i, deadline_s in enumerate([0.02, 30, 0.02, 0, 30, -1, 0.05]):
                pool.request(peer, m.REPLICA_PUT, put, deadline_s, done.callback(i))
            await eventually(lambda: done.calls == 5)
            assert sorted(done.got) == [0, 2, 3, 5, 6]
            assert len(done.of_type(PeerTimeout)) == 5
            pool.close()
            assert [type(done.got[i]) for i in (1, 4)] == [PeerUnreachable] * 2
    run(main())


def test_bad_arguments_raise_before_anything_is_sent():
    async def main():
        async with peer_pair() as (pool, server, peer):
            await connected(pool, peer)
            done = Results()
            for deadline_s in (None, float("nan")):
                with pytest.raises((TypeError, ValueError)):
                    pool.request(peer, m.PING, b"", deadline_s, done.callback(deadline_s))
            with pytest.raises(TypeError):
                pool.request(peer, m.PING, "text", 10, done.callback("text"))
            assert pool._links[peer].conn.pending == {}
            assert await call(pool, peer, m.PING, b"") == b""
            assert done.calls == 0
    run(main())


def test_a_timeout_while_the_peer_answers_other_requests_keeps_it_reachable():
    async def main():
        events = []
        handler = HoldingReplica()
        async with peer_pair(handler, on_unreachable=lambda p: events.append("down")) as (
                pool, server, peer):
            await connected(pool, peer)
            done = Results()
            # the GET's answer arrives long before the held request's deadline
            pool.request(peer, m.REPLICA_PUT, m.pack_puts([(b"k", b"v")]), 1.0,
                         done.callback("held"))
            pool.request(peer, m.REPLICA_GET, m.pack_keys([b"k"]), 10, done.callback("get"))
            await eventually(lambda: done.calls == 2)
            assert isinstance(done.got["held"], PeerTimeout)
            assert m.unpack_results(done.got["get"]) == [(m.NOT_FOUND, b"")]
            assert pool.reachable(peer) and events == []
    run(main())


def test_an_error_response_fails_only_its_request():
    async def main():
        async with peer_pair() as (pool, server, peer):
            result = await call(pool, peer, 200, b"")
            assert isinstance(result, PeerRequestFailed)
            assert "unknown message kind 200" in str(result)
            bad = await call(pool, peer, m.REPLICA_GET, b"\x01")
            assert isinstance(bad, PeerRequestFailed) and "truncated" in str(bad)
            assert await call(pool, peer, m.PING, b"") == b""
            assert pool.reachable(peer)
    run(main())


class Refuser(asyncio.Protocol):
    """A peer that answers every request, HELLO included, with an error response (as a node
    that does not know a kind does)."""

    def connection_made(self, transport):
        self.transport = transport
        self.decoder = FrameDecoder()

    def data_received(self, data):
        for frame in self.decoder.feed(data):
            self.transport.write(encode_frame(frame.kind, FLAG_RESPONSE | FLAG_ERROR,
                                              frame.req_id, b"unknown message kind"))


def test_a_peer_answering_with_errors_stays_reachable():
    async def main():
        server = await asyncio.get_running_loop().create_server(Refuser, HOST, 0)
        peer = f"{HOST}:{server.sockets[0].getsockname()[1]}"
        pool = PeerPool(CLIENT)
        try:
            result = await call(pool, peer, m.PING, b"")
            assert isinstance(result, PeerRequestFailed)
            assert pool.reachable(peer)
        finally:
            pool.close()
            server.close()
    run(main())


def test_a_payload_over_the_limit_fails_before_it_can_close_the_connection():
    async def main():
        async with peer_pair(max_payload=1000) as (pool, server, peer):
            await connected(pool, peer)
            result = await call(pool, peer, m.REPLICA_PUT, m.pack_puts([(b"k", b"v" * 1000)]))
            assert isinstance(result, PeerRequestFailed) and "exceeds the limit" in str(result)
            assert await call(pool, peer, m.PING, b"") == b""
            assert len(server.connections) == 1
    run(main())


def test_a_malformed_frame_closes_only_that_connection():
    async def main():
        async with peer_pair() as (pool, server, peer):
            await connected(pool, peer)
            reader, writer = await asyncio.open_connection(*split_address(peer))
            writer.write(b"\x00\x00\x00\x00\x09" + b"\x00" * 6)    # version 9
            assert await reader.read() == b""                     # closed by the server
            writer.close()
            assert await call(pool, peer, m.PING, b"") == b""
            # a well-formed raw client still gets answers
            reader, writer = await asyncio.open_connection(*split_address(peer))
            writer.write(encode_frame(m.HELLO, 0, 5, m.pack_name("raw")) +
                         encode_frame(m.PING, 0, 6))
            decoder, frames = FrameDecoder(), []
            while len(frames) < 2:
                frames += decoder.feed(await reader.read(100))
            assert [(f.req_id, m.unpack_name(f.payload) if f.kind == m.HELLO else None)
                    for f in frames] == [(5, peer), (6, None)]
            writer.close()
    run(main())


def test_paused_writing_holds_frames_until_resumed():
    async def main():
        async with peer_pair() as (pool, server, peer):
            conn = await connected(pool, peer)
            out = conn.transport = Counting(conn.transport, "write")
            conn.pause_writing()
            done = Results()
            for i in range(10):
                pool.request(peer, m.PING, b"", 30, done.callback(i))
            await asyncio.sleep(0.05)
            assert out.calls == 0 and done.calls == 0
            conn.resume_writing()
            await eventually(lambda: done.calls == 10)
            assert out.calls == 1 and done.of_type(Exception) == []
    run(main())


def test_a_partition_times_requests_out_and_heal_brings_the_peer_back():
    async def main():
        events = []
        async with peer_pair(on_unreachable=lambda p: events.append("down"),
                             on_reachable=lambda p: events.append("up")) as (
                pool, server, peer):
            await connected(pool, peer)
            pool.faults.partition(peer)
            result = await call(pool, peer, m.PING, b"", 0.05)
            assert isinstance(result, PeerTimeout)
            assert not pool.reachable(peer) and events == ["down"]
            assert isinstance(await call(pool, peer, m.PING, b""), PeerUnreachable)
            await asyncio.sleep(0.1)           # probes are dropped too
            assert not pool.reachable(peer)
            assert pool.faults.dropped >= 2
            pool.faults.heal()
            await eventually(lambda: pool.reachable(peer))
            assert events == ["down", "up"]
            assert await call(pool, peer, m.PING, b"") == b""
    run(main())


def test_the_accepting_side_drops_its_responses_to_a_partitioned_peer():
    async def main():
        async with peer_pair() as (pool, server, peer):
            await connected(pool, peer)
            server.faults.partition(CLIENT)
            result = await call(pool, peer, m.REPLICA_PUT, m.pack_puts([(b"k", b"v")]), 0.05)
            assert isinstance(result, PeerTimeout)
            assert server.handler.objects == {b"k": b"v"}      # the request did arrive
            server.faults.heal(CLIENT)
            await eventually(lambda: pool.reachable(peer))
    run(main())


def test_drop_probability_loses_some_frames_and_keeps_the_others():
    async def main():
        async with peer_pair() as (pool, server, peer):
            await connected(pool, peer)
            pool.faults.drop(peer, 0.5)
            done = Results()
            for i in range(200):
                pool.request(peer, m.PING, b"", 1.0, done.callback(i))
            await eventually(lambda: done.calls == 200)
            lost = len(done.of_type(PeerTimeout))
            assert 0 < lost < 200
            assert lost == pool.faults.dropped
            assert list(done.got.values()).count(b"") == 200 - lost
            pool.faults.drop(peer, 0)
            assert await call(pool, peer, m.PING, b"") == b""
    run(main())


def test_delay_holds_frames_back_until_healed():
    async def main():
        async with peer_pair() as (pool, server, peer):
            await connected(pool, peer)
            pool.faults.delay(peer, 300)
            slow = Results()
            pool.request(peer, m.PING, b"", 10, slow.callback("patient"))
            pool.request(peer, m.PING, b"", 0.02, slow.callback("hasty"))
            await eventually(lambda: slow.calls == 2)
            assert slow.got["patient"] == b""
            assert isinstance(slow.got["hasty"], PeerTimeout)
            pool.faults.heal(peer)
            await eventually(lambda: pool.reachable(peer))
            assert await call(pool, peer, m.PING, b"") == b""
    run(main())


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:7000", ("127.0.0.1", 7000)), ("node-3.example:17001", ("node-3.example", 17001)),
    ("[::1]:7000", ("::1", 7000)), ("h:0", None), ("h:70000", None), ("h:", None),
    (":7000", None), ("7000", None), ("h:x1", None)])
def test_peer_addresses(text, address):
    if address is None:
        with pytest.raises(ValueError):
            split_address(text)
    else:
        assert split_address(text) == address


@pytest.mark.parametrize("method, args", [("drop", (1.5,)), ("drop", (-0.1,)),
                                          ("delay", (-1,)), ("delay", (float("nan"),))])
def test_bad_fault_rules_are_refused(method, args):
    from fastdyn.errors import FaultRuleError
    with pytest.raises(FaultRuleError):
        getattr(Faults(), method)("127.0.0.1:1", *args)


def test_closing_the_pool_fails_waiting_requests_once():
    async def main():
        handler = HoldingReplica()
        async with peer_pair(handler) as (pool, server, peer):
            await connected(pool, peer)
            done = Results()
            for i in range(5):
                pool.request(peer, m.REPLICA_PUT, m.pack_puts([(b"k", b"v")]), 30,
                             done.callback(i))
            await eventually(lambda: len(handler.frames) == 5)
            pool.close()
            assert len(done.of_type(PeerUnreachable)) == 5
            await asyncio.sleep(0.05)
            assert done.calls == 5
    run(main())


class Node:
    """One node's peer side in this process: its faults, its server and its pool."""

    def __init__(self, name, server, pool, faults):
        self.name, self.server, self.pool, self.faults = name, server, pool, faults

    @classmethod
    async def start(cls):
        faults = Faults(seed=3)
        server = PeerServer(MemoryReplica(), "", faults=faults)
        name = server.local_name = f"{HOST}:{await server.start(HOST, 0)}"
        pool = PeerPool(name, faults=faults, backoff_min_s=0.01, backoff_max_s=0.05,
                        probe_timeout_s=0.2)
        return cls(name, server, pool, faults)

    async def stop(self):
        self.pool.close()
        self.server.close()
        await self.server.wait_closed()


def test_a_two_way_partition_of_three_nodes_isolates_one_and_heals():
    async def main():
        nodes = [await Node.start() for _ in range(3)]
        a, b, c = nodes
        try:
            for x in nodes:
                for y in nodes:
                    if x is not y:
                        assert await call(x.pool, y.name, m.PING, b"") == b""
            for x in (a, b):              # c on one side, a and b on the other
                x.faults.partition(c.name)
                c.faults.partition(x.name)
            for x, y in ((a, c), (c, a), (b, c), (c, b)):
                assert isinstance(await call(x.pool, y.name, m.PING, b"", 0.05), PeerTimeout)
                assert not x.pool.reachable(y.name)
            for x, y in ((a, b), (b, a)):
                assert await call(x.pool, y.name, m.PING, b"") == b""
            for x in nodes:
                x.faults.heal()
            for x in nodes:
                for y in nodes:
                    if x is not y:
                        await eventually(lambda: x.pool.reachable(y.name))
                        assert await call(x.pool, y.name, m.PING, b"") == b""
        finally:
            for x in nodes:
                await x.stop()
    run(main())
