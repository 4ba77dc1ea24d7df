"""One client connection: the asyncio Protocol that moves bytes between a socket and the codec.

Per received chunk one Cython call (fastdyn._commands.run_received) runs every complete
pipelined command: a single node's plain GET and SET straight from the receive buffer, the rest
parsed and run through the command registry (`execute`); replies accumulate in one ReplyWriter
and leave in one transport.write. A reply that completes later (a `Pending` from
the coordinator) holds its slot in the connection's ReplyQueue (a C class, ext/_commands.pyx);
replies behind it wait there so the client always reads them in request order, and the replies
a turn completes leave together in one write (`drain_slots`).
"""
import asyncio
import ipaddress
import logging
import socket

from fastdyn._commands import ReplyQueue, execute, run_command, run_received
from fastdyn._resp import QUERY_LIMIT_ERROR, ReplyWriter, RequestParser
from fastdyn.errors import CommandError

log = logging.getLogger("fastdyn.server")

# Replies the node holds for a group commit (--sync always) are outside the transport, so its
# back-pressure does not see them: past this much, stop running the client's commands until
# they leave.
HELD_HIGH_WATER = 1 << 20

DENIED = ("DENIED fastdyn is running in protected mode because protected mode is enabled and no "
          "password is set for the default user. In this mode connections are only accepted "
          "from the loopback interface. If you want to connect from external computers to "
          "fastdyn you may adopt one of the following solutions: 1) Set up an authentication "
          "password with --requirepass (or requirepass in the config file) and restart. 2) "
          "Restart the server with '--protected-mode no', after making sure it is not publicly "
          "accessible from the internet. NOTE: You only need to do one of the above things in "
          "order for the server to start accepting connections from the outside.")


