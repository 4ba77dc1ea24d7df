"""The peer port: accepts peer connections and attaches the node's request handler."""
from __future__ import annotations

import asyncio

from fastdyn.peer.codec import DEFAULT_MAX_PAYLOAD
from fastdyn.peer.protocol import PeerConnection

__all__ = ["PeerServer"]


class PeerServer:
    """`handler.handle(conn, frame)` serves every request but PING and HELLO."""

    def __init__(self, handler, local_name: str, *, loop=None, faults=None,
                 max_payload: int = DEFAULT_MAX_PAYLOAD):
        self.handler = handler
        self.local_name = local_name
        self.loop = loop or asyncio.get_running_loop()
        self.faults = faults
        self.max_payload = max_payload
        self.connections: set[PeerConnection] = set()
        self._servers = []

    def _accept(self) -> PeerConnection:
        conn = PeerConnection(self.loop, self.local_name, handler=self.handler,
                              faults=self.faults, max_payload=self.max_payload,
                              on_lost=self._lost)
        self.connections.add(conn)
        return conn

    def _lost(self, conn, reason) -> None:
        self.connections.discard(conn)

    async def start(self, host: str, port: int, sock=None) -> int:
        """Listen on host:port (port 0 picks a free one), or on an already bound listening
        socket; returns the bound port."""
        if sock is not None:
            server = await self.loop.create_server(self._accept, sock=sock)
        else:
            server = await self.loop.create_server(self._accept, host, port)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stop listening and drop every peer connection (as a killed node would)."""
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.abort("peer server closed")

    async def wait_closed(self) -> None:
        for server in self._servers:
            await server.wait_closed()
