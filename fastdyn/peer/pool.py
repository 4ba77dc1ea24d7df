"""One connection per peer, many requests multiplexed on it, deadlines, reachability.

`pool.request(peer, kind, payload, deadline_s, callback)` calls `callback` exactly once, never
from inside `request`: with the response payload, or with PeerRequestFailed (an error
response, or a payload over the peers' max_payload), PeerUnreachable (connection down or
failed, peer marked unreachable) or PeerTimeout (no response within `deadline_s` seconds).
No Task or Future per request: deadlines sit in one timer wheel per pool, served by a single
loop timer.

A peer is dialled on its first request. It is marked unreachable (`on_unreachable(peer)`) when
its connection fails, or when a request times out with nothing heard from the peer since the
request was sent; requests to it then fail at once with PeerUnreachable while the pool probes
it in the background (reconnect, or PING on a live connection) with capped exponential
backoff. The first answered probe marks it reachable again (`on_reachable(peer)`).
"""
from __future__ import annotations

import asyncio
import heapq
import logging

from fastdyn.errors import PeerRequestFailed, PeerTimeout, PeerUnreachable
from fastdyn.peer.codec import DEFAULT_MAX_PAYLOAD
from fastdyn.peer.messages import HELLO, PING, pack_name
from fastdyn.peer.protocol import PeerConnection

__all__ = ["PeerPool", "split_address"]

log = logging.getLogger("fastdyn.peer")

_NO_DEADLINE = float("nan")     # equal to no deadline, None included


def split_address(peer: str) -> tuple[str, int]:
    """'host:port' or '[v6 host]:port' -> (host, port); ValueError when it is neither."""
    host, sep, port = peer.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"peer address must be host:port, got {peer!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class _Link:
    """The pool's state for one peer."""

    __slots__ = ("peer", "host", "port", "conn", "reachable", "down_reason", "backoff",
                 "probe_timer", "probing", "dial_task")

    def __init__(self, peer, host, port, backoff):
        self.peer = peer
        self.host = host
        self.port = port
        self.conn = None             # PeerConnection, connected or dialling
        self.reachable = True        # until proven otherwise
        self.down_reason = ""
        self.backoff = backoff       # wait before the next probe
        self.probe_timer = None
        self.probing = False         # a HELLO or PING probe awaits its answer
        self.dial_task = None


