"""A deliberately small raw RESP client for the end-to-end tests.

It writes exactly the bytes it is given and parses exactly one reply at a time, keeping the
RESP type of every element, so that nothing a client library would smooth over (null bulk vs
null array vs RESP3 null, simple vs bulk strings, error prefixes) is hidden from a test.

Replies are tuples tagged by type:
    ("simple", b"OK")   ("error", b"ERR ...")   ("int", 5)   ("bulk", b"...")
    ("nullbulk",) for $-1   ("nullarray",) for *-1   ("null",) for RESP3 _
    ("array", [..])   ("map", [(k, v), ..])   ("set", [..])   ("push", [..])
    ("bool", True)   ("double", b"1.5")   ("bignum", b"..")   ("verbatim", b"txt", b"..")
    ("bloberror", b"ERR ...")
"""
import socket
import time


class Incomplete(Exception):
    """The buffer does not hold a whole reply yet."""


class ServerClosed(Exception):
    """The server closed the connection before a whole reply arrived."""


def encode_command(*args) -> bytes:
    """One command as a RESP array of bulk strings (str args are UTF-8, ints are decimal)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def parse_reply(buf: bytes, pos: int = 0):
    """Parse one reply starting at pos; returns (reply, next_pos) or raises Incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete
    kind, line = buf[pos:pos + 1], buf[pos + 1:end]
    pos = end + 2
    if kind == b"+":
        return ("simple", line), pos
    if kind == b"-":
        return ("error", line), pos
    if kind == b":":
        return ("int", int(line)), pos
    if kind == b"_":
        return ("null",), pos
    if kind == b"#":
        return ("bool", line == b"t"), pos
    if kind == b",":
        return ("double", line), pos
    if kind == b"(":
        return ("bignum", line), pos
    if kind in (b"$", b"=", b"!"):
        n = int(line)
        if n < 0:
            return ("nullbulk",), pos
        if len(buf) < pos + n + 2:
            raise Incomplete
        data = buf[pos:pos + n]
        if buf[pos + n:pos + n + 2] != b"\r\n":
            raise ValueError(f"bulk of {n} bytes not followed by CRLF")
        pos += n + 2
        if kind == b"=":
            return ("verbatim", data[:3], data[4:]), pos
        if kind == b"!":
            return ("bloberror", data), pos
        return ("bulk", data), pos
    if kind in (b"*", b"~", b">", b"%", b"|"):
        n = int(line)
        if n < 0:
            return ("nullarray",), pos
        count = 2 * n if kind in (b"%", b"|") else n
        items = []
        for _ in range(count):
            item, pos = parse_reply(buf, pos)
            items.append(item)
        if kind == b"|":
            # An attribute precedes the real reply; tests look at the reply only.
            return parse_reply(buf, pos)
        if kind == b"%":
            return ("map", list(zip(items[0::2], items[1::2]))), pos
        tag = {b"*": "array", b"~": "set", b">": "push"}[kind]
        return (tag, items), pos
    raise ValueError(f"unknown RESP type byte {kind!r} in {buf[pos - 20:pos + 20]!r}")


class RawClient:
    """One TCP connection; send bytes, read whole replies."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_reply(self):
        while True:
            try:
                reply, pos = parse_reply(self.buf)
            except Incomplete:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise ServerClosed(f"connection closed; unparsed bytes {self.buf[:200]!r}")
                self.buf += chunk
                continue
            self.buf = self.buf[pos:]
            return reply

    def call(self, *args):
        self.send(encode_command(*args))
        return self.read_reply()

    def pipeline(self, commands):
        self.send(b"".join(encode_command(*c) for c in commands))
        return [self.read_reply() for _ in commands]

    def read_until_closed(self, timeout: float = 3.0):
        """Replies received until the server closes the connection.

        Returns (replies, closed): closed is False when the server kept the connection open
        for `timeout` seconds without sending anything more.
        """
        replies = []
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.2)
        try:
            while time.monotonic() < deadline:
                try:
                    reply, pos = parse_reply(self.buf)
                    self.buf = self.buf[pos:]
                    replies.append(reply)
                    continue
                except Incomplete:
                    pass
                try:
                    chunk = self.sock.recv(1 << 20)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    return replies, True
                if not chunk:
                    return replies, True
                self.buf += chunk
            return replies, False
        finally:
            self.sock.settimeout(10.0)


def error_word(reply):
    """The first word of an error reply (ERR, WRONGTYPE, NOAUTH, ...), else None."""
    if reply[0] in ("error", "bloberror"):
        return reply[1].split(b" ", 1)[0]
    return None


def scan_all(client: RawClient, *options, limit: int = 100000):
    """Every key a full SCAN iteration returns (a set; cursors differ between servers)."""
    keys, cursor = set(), b"0"
    for _ in range(limit):
        reply = client.call("SCAN", cursor, *options)
        if reply[0] != "array":
            return reply
        cursor_reply, keys_reply = reply[1]
        keys.update(item[1] for item in keys_reply[1])
        cursor = cursor_reply[1]
        if cursor == b"0":
            return ("keyset", frozenset(keys))
    raise AssertionError("SCAN did not finish")
