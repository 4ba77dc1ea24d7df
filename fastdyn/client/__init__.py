"""A small blocking client for fastdyn, Redis and memcached, built on the Cython wire codec.

    with connect("redis://127.0.0.1:7379") as c:
        c.execute("SET", "k", "v")
        c.pipeline([("GET", "k"), ("DEL", "k")])

The load generator uses it to check a target before a run; its hot path drives the same codec
from fastdyn._bench instead.
"""
import socket
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from fastdyn._client import INCOMPLETE, MemcacheReader, RespReader, encode_command, encode_pipeline
from fastdyn.errors import ProtocolError, ReplyError, TargetUnavailable

__all__ = ["Target", "parse_target", "connect", "RespClient", "MemcacheClient",
           "encode_command", "encode_pipeline", "RespReader", "MemcacheReader"]

SCHEMES = {"redis": 6379, "fastdyn": 7379, "memcache": 11211, "memcached": 11211}


@dataclass(frozen=True)
class Target:
    """Where to connect and how to talk: redis://[user:password@]host:port[/db] or memcache://."""
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    db: int = 0

    @property
    def protocol(self) -> str:
        return "memcache" if self.scheme.startswith("memcache") else "resp"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_target(url: str) -> Target:
    """Parses a target URL; raises ValueError with a readable message when it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"target {url!r}: the scheme must be one of "
                         f"{', '.join(s + '://' for s in SCHEMES)}")
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError:
        raise ValueError(f"target {url!r}: the port is not a number in 1..65535") from None
    if not parts.hostname:
        raise ValueError(f"target {url!r} names no host")
    db = 0
    path = parts.path.strip("/")
    if path:
        if not path.isdigit() or parts.scheme.startswith("memcache"):
            raise ValueError(f"target {url!r}: the path can only be a database number")
        db = int(path)
    password = unquote(parts.password) if parts.password is not None else None
    username = unquote(parts.username) if parts.username else None
    if parts.scheme.startswith("memcache") and password is not None:
        raise ValueError(f"target {url!r}: memcached's text protocol has no password")
    return Target(parts.scheme, parts.hostname, port, username, password, db)


def setup_commands(target: Target, resp3: bool = False) -> list:
    """The commands a RESP connection sends before any load (AUTH, HELLO 3, SELECT)."""
    commands = []
    if target.password is not None:
        commands.append(("AUTH", target.username, target.password) if target.username
                        else ("AUTH", target.password))
    if resp3:
        commands.append(("HELLO", "3"))
    if target.db:
        commands.append(("SELECT", target.db))
    return commands


class _Client:
    reader_class = None

    def __init__(self, target: Target, timeout: float = 5.0):
        self.target = target
        try:
            self.sock = socket.create_connection((target.host, target.port), timeout=timeout)
        except OSError as exc:
            raise TargetUnavailable(f"cannot connect to {target}: {exc.strerror or exc}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.reader_class()

    def _replies(self, count: int) -> list:
        replies = []
        while len(replies) < count:
            reply = self.reader.gets()
            if reply is not INCOMPLETE:
                replies.append(reply)
                continue
            try:
                data = self.sock.recv(65536)
            except OSError as exc:
                raise TargetUnavailable(f"{self.target}: {exc.strerror or exc}") from None
            if not data:
                raise TargetUnavailable(f"{self.target} closed the connection")
            self.reader.feed(data)
        return replies

    def _send(self, payload: bytes) -> None:
        try:
            self.sock.sendall(payload)
        except OSError as exc:
            raise TargetUnavailable(f"{self.target}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RespClient(_Client):
    """RESP: execute() raises ReplyError on an error reply; pipeline() returns them in place."""
    reader_class = RespReader

    def execute(self, *args):
        reply = self.pipeline([args])[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def pipeline(self, commands) -> list:
        commands = list(commands)
        self._send(encode_pipeline(commands))
        return self._replies(len(commands))


class MemcacheClient(_Client):
    """memcached text protocol: get, set, delete and raw commands."""
    reader_class = MemcacheReader

    def raw(self, line: bytes):
        self._send(line)
        reply = self._replies(1)[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def get(self, key: bytes):
        values = self.raw(b"get " + key + b"\r\n")
        return values[0][2] if values else None

    def set(self, key: bytes, value: bytes, ttl: int = 0) -> bool:
        return self.raw(b"set %s 0 %d %d\r\n%s\r\n" % (key, ttl, len(value), value)) == b"STORED"

    def delete(self, key: bytes) -> bool:
        return self.raw(b"delete " + key + b"\r\n") == b"DELETED"


def connect(url_or_target, timeout: float = 5.0, resp3: bool = False):
    """A connected client for the target; RESP connections are authenticated first."""
    target = url_or_target if isinstance(url_or_target, Target) else parse_target(url_or_target)
    if target.protocol == "memcache":
        return MemcacheClient(target, timeout)
    client = RespClient(target, timeout)
    try:
        for command, reply in zip(setup := setup_commands(target, resp3),
                                  client.pipeline(setup)):
            if isinstance(reply, ReplyError):
                raise TargetUnavailable(f"{target} refused {command[0]}: {reply}")
    except (TargetUnavailable, ProtocolError):
        client.close()
        raise
    return client