class PeerPool:
    def __init__(self, local_name: str, *, loop=None, faults=None,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, connect_timeout_s: float = 1.0,
                 probe_timeout_s: float = 1.0, backoff_min_s: float = 0.05,
                 backoff_max_s: float = 2.0, tick_s: float = 0.01, on_reachable=None,
                 on_unreachable=None):
        self.loop = loop or asyncio.get_running_loop()
        self.local_name = local_name
        self.faults = faults
        self.max_payload = max_payload
        self.connect_timeout_s = connect_timeout_s
        self.probe_timeout_s = probe_timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.on_reachable = on_reachable
        self.on_unreachable = on_unreachable
        self._links: dict[str, _Link] = {}
        self.down = 0        # links marked unreachable now: 0 lets a coordinator skip asking
        self._closed = False
        # timer wheel: slot number -> [(conn, req_id)], a heap of the slots in use, and the
        # one loop timer, set for the earliest slot
        self._slots_per_s = 1.0 / tick_s
        self._buckets: dict[int, list] = {}
        self._slots: list[int] = []
        self._timer = None
        self._timer_slot = 0
        self._turn_deadline_s = _NO_DEADLINE   # deadline_s of the turn's last request
        self._turn_bucket = None               # and its bucket

    # -- requests --------------------------------------------------------------------------
    def request(self, peer: str, kind: int, payload, deadline_s: float, callback) -> None:
        link = self._links.get(peer)
        conn = None if link is None or not link.reachable else link.conn
        if conn is None or len(payload) > self.max_payload:
            conn = self._connection(link, peer, payload, callback)
            if conn is None:
                return
        if deadline_s == self._turn_deadline_s:
            # the same deadline as the turn's previous request: the same slot (uvloop's clock
            # only advances between turns)
            bucket = self._turn_bucket
        else:
            bucket = self._bucket(deadline_s)   # a bad deadline raises before anything is sent
        bucket.append((conn, conn.request(kind, payload, callback)))

    def _connection(self, link, peer, payload, callback):
        """The connection to send on, dialled if needed; None (and the callback scheduled
        with the error) when the peer is unreachable or not an address, or the payload is
        larger than a peer accepts (it would close the connection)."""
        if len(payload) > self.max_payload:
            self.loop.call_soon(callback, PeerRequestFailed(
                peer, f"payload of {len(payload)} bytes exceeds the limit of {self.max_payload}"))
            return None
        if link is None:
            try:
                link = self._add_link(peer)
            except ValueError as exc:
                self.loop.call_soon(callback, PeerUnreachable(peer, str(exc)))
                return None
        if not link.reachable:
            self.loop.call_soon(callback, PeerUnreachable(peer, link.down_reason))
            return None
        return link.conn or self._dial(link)

    def call(self, peer: str, kind: int, payload, deadline_s: float):
        """request() as an awaitable (for background work: a future per request): the
        response payload as bytes, or the request's error raised."""
        future = self.loop.create_future()

        def done(result):
            if future.done():
                return
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(bytes(result))
        self.request(peer, kind, payload, deadline_s, done)
        return future

    def reachable(self, peer: str) -> bool:
        """False while the peer is marked unreachable; True for a peer never contacted."""
        link = self._links.get(peer)
        return link is None or link.reachable

    def suspect(self, peer: str, reason: str) -> None:
        """Treat `peer` as unreachable now (the failure detector's verdict) until a probe
        answers."""
        link = self._links.get(peer)
        if link is None:
            try:
                link = self._add_link(peer)
            except ValueError:
                return
        self._mark_down(link, reason)

    def probe_now(self, peer: str) -> None:
        """Probe an unreachable `peer` at once (something says it is back), not after its
        backoff."""
        link = self._links.get(peer)
        if link is None or link.reachable or link.probing or self._closed:
            return
        if link.probe_timer is not None:
            link.probe_timer.cancel()
        link.backoff = self.backoff_min_s
        self._probe(link)

    def unreachable(self) -> list[str]:
        return [peer for peer, link in self._links.items() if not link.reachable]

    def describe(self) -> dict:
        """Per peer contacted: reachable, connected, requests in flight, why it is down (for
        INFO and `cluster status`)."""
        return {peer: {"reachable": link.reachable,
                       "connected": link.conn is not None and link.conn.transport is not None,
                       "in_flight": 0 if link.conn is None else len(link.conn.pending),
                       "down_reason": "" if link.reachable else link.down_reason}
                for peer, link in self._links.items()}

    def _add_link(self, peer):
        if self._closed:
            raise ValueError("the peer pool is closed")
        host, port = split_address(peer)
        link = self._links[peer] = _Link(peer, host, port, self.backoff_min_s)
        return link

    # -- deadlines -------------------------------------------------------------------------
    def _bucket(self, deadline_s) -> list:
        """The wheel's list of (conn, req_id) expiring deadline_s seconds from now, rounded up
        to the next slot: a deadline fires within a tick after it passes."""
        slot = int((self.loop.time() + deadline_s) * self._slots_per_s) + 1
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = []
            heapq.heappush(self._slots, slot)
            if self._timer is None or slot < self._timer_slot:
                self._set_timer(slot)
        if self._turn_bucket is None:
            self.loop.call_soon(self._end_turn)
        self._turn_deadline_s = deadline_s
        self._turn_bucket = bucket
        return bucket

    def _end_turn(self) -> None:
        self._turn_deadline_s = _NO_DEADLINE
        self._turn_bucket = None

    def _set_timer(self, slot) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_slot = slot
        self._timer = self.loop.call_at(slot / self._slots_per_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._end_turn()        # the turn's bucket may be among those expiring now
        now_slot = self.loop.time() * self._slots_per_s
        slots = self._slots
        while slots and slots[0] <= now_slot:
            for conn, req_id in self._buckets.pop(heapq.heappop(slots)):
                entry = conn.pending.pop(req_id, None)
                if entry is not None:
                    self._timed_out(conn, entry)
        if slots and self._timer is None:
            self._set_timer(slots[0])

    def _timed_out(self, conn, entry) -> None:
        callback, received_when_sent = entry
        if conn.received == received_when_sent:
            link = self._links.get(conn.peer_name)
            if link is not None and link.conn is conn:
                self._mark_down(link, "requests time out")
        try:
            callback(PeerTimeout(conn.peer_name, "no response before the deadline"))
        except Exception:
            log.exception("peer response callback failed")

    # -- connections and reachability ------------------------------------------------------
    def _dial(self, link) -> PeerConnection:
        conn = link.conn = PeerConnection(
            self.loop, self.local_name, faults=self.faults, peer_name=link.peer, dialer=True,
            max_payload=self.max_payload, on_lost=self._lost)
        # HELLO goes first and is the probe: its answer proves the peer is there
        link.probing = True
        self._bucket(self.probe_timeout_s).append((conn, conn.request(
            HELLO, pack_name(self.local_name), lambda result: self._probe_done(link, result))))
        link.dial_task = self.loop.create_task(self._connect(link, conn))
        return conn

    async def _connect(self, link, conn) -> None:
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, link.host, link.port),
                self.connect_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            conn.abort(f"cannot connect ({exc or type(exc).__name__})")
        finally:
            link.dial_task = None

    def _lost(self, conn, reason) -> None:
        link = self._links.get(conn.peer_name)
        if link is not None and link.conn is conn:
            link.conn = None
            self._mark_down(link, reason)

    def _mark_down(self, link, reason) -> None:
        if link.reachable:
            link.reachable = False
            self.down += 1
            link.down_reason = reason
            log.info("peer %s unreachable: %s", link.peer, reason)
            self._notify(self.on_unreachable, link.peer)
        self._schedule_probe(link)

    def _mark_up(self, link) -> None:
        link.backoff = self.backoff_min_s
        if link.probe_timer is not None:
            link.probe_timer.cancel()
            link.probe_timer = None
        if not link.reachable:
            link.reachable = True
            self.down -= 1
            log.info("peer %s reachable again", link.peer)
            self._notify(self.on_reachable, link.peer)

    def _notify(self, hook, peer) -> None:
        if hook is not None:
            try:
                hook(peer)
            except Exception:
                log.exception("peer reachability hook failed")

    def _schedule_probe(self, link) -> None:
        if link.probe_timer is None and not link.probing and not self._closed:
            link.probe_timer = self.loop.call_later(link.backoff, self._probe, link)
            link.backoff = min(link.backoff * 2, self.backoff_max_s)

    def _probe(self, link) -> None:
        link.probe_timer = None
        if self._links.get(link.peer) is not link:
            return
        if link.conn is None:
            self._dial(link)
        else:
            link.probing = True
            conn = link.conn
            self._bucket(self.probe_timeout_s).append((conn, conn.request(
                PING, b"", lambda result: self._probe_done(link, result))))

    def _probe_done(self, link, result) -> None:
        link.probing = False
        if self._links.get(link.peer) is not link:
            return
        if isinstance(result, (PeerUnreachable, PeerTimeout)):
            self._mark_down(link, result.reason)
        else:
            self._mark_up(link)     # an error response too: the peer is there (an older node)

    # -- shutting down ---------------------------------------------------------------------
    def remove(self, peer: str) -> None:
        """Forget a peer: close its connection (its requests fail) and stop probing it."""
        link = self._links.pop(peer, None)
        if link is None:
            return
        if not link.reachable:
            self.down -= 1
        if link.probe_timer is not None:
            link.probe_timer.cancel()
        if link.dial_task is not None:
            link.dial_task.cancel()
        if link.conn is not None:
            link.conn.abort("peer removed from the pool")

    def close(self) -> None:
        """Close every connection; requests still waiting fail with PeerUnreachable."""
        self._closed = True
        for peer in list(self._links):
            self.remove(peer)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buckets.clear()
        self._slots.clear()
        self._end_turn()
