"""The deferred replies of a client connection (ReplyQueue, ext/_commands.pyx): each waits for
its Pending in request order, and the replies a turn completes leave in one write."""
from fastdyn._commands import KeyspaceStats, ReplyQueue
from fastdyn._resp import ReplyWriter
from fastdyn.errors import CommandError
from fastdyn.pending import Pending
from fastdyn.server.protocol import ClientConnection


class Loop:
    def __init__(self):
        self.ready = []

    def call_soon(self, fn, *args):
        self.ready.append((fn, args))

    def run(self):
        ready, self.ready = self.ready, []
        for fn, args in ready:
            fn(*args)


class Transport:
    def __init__(self):
        self.written = []
        self.closed = False

    def write(self, data):
        self.written.append(data)

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def get_write_buffer_size(self):
        return 0

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


class Config:
    requirepass = ""
    max_bulk_bytes = 1 << 20
    max_query_bytes = 1 << 20
    max_output_bytes = 0
    max_value_bytes = 1 << 20


class Commits:
    acked_seq = 0
    waiting = False


class Coord:
    write_seq = 0
    direct_store = None


class Server:
    def __init__(self):
        self.config = Config()
        self.coord = Coord()
        self.commits = Commits()
        self.keyspace = KeyspaceStats()
        self.loop = Loop()
        self.clients = set()


class Conn:
    """What a ReplyQueue asks of its connection: the loop, and the drain it schedules."""
    def __init__(self):
        self.server = Server()
        self.drains = 0

    def drain_slots(self):
        self.drains += 1


def bulk(out, value):
    out.bulk(value)


def test_replies_leave_in_request_order_when_later_ones_complete_first():
    conn = Conn()
    queue = ReplyQueue(conn)
    out = ReplyWriter()
    first, second, third = Pending(), Pending(), Pending()
    out.simple("before")
    queue.defer(out, first, bulk)
    out.integer(7)                      # an immediate reply between two deferred ones
    queue.defer(out, second, bulk)
    queue.defer(out, third, bulk)
    out.ok()
    queue.push(out)
    assert len(out) == 0 and queue.pending and not queue.idle
    assert queue.take() == b"+before\r\n"
    third.complete(b"c")
    second.complete(b"b")
    assert queue.take() == b""          # the first still waits: nothing behind it leaves
    first.complete(b"a")
    assert queue.take() == b"$1\r\na\r\n:7\r\n$1\r\nb\r\n$1\r\nc\r\n+OK\r\n"
    assert not queue.pending and queue.idle


def test_one_drain_per_turn():
    conn = Conn()
    queue = ReplyQueue(conn)
    out = ReplyWriter()
    pendings = [Pending() for _ in range(3)]
    for p in pendings:
        queue.defer(out, p, bulk)
    for p in pendings[:2]:
        p.complete(b"x")
    assert len(conn.server.loop.ready) == 1
    conn.server.loop.run()
    assert conn.drains == 1
    assert queue.take() == b"$1\r\nx\r\n" * 2
    pendings[2].complete(b"y")          # a later turn schedules its own drain
    assert len(conn.server.loop.ready) == 1


def test_failures_become_error_replies():
    queue = ReplyQueue(Conn())
    out = ReplyWriter()
    failed, refused, broken = Pending(), Pending(), Pending()

    def half_then_fail(w, value):
        w.array(2)
        raise RuntimeError("encoder bug")

    queue.defer(out, failed, bulk)
    queue.defer(out, refused, bulk)
    queue.defer(out, broken, half_then_fail)
    failed.complete(CommandError("ERR quorum not reached"))
    refused.complete(ValueError("key too long"))
    broken.complete(b"v")
    assert queue.take() == (b"-ERR quorum not reached\r\n-ERR key too long\r\n"
                            b"-ERR internal error in 'None': encoder bug\r\n")


def test_a_result_there_already_and_the_protocol_of_its_command():
    queue = ReplyQueue(Conn())
    out = ReplyWriter()
    done = Pending()
    done.complete(None)
    out.proto = 3
    queue.defer(out, done, bulk)        # RESP3 null
    out.proto = 2
    later = Pending()
    queue.defer(out, later, bulk)
    later.complete(None)                # RESP2 null
    assert queue.take() == b"_\r\n$-1\r\n"


def test_get_and_set_slots_of_the_dispatcher():
    from fastdyn._commands import configure, execute
    from fastdyn.server.commands import REGISTRY
    configure(REGISTRY)

    class Inner:
        direct_store = None

        def __init__(self):
            self.pending = []

        def get(self, key):
            p = Pending()
            self.pending.append(p)
            return p

        def put(self, key, value, expiry_ms=0):
            return self.get(key)

    server = Server()
    server.coord = Inner()
    server.coord.write_seq = 0
    conn = ClientConnection(server)
    conn.transport = Transport()
    execute(conn, [[b"SET", b"k", b"v"], [b"GET", b"k"], [b"GET", b"m"]])
    conn.flush_replies()
    assert conn.transport.written == []
    set_, hit, miss = server.coord.pending
    miss.complete(None)
    hit.complete(b"v")
    set_.complete(None)
    server.loop.run()
    assert conn.transport.written == [b"+OK\r\n$1\r\nv\r\n$-1\r\n"]
    assert (server.keyspace.hits, server.keyspace.misses) == (1, 1)


def test_a_closing_connection_sends_the_waiting_replies_then_closes():
    server = Server()
    conn = ClientConnection(server)
    conn.transport = Transport()
    first, second = Pending(), Pending()
    conn.defer(first, bulk)
    conn.out.integer(1)
    conn.defer(second, bulk)
    conn.flush_replies()
    conn.eof_received()                 # the client sent everything: close after the replies
    assert conn.closing and not conn.transport.closed
    second.complete(b"b")
    server.loop.run()
    assert conn.transport.written == [] and not conn.transport.closed
    first.complete(b"a")
    server.loop.run()
    assert conn.transport.written == [b"$1\r\na\r\n:1\r\n$1\r\nb\r\n"]
    assert conn.transport.closed


def test_replies_completing_after_the_connection_closed_are_dropped():
    server = Server()
    conn = ClientConnection(server)
    conn.transport = Transport()
    pending = Pending()
    conn.defer(pending, bulk)
    conn.flush_replies()
    conn.transport.closed = True        # the client went away
    conn.connection_lost(None)
    pending.complete(b"late")
    server.loop.run()
    assert conn.transport.written == []
