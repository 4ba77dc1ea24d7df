"""Sans-IO framing of the peer protocol: bytes in, frames out; frames in, bytes out.

Every frame is an 11-byte little-endian header followed by its payload:

    length u32   payload bytes after the header
    version u8   VERSION; any other value is a ProtocolError (the header is the only thing it
                 covers: payload layouts evolve through new message kinds, see messages.py)
    kind u8      message kind (messages.py); the codec does not interpret it
    flags u8     FLAG_RESPONSE, FLAG_ERROR; other bits set are a ProtocolError
    req_id u32   chosen by the requester, echoed by the response

A response carries the request's kind and id; an error response has both flags set and a
UTF-8 message as its payload.
"""
from __future__ import annotations

import struct

from fastdyn.errors import ProtocolError

__all__ = ["VERSION", "HEADER_SIZE", "FLAG_RESPONSE", "FLAG_ERROR", "DEFAULT_MAX_PAYLOAD",
           "Frame", "FrameDecoder", "FrameEncoder", "encode_frame", "frame_spans"]

VERSION = 1
HEADER = struct.Struct("<IBBBI")
HEADER_SIZE = HEADER.size
FLAG_RESPONSE = 0x01
FLAG_ERROR = 0x02
_KNOWN_FLAGS = FLAG_RESPONSE | FLAG_ERROR
MAX_REQ_ID = 0xFFFFFFFF
# A batch of replica writes must fit; the node raises it with max-value-bytes.
DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024


class Frame:
    """One decoded frame. `payload` is a memoryview into the received bytes (no copy)."""

    __slots__ = ("kind", "flags", "req_id", "payload")

    def __init__(self, kind: int, flags: int, req_id: int, payload):
        self.kind = kind
        self.flags = flags
        self.req_id = req_id
        self.payload = payload

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)

    def __repr__(self):
        return (f"Frame(kind={self.kind}, flags={self.flags:#x}, req_id={self.req_id}, "
                f"payload={bytes(self.payload)[:32]!r}{'...' if len(self.payload) > 32 else ''})")


def _check_header(version: int, flags: int, length: int, max_payload: int) -> None:
    if version != VERSION:
        raise ProtocolError(f"peer frame version {version} is not supported (this node speaks "
                            f"{VERSION})")
    if flags & ~_KNOWN_FLAGS:
        raise ProtocolError(f"peer frame has unknown flags {flags:#04x}")
    if flags == FLAG_ERROR:
        raise ProtocolError("peer frame has the error flag without the response flag")
    if length > max_payload:
        raise ProtocolError(f"peer frame payload of {length} bytes exceeds the limit of "
                            f"{max_payload}")


class FrameDecoder:
    """Splits a byte stream into frames. After a ProtocolError the stream is unusable: every
    later feed raises again (the connection must close)."""

    __slots__ = ("max_payload", "_chunks", "_have", "_need", "_error")

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD):
        if not 0 <= max_payload <= MAX_REQ_ID:
            raise ValueError(f"max_payload must be within 0..{MAX_REQ_ID}, got {max_payload}")
        self.max_payload = max_payload
        self._chunks: list[bytes] = []   # received bytes not yet parsed
        self._have = 0                   # their total length
        self._need = HEADER_SIZE         # bytes needed before parsing can make progress
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return self._have

    def feed(self, data) -> list[Frame]:
        if self._error is not None:
            raise self._error
        if not data:
            return []
        if type(data) is not bytes:
            data = bytes(data)    # frames keep views into it: it must not change
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks = []
        elif len(data) < self._need:
            self._chunks.append(data)
            self._have = len(data)
            return []
        try:
            return self._parse(data)
        except ProtocolError as exc:
            self._error = exc
            self._chunks = []
            self._have = 0
            raise

    def _parse(self, data: bytes) -> list[Frame]:
        frames = []
        view = memoryview(data)
        end = len(data)
        pos = 0
        need = HEADER_SIZE
        unpack = HEADER.unpack_from
        max_payload = self.max_payload
        while end - pos >= HEADER_SIZE:
            length, version, kind, flags, req_id = unpack(data, pos)
            if version != VERSION or flags & ~FLAG_RESPONSE or length > max_payload:
                _check_header(version, flags, length, max_payload)
            stop = pos + HEADER_SIZE + length
            if stop > end:
                need = HEADER_SIZE + length
                break
            frames.append(Frame(kind, flags, req_id, view[pos + HEADER_SIZE:stop]))
            pos = stop
        if pos < end:
            rest = data[pos:]
            self._chunks = [rest]
            self._have = len(rest)
        else:
            self._have = 0
        self._need = need
        return frames


def encode_frame(kind: int, flags: int, req_id: int, payload=b"") -> bytes:
    return HEADER.pack(len(payload), VERSION, kind, flags, req_id) + payload


class FrameEncoder:
    """Appends frames into one buffer; `take()` hands the whole batch over for one write."""

    __slots__ = ("_buf",)

    def __init__(self):
        self._buf = bytearray()

    def add(self, kind: int, flags: int, req_id: int, payload=b"") -> None:
        buf = self._buf
        buf += HEADER.pack(len(payload), VERSION, kind, flags, req_id)
        buf += payload

    def __len__(self) -> int:
        return len(self._buf)

    def take(self) -> bytearray:
        """The encoded frames so far (the caller owns the buffer); the encoder starts empty."""
        buf = self._buf
        self._buf = bytearray()
        return buf


def frame_spans(data) -> list[tuple[int, int]]:
    """(start, stop) of each whole frame in a buffer of frames this node encoded."""
    spans = []
    pos = 0
    end = len(data)
    while end - pos >= HEADER_SIZE:
        stop = pos + HEADER_SIZE + HEADER.unpack_from(data, pos)[0]
        if stop > end:
            break
        spans.append((pos, stop))
        pos = stop
    return spans
