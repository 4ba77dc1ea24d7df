"""Peer message kinds and the layout of their payloads, one record per kind.

A response carries its request's kind. Layouts are little-endian; a blob is `u32 length,
bytes`; a batch is `u32 count` followed by its items, so one frame carries many keys:

    PING         request: empty                      response: empty
    HELLO        request: blob node name             response: blob node name
    REPLICA_GET  request: batch of blob key          response: results
    REPLICA_PUT  request: u8 put flags, batch of (blob key, blob object)
                                                     response: results
    HINT         request: batch of (blob owner, blob key, blob object)
                                                     response: results
    results:     batch of (u8 status, blob), one per requested key, in request order;
                 the blob is the object (OK), empty (NOT_FOUND) or a UTF-8 message (ERROR)

Versioning: a released layout never changes. A new layout is a new kind, and a node keeps
serving the old kind as long as older nodes may send it; a node answers a kind it does not
know with an error response (the connection stays up), so a sender can fall back. Decoding is
strict: a payload that is short, overlong or has a length running past its end is a
ProtocolError. Keys decode as bytes; objects as memoryviews into the frame (no copy).
"""
from __future__ import annotations

import struct

from fastdyn.errors import ProtocolError

__all__ = ["PING", "HELLO", "REPLICA_GET", "REPLICA_PUT", "HINT", "KINDS", "MessageKind",
           "OK", "NOT_FOUND", "ERROR", "PUT_DURABLE",
           "pack_keys", "unpack_keys", "pack_puts", "unpack_puts", "pack_hints", "unpack_hints",
           "pack_results", "unpack_results", "pack_name", "unpack_name", "pack_empty",
           "unpack_empty"]

PING = 1
HELLO = 2
REPLICA_GET = 3
REPLICA_PUT = 4
HINT = 5

# per-key status in results
OK = 0
NOT_FOUND = 1
ERROR = 2

PUT_DURABLE = 0x01          # REPLICA_PUT flag: acknowledge only once the write is fsynced
_PUT_FLAGS = PUT_DURABLE

_U32 = struct.Struct("<I")
_U8_U32 = struct.Struct("<BI")
_u32_pack = _U32.pack
_u32_unpack = _U32.unpack_from


def _short(what: str) -> ProtocolError:
    return ProtocolError(f"peer message truncated in {what}")


def _blob(view, pos: int, end: int, what: str):
    """(start, stop) of the blob at pos; raises if its length runs past end."""
    if end - pos < 4:
        raise _short(what)
    start = pos + 4
    stop = start + _u32_unpack(view, pos)[0]
    if stop > end:
        raise _short(what)
    return start, stop


def _count(view, end: int, pos: int = 0) -> int:
    if end - pos < 4:
        raise _short("batch count")
    return _u32_unpack(view, pos)[0]


def _done(pos: int, end: int) -> None:
    if pos != end:
        raise ProtocolError(f"peer message has {end - pos} unexpected trailing bytes")


# -- empty, name -----------------------------------------------------------------------------
def pack_empty(_=None) -> bytes:
    return b""


def unpack_empty(view) -> None:
    _done(0, len(view))


def pack_name(name: str) -> bytes:
    raw = name.encode()
    return _u32_pack(len(raw)) + raw


def unpack_name(view) -> str:
    end = len(view)
    start, stop = _blob(view, 0, end, "name")
    _done(stop, end)
    try:
        return bytes(view[start:stop]).decode()
    except UnicodeDecodeError:
        raise ProtocolError("peer name is not UTF-8") from None


# -- keys ------------------------------------------------------------------------------------
def pack_keys(keys) -> bytes:
    parts = [_u32_pack(len(keys))]
    for key in keys:
        parts.append(_u32_pack(len(key)))
        parts.append(key)
    return b"".join(parts)


def unpack_keys(view) -> list[bytes]:
    end = len(view)
    n = _count(view, end)
    pos = 4
    keys = []
    for _ in range(n):
        start, pos = _blob(view, pos, end, "key")
        keys.append(bytes(view[start:pos]))
    _done(pos, end)
    return keys


