"""One peer connection, either side: the asyncio Protocol that moves frames to and from a socket.

The dialing node sends HELLO (its node name) as the first frame and then its requests; the
accepting node answers PING and HELLO itself and hands every other request to its handler:
`handler.handle(conn, frame)`, which answers now or later with `conn.reply(frame, payload)` or
`conn.reply_error(frame, message)` (an exception it raises becomes an error reply). Responses
complete the waiting request by id: `callback(payload)`, or `callback(PeerRequestFailed)` for
an error response. Frames queued during one event-loop turn leave in one transport.write.
"""
from __future__ import annotations

import asyncio
import logging
import socket

from fastdyn.errors import PeerRequestFailed, PeerUnreachable, ProtocolError
from fastdyn.peer.codec import (DEFAULT_MAX_PAYLOAD, FLAG_ERROR, FLAG_RESPONSE, MAX_REQ_ID,
                                FrameDecoder, FrameEncoder)
from fastdyn.peer.messages import HELLO, PING, pack_name, unpack_name

__all__ = ["PeerConnection"]

log = logging.getLogger("fastdyn.peer")

_ERROR_RESPONSE = FLAG_RESPONSE | FLAG_ERROR


class PeerConnection(asyncio.Protocol):
    """`peer_name` is the remote node's name: given when dialing, learnt from HELLO when
    accepting. `received` counts frames received, so a timed-out request can tell whether the
    peer said anything since it was sent. `on_lost(conn, reason)` runs once when it closes."""

    __slots__ = ("loop", "handler", "faults", "local_name", "peer_name", "dialer", "decoder",
                 "transport", "out", "flush_scheduled", "write_paused", "pending", "received",
                 "next_id", "closed", "on_lost")

    def __init__(self, loop, local_name: str, *, handler=None, faults=None, peer_name=None,
                 dialer: bool = False, max_payload: int = DEFAULT_MAX_PAYLOAD, on_lost=None):
        self.loop = loop
        self.handler = handler
        self.faults = faults
        self.local_name = local_name
        self.peer_name = peer_name
        self.dialer = dialer
        self.decoder = FrameDecoder(max_payload)
        self.transport = None
        self.out = FrameEncoder()          # frames queued this turn
        self.flush_scheduled = False
        self.write_paused = False
        self.pending = {}                  # req_id -> (callback, self.received when sent)
        self.received = 0
        self.next_id = 0
        self.closed = False
        self.on_lost = on_lost

    # -- sending ---------------------------------------------------------------------------
    def request(self, kind: int, payload, callback) -> int:
        """Queue a request; `callback` gets the response payload or an exception, once."""
        req_id = self.next_id = (self.next_id + 1) & MAX_REQ_ID
        self.out.add(kind, 0, req_id, payload)      # raises on a bad payload: nothing pending
        self.pending[req_id] = (callback, self.received)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)
        return req_id

    def reply(self, frame, payload=b"") -> None:
        self._queue(frame.kind, FLAG_RESPONSE, frame.req_id, payload)

    def reply_error(self, frame, message: str) -> None:
        self._queue(frame.kind, _ERROR_RESPONSE, frame.req_id, message.encode())

    def _queue(self, kind, flags, req_id, payload) -> None:
        if self.closed:
            return
        self.out.add(kind, flags, req_id, payload)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write everything queued; runs once per turn, after the turn's frames are queued."""
        self.flush_scheduled = False
        transport = self.transport
        if transport is None or self.write_paused or not len(self.out):
            return            # connection_made / resume_writing flush again
        data = self.out.take()
        faults = self.faults
        if faults is not None and faults.rules:
            data, delay = faults.apply(self.peer_name, data)
            if delay:
                self.loop.call_later(delay, self._write_late, data)
                return
            if not data:
                return
        transport.write(data)

    def _write_late(self, data) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- asyncio callbacks -----------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.closed:          # closed while the connect was in progress
            transport.abort()
        elif len(self.out) and not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def data_received(self, data):
        try:
            frames = self.decoder.feed(data)
        except ProtocolError as exc:
            log.warning("closing the peer connection with %s: %s", self.peer_name, exc)
            self.abort(f"protocol error: {exc}")
            return
        self.received += len(frames)
        for frame in frames:
            if frame.flags & FLAG_RESPONSE:
                self._complete(frame)
            else:
                self._serve(frame)

    def _complete(self, frame) -> None:
        entry = self.pending.pop(frame.req_id, None)
        if entry is None:
            return               # answered after its deadline, or by a confused peer
        if frame.flags & FLAG_ERROR:
            result = PeerRequestFailed(self.peer_name,
                                       bytes(frame.payload).decode(errors="replace"))
        else:
            result = frame.payload
        try:
            entry[0](result)
        except Exception:
            log.exception("peer response callback failed")

    def _serve(self, frame) -> None:
        kind = frame.kind
        if kind == PING:
            self.reply(frame)
        elif kind == HELLO:
            try:
                self.peer_name = unpack_name(frame.payload)
            except ProtocolError as exc:
                self.abort(f"bad HELLO: {exc}")
                return
            self.reply(frame, pack_name(self.local_name))
        elif self.handler is None:
            self.reply_error(frame, "this connection does not serve requests")
        else:
            try:
                self.handler.handle(self, frame)
            except Exception as exc:
                log.exception("peer handler failed on a kind %d request", kind)
                self.reply_error(frame, f"{type(exc).__name__}: {exc}")

    def pause_writing(self):
        self.write_paused = True
        if not self.dialer:
            # the requester does not read its responses: stop taking its requests
            self.transport.pause_reading()

    def resume_writing(self):
        self.write_paused = False
        if self.closed:
            return
        if not self.dialer:
            self.transport.resume_reading()
        self.flush()

    def connection_lost(self, exc):
        self._close(f"connection lost ({exc})" if exc else "connection closed")

    # -- closing ---------------------------------------------------------------------------
    def abort(self, reason: str) -> None:
        """Close now; every request waiting on this connection fails with PeerUnreachable."""
        if self.transport is not None:
            self.transport.abort()
        self._close(reason)

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.out = FrameEncoder()
        pending, self.pending = self.pending, {}
        if self.on_lost is not None:
            self.on_lost(self, reason)   # first, so callbacks see the peer marked unreachable
        for callback, _ in pending.values():
            try:
                callback(PeerUnreachable(self.peer_name, reason))
            except Exception:
                log.exception("peer response callback failed")