def is_loopback(peername) -> bool:
    """Whether a client address (transport 'peername') is on the loopback interface."""
    if not peername:
        return True  # a Unix socket
    host = peername[0] if isinstance(peername, tuple) else peername
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class ClientConnection(asyncio.Protocol):
    __slots__ = ("server", "coord", "commits", "keyspace", "out", "parser", "transport", "id",
                 "name", "lib", "authenticated", "replies", "closing", "peer", "multi",
                 "multi_failed", "backlog", "write_paused", "eof", "held", "direct_store")

    def __init__(self, server):
        self.server = server
        self.coord = server.coord
        self.direct_store = server.coord.direct_store   # a single node's: see run_received
        self.commits = server.commits
        self.keyspace = server.keyspace
        cfg = server.config
        self.out = ReplyWriter()
        self.authenticated = not cfg.requirepass
        self.parser = RequestParser(cfg.max_bulk_bytes, cfg.max_query_bytes,
                                    not self.authenticated)
        self.transport = None
        self.id = 0
        self.name = b""
        self.lib = {}
        self.replies = ReplyQueue(self, self.keyspace)
        self.closing = False
        self.peer = None
        self.multi = None          # commands queued after MULTI, until EXEC or DISCARD
        self.backlog = None        # parsed commands waiting for the client to read replies
        self.write_paused = False
        self.held = 0              # bytes of this client's replies held for a commit (send)
        self.eof = False           # the client half-closed: close once every reply is out
        self.multi_failed = False  # a queued command was refused: EXEC must abort

    # -- lifecycle --------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        server = self.server
        self.id = server.next_client_id()
        self.peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.stats["total_connections_received"] += 1
        if len(server.clients) >= server.config.maxclients:
            server.stats["rejected_connections"] += 1
            self.closing = True
            transport.write(b"-ERR max number of clients reached\r\n")
            transport.close()
            return
        if server.config.protected_mode and not server.config.requirepass \
                and not is_loopback(self.peer):
            server.stats["rejected_connections"] += 1
            self.closing = True
            transport.write(b"-" + DENIED.encode() + b"\r\n")
            transport.close()
            return
        server.clients.add(self)

    def connection_lost(self, exc):
        self.server.clients.discard(self)
        self.closing = True

    def pause_writing(self):
        # the client does not read its replies: stop reading its requests until it catches up
        self.write_paused = True
        if not self.over_output_limit():
            self.transport.pause_reading()

    def over_output_limit(self, extra=0) -> bool:
        """Disconnect the client if its unsent replies (in the transport and held for a
        commit, plus `extra`) pass --max-output-bytes, as Redis' client-output-buffer-limit
        does; returns whether it did."""
        limit = self.server.config.max_output_bytes
        transport = self.transport
        if not limit or transport.is_closing() \
                or extra + self.held + transport.get_write_buffer_size() <= limit:
            return False
        log.warning("closing client %s: output buffer limit (%d bytes) reached",
                    self.describe(), limit)
        self.closing = True
        transport.abort()
        return True

    def resume_writing(self):
        self.write_paused = False
        self.resume()

    def resume(self):
        """Output drained (the socket or the held replies): go on with the backlog, or read."""
        if self.closing or self.blocked():
            return
        if self.backlog is not None:
            self.run_backlog()
        else:
            self.transport.resume_reading()

    def blocked(self) -> bool:
        """Whether replies wait for the client: in the transport (write_paused), or held by the
        node for a group commit, which the transport does not see."""
        return self.write_paused or self.held > HELD_HIGH_WATER

    def eof_received(self):
        # The client sent everything it will send (e.g. `printf ... | nc -q`): it still gets
        # every reply, including those waiting for a commit or a pipeline's backlog.
        self.eof = True
        if self.backlog is None:
            self.finish_after_replies()
        return True  # keep the transport open for writing until then

    def finish_after_replies(self):
        self.closing = True
        if self.replies.idle:
            self.send(b"", close=True)  # queued behind any held reply, then closes

    def close_after_reply(self):
        self.closing = True

    # -- requests ---------------------------------------------------------------------------
    def data_received(self, data):
        if self.closing:
            return
        if self.backlog is not None or not self.authenticated:
            # behind commands that still wait, or before AUTH (where each command is parsed
            # alone: the size limits change once it succeeds)
            self.parser.feed(data)
            if self.backlog is not None:
                return
            self.run_commands()
        else:
            self.server.commands_processed += run_received(self, data)
            if self.backlog is None and not self.closing and self.replies.idle \
                    and self.parser.error is None:
                # the common cases, inline: nothing deferred, and no write waiting for the log
                # (the replies leave now) or this turn's commit to wait for (they wait there)
                commits = self.commits
                if self.coord.write_seq == commits.acked_seq and not commits.waiting:
                    data = self.out.take()
                    if data:
                        self.transport.write(data)
                    return
                n = len(self.out)
                if n and self.held + n <= HELD_HIGH_WATER:
                    self.held += n
                    commits.wait(self.write_held, self.out.take(), False)
                    return
        self.after_commands()

    def run_commands(self):
        """Run the backlog, then every complete command the parser holds, until the replies
        pass the high-water mark (the rest stays in `backlog`) or the connection closes."""
        parser = self.parser
        cmds, self.backlog = self.backlog, None
        while not self.closing:
            if cmds is None:
                cmds = parser.parse(b"", 0 if self.authenticated else 1)
                if not cmds:
                    return
                self.server.commands_processed += len(cmds)
            done = execute(self, cmds)
            if done < len(cmds):
                if not self.closing:
                    self.backlog = cmds[done:]
                return
            cmds = None

    def run_backlog(self):
        """Run the commands a large batch left over, once the client reads its replies."""
        if self.closing or self.backlog is None or self.blocked():
            return
        self.run_commands()
        self.after_commands()
        if self.backlog is None and not (self.eof or self.closing or self.blocked()):
            self.transport.resume_reading()

    def after_commands(self):
        """Send the replies of a run; answer a malformed frame once every command before it
        has run; pause reading while commands wait for the client to read replies."""
        error = self.parser.error
        if error is not None and self.backlog is None and not self.closing:
            if error == QUERY_LIMIT_ERROR:
                log.warning("closing client %s: query buffer limit (%d bytes) reached",
                            self.describe(), self.parser.max_query)
            self.out.error("ERR " + error)
            self.closing = True
        self.flush_replies()
        if self.backlog is not None:
            self.transport.pause_reading()
            if not self.blocked():
                self.server.loop.call_soon(self.run_backlog)
        elif self.eof:
            if not self.closing:
                self.finish_after_replies()
        elif self.held > HELD_HIGH_WATER and not self.closing:
            self.transport.pause_reading()  # resumed once they leave (write_held)

    def run_queued(self, queued):
        """EXEC: the queued commands back to back, their replies as one array. On one node
        nothing runs in between, so the block is atomic; an error in one command does not stop
        the others (Redis' rule)."""
        out = self.out
        out.array(len(queued))
        for spec, args in queued:
            run_command(self, spec, args)

    # -- replies ----------------------------------------------------------------------------
    def defer(self, pending, encode):
        """Reserve this command's reply slot until `pending` completes; see module doc."""
        self.replies.defer(self.out, pending, encode)

    def drain_slots(self):
        """Send the completed prefix of the replies that waited for a result."""
        replies = self.replies
        data = replies.take()
        if data:
            self.send(data, self.closing and not replies.pending)

    def flush_replies(self):
        replies = self.replies
        if not replies.idle:
            replies.push(self.out)
            self.drain_slots()
            return
        data = self.out.take()
        if data:
            self.send(data, self.closing)
        elif self.closing:
            self.transport.close()

    def send(self, data, close=False):
        """Send replies; `close`: close the connection once they are out. Replies that may
        depend on writes not yet committed wait for the group commit."""
        commits = self.commits
        if self.coord.write_seq != commits.acked_seq or commits.waiting:
            if self.held + len(data) > HELD_HIGH_WATER and self.over_output_limit(len(data)):
                return
            self.held += len(data)
            commits.wait(self.write_held, data, close)
        else:
            self.write_now(data, close)

    def write_held(self, error, data, close):
        """The group commit of a held reply ended: it leaves, and the client goes on if it was
        blocked by it; or the writes may be lost (`error`): the client is dropped unanswered."""
        if error is not None:
            if self.transport is not None:
                self.transport.abort()
            return
        was_blocked = self.held > HELD_HIGH_WATER
        self.held -= len(data)
        self.write_now(data, close)
        if was_blocked and not self.blocked() and not self.closing:
            self.server.loop.call_soon(self.resume)

    def write_now(self, data, close=False):
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            if close:
                transport.close()
            elif self.write_paused:  # past the high-water mark already: no new pause_writing
                self.over_output_limit()

    # -- state used by commands -------------------------------------------------------------
    def authenticate(self, user: bytes, password: bytes):
        cfg = self.server.config
        if cfg.requirepass:
            ok = user == b"default" and password == cfg.requirepass.encode()
        else:
            ok = user == b"default"  # the default user needs no password
        if not ok:
            raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
        self.authenticated = True
        self.parser.auth_required = False

    @staticmethod
    def check_name(name: bytes):
        """Redis' rule for client names; raises CommandError."""
        if any(c < 33 or c > 126 for c in name):
            raise CommandError("ERR Client names cannot contain spaces, newlines or special "
                               "characters.")

    def set_name(self, name: bytes):
        self.check_name(name)
        self.name = name

    def describe(self) -> str:
        addr = "%s:%s" % (self.peer[0], self.peer[1]) if isinstance(self.peer, tuple) else "?"
        return "id=%d addr=%s name=%s db=0 resp=%d lib-name=%s lib-ver=%s" % (
            self.id, addr, self.name.decode("utf-8", "replace"), self.out.proto,
            self.lib.get(b"lib-name", b"").decode("utf-8", "replace"),
            self.lib.get(b"lib-ver", b"").decode("utf-8", "replace"))