# -- replica writes --------------------------------------------------------------------------
def pack_puts(items, flags: int = 0) -> bytes:
    """items: sequence of (key, object bytes)."""
    if flags & ~_PUT_FLAGS:
        raise ValueError(f"unknown REPLICA_PUT flags {flags:#x}")
    parts = [_U8_U32.pack(flags, len(items))]
    for key, obj in items:
        parts += (_u32_pack(len(key)), key, _u32_pack(len(obj)), obj)
    return b"".join(parts)


def unpack_puts(view) -> tuple[int, list]:
    """(flags, [(key bytes, object memoryview), ...])."""
    end = len(view)
    if end < 1:
        raise _short("put flags")
    flags = view[0]
    if flags & ~_PUT_FLAGS:
        raise ProtocolError(f"peer REPLICA_PUT has unknown flags {flags:#04x}")
    n = _count(view, end, 1)
    pos = 5
    items = []
    for _ in range(n):
        kstart, kstop = _blob(view, pos, end, "key")
        ostart, pos = _blob(view, kstop, end, "object")
        items.append((bytes(view[kstart:kstop]), view[ostart:pos]))
    _done(pos, end)
    return flags, items


def pack_hints(items) -> bytes:
    """items: sequence of (intended owner, key, object bytes); the owner is a node name."""
    parts = [_u32_pack(len(items))]
    for owner, key, obj in items:
        raw = owner.encode()
        parts += (_u32_pack(len(raw)), raw, _u32_pack(len(key)), key, _u32_pack(len(obj)), obj)
    return b"".join(parts)


def unpack_hints(view) -> list:
    """[(owner str, key bytes, object memoryview), ...]."""
    end = len(view)
    n = _count(view, end)
    pos = 4
    items = []
    for _ in range(n):
        nstart, nstop = _blob(view, pos, end, "hint owner")
        kstart, kstop = _blob(view, nstop, end, "key")
        ostart, pos = _blob(view, kstop, end, "object")
        try:
            owner = bytes(view[nstart:nstop]).decode()
        except UnicodeDecodeError:
            raise ProtocolError("peer hint owner is not UTF-8") from None
        items.append((owner, bytes(view[kstart:kstop]), view[ostart:pos]))
    _done(pos, end)
    return items


# -- results ---------------------------------------------------------------------------------
def pack_results(results) -> bytes:
    """results: sequence of (status, blob) — the object, b"" or an error message."""
    parts = [_u32_pack(len(results))]
    for status, blob in results:
        parts.append(_U8_U32.pack(status, len(blob)))
        parts.append(blob)
    return b"".join(parts)


def unpack_results(view) -> list:
    """[(status, memoryview), ...]; an unknown status is a ProtocolError."""
    end = len(view)
    n = _count(view, end)
    pos = 4
    results = []
    for _ in range(n):
        if end - pos < 5:
            raise _short("result")
        status, length = _U8_U32.unpack_from(view, pos)
        if status > ERROR:
            raise ProtocolError(f"peer result has unknown status {status}")
        start = pos + 5
        pos = start + length
        if pos > end:
            raise _short("result")
        results.append((status, view[start:pos]))
    _done(pos, end)
    return results


class MessageKind:
    """How one kind's request and response payloads are packed and unpacked."""

    __slots__ = ("code", "name", "pack_request", "unpack_request", "pack_response",
                 "unpack_response")

    def __init__(self, code, name, pack_request, unpack_request, pack_response,
                 unpack_response):
        self.code = code
        self.name = name
        self.pack_request = pack_request
        self.unpack_request = unpack_request
        self.pack_response = pack_response
        self.unpack_response = unpack_response

    def __repr__(self):
        return f"MessageKind({self.code}, {self.name!r})"


KINDS = {kind.code: kind for kind in (
    MessageKind(PING, "PING", pack_empty, unpack_empty, pack_empty, unpack_empty),
    MessageKind(HELLO, "HELLO", pack_name, unpack_name, pack_name, unpack_name),
    MessageKind(REPLICA_GET, "REPLICA_GET", pack_keys, unpack_keys, pack_results,
                unpack_results),
    MessageKind(REPLICA_PUT, "REPLICA_PUT", pack_puts, unpack_puts, pack_results,
                unpack_results),
    MessageKind(HINT, "HINT", pack_hints, unpack_hints, pack_results, unpack_results),
)}
