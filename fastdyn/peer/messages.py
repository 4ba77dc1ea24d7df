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
    FLUSH        request: u64 flush epoch            response: u64 the receiver's epoch
    KEYS         request: u64 first hash, u32 limit  response: batch of blob key (the
                 receiver's smallest-hash live keys from there; SCAN, KEYS, DBSIZE)
    COORDINATE   request: u8 operation, blob key, then for DYN_PUT: blob context, blob value,
                 u8 tombstone, u8 W, u8 DW (255: the receiver's default), u64 TTL ms; for
                 INCR: batch of i64 delta      response: results, one per write or delta
                 (OK: the new context, or the counter's new value in decimal)
    GOSSIP_SYN   request: partitions, name, digest     response: ACK (fastdyn/cluster/gossip.py)
    GOSSIP_PUSH  request: records                    response: empty
    HANDOFF_DONE request: change (blob name, u32 status version, u32 crc of the ring it
                 starts from), u32 count, count x u32 partition
                                                     response: empty (fastdyn/cluster/handoff.py)
    HANDOFF_STATUS request: change                   response: u32 partitions the receiver
                                                     still awaits in it
    AE_TREE      request: u32 count, count x (u32 partition, blob Merkle request)
                 response: u32 count, count x blob Merkle reply, empty when the receiver's
                 tree of that partition is not ready (fastdyn/cluster/merkle.py formats)
    AE_LISTING   request: u32 count, count x (u32 partition, u32 n, n x u32 segment)
                 response: u32 count, count x (blob key, u32 digest): the receiver's keys in
                 those segments (fastdyn/cluster/anti_entropy.py)
    AE_DONE      request: blob sender name, u64 start (Unix ms), u32 count, count x u32
                 partition: the sender's exchange of those partitions with the receiver,
                 begun at start, is complete       response: empty
    AE_ROOTS     request: u32 count, count x u32 partition
                 response: u32 count, count x u64 the root of the receiver's tree of each
                 (an error response while its trees are not ready)
    KEY_COUNTS   request: u32 partitions (the sender's count)
                 response: u32 count, count x u64 the live keys the receiver holds in each
                 partition, from a count begun after the request (DBSIZE)
    results:     batch of (u8 status, blob), one per requested key, in request order;
                 the blob is the object (OK), empty (NOT_FOUND) or a UTF-8 message (ERROR)

Versioning: a released layout never changes. A new layout is a new kind, and a node keeps
serving the old kind as long as older nodes may send it; a node answers a kind it does not
know with an error response (the connection stays up), so a sender can fall back. Decoding is
strict: a payload that is short, overlong or has a length running past its end is a
ProtocolError. Keys decode as bytes; objects and result blobs as memoryviews into the frame
(no copy), an empty one as b"". The per-key loops are compiled (ext/_peer.pyx); PING and
HELLO are packed here.
"""
from __future__ import annotations

import struct

from fastdyn._peer import (pack_hints, pack_keys, pack_puts, pack_results, unpack_hints,
                           unpack_keys, unpack_puts, unpack_results)
from fastdyn.cluster import gossip
from fastdyn.errors import ProtocolError

__all__ = ["PING", "HELLO", "REPLICA_GET", "REPLICA_PUT", "HINT", "FLUSH", "KEYS", "COORDINATE",
           "GOSSIP_SYN", "GOSSIP_PUSH", "HANDOFF_DONE", "HANDOFF_STATUS", "AE_TREE", "AE_LISTING", "AE_DONE",
           "AE_ROOTS", "KEY_COUNTS",
           "KINDS", "MessageKind", "OK", "NOT_FOUND", "ERROR", "PUT_DURABLE", "DYN_PUT", "INCR",
           "pack_coordinate", "unpack_coordinate", "pack_done", "unpack_done", "pack_change", "unpack_change",
           "pack_remaining", "unpack_remaining", "pack_tree_requests", "unpack_tree_requests",
           "pack_blobs", "unpack_blobs", "pack_segments", "unpack_segments", "pack_digests",
           "unpack_digests", "pack_exchanged", "unpack_exchanged", "pack_partitions",
           "unpack_partitions", "pack_roots", "unpack_roots", "pack_count_request",
           "unpack_count_request", "pack_counts", "unpack_counts",
           "pack_keys", "unpack_keys", "pack_puts", "unpack_puts", "pack_hints", "unpack_hints",
           "pack_results", "unpack_results", "pack_name", "unpack_name", "pack_epoch", "unpack_epoch", "pack_listing", "unpack_listing", "pack_empty",
           "unpack_empty"]

PING = 1
HELLO = 2
REPLICA_GET = 3
REPLICA_PUT = 4
HINT = 5
FLUSH = 6
KEYS = 7
COORDINATE = 8
GOSSIP_SYN = 9
GOSSIP_PUSH = 10
HANDOFF_DONE = 11
HANDOFF_STATUS = 12
AE_TREE = 13
AE_LISTING = 14
AE_DONE = 15
AE_ROOTS = 16
KEY_COUNTS = 17

# COORDINATE operations: the writes whose dot or counter entry is the coordinator's own, so a
# node that holds no replica of the key hands them to one that does
DYN_PUT = 1
INCR = 2

# per-key status in results
OK = 0
NOT_FOUND = 1
ERROR = 2

PUT_DURABLE = 0x01          # REPLICA_PUT flag: acknowledge only once the write is fsynced

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


# -- empty, name -----------------------------------------------------------------------------
def pack_empty(_=None) -> bytes:
    return b""


def unpack_empty(view) -> None:
    if len(view):
        raise ProtocolError(f"peer message has {len(view)} unexpected trailing bytes")


def pack_name(name: str) -> bytes:
    raw = name.encode()
    return _U32.pack(len(raw)) + raw


def unpack_name(view) -> str:
    if len(view) < 4 or _U32.unpack_from(view)[0] != len(view) - 4:
        raise ProtocolError("peer name is truncated or has trailing bytes")
    try:
        return bytes(view[4:]).decode()
    except UnicodeDecodeError:
        raise ProtocolError("peer name is not UTF-8") from None


def pack_epoch(epoch: int) -> bytes:
    return _U64.pack(epoch)


def unpack_epoch(view) -> int:
    if len(view) != 8:
        raise ProtocolError(f"a flush epoch is 8 bytes, got {len(view)}")
    return _U64.unpack_from(view)[0]


_LISTING = struct.Struct("<QI")


def pack_listing(start: int, limit: int) -> bytes:
    return _LISTING.pack(start, limit)


def unpack_listing(view) -> tuple[int, int]:
    if len(view) != _LISTING.size:
        raise ProtocolError(f"a key listing request is {_LISTING.size} bytes, got {len(view)}")
    return _LISTING.unpack_from(view)


_COORD_HEAD = struct.Struct("<BI")
_PUT_TAIL = struct.Struct("<BBBQ")
_DELTA = struct.Struct("<q")
_DEFAULT = 255


def _blob(raw) -> bytes:
    return _U32.pack(len(raw)) + bytes(raw)


def pack_coordinate(op: int, key: bytes, args) -> bytes:
    """op DYN_PUT: args (context, value, tombstone, w, dw, ttl_ms), w/dw None for the
    receiver's default; op INCR: args a list of deltas."""
    head = _COORD_HEAD.pack(op, len(key)) + key
    if op == DYN_PUT:
        context, value, tombstone, w, dw, ttl_ms = args
        return head + _blob(context) + _blob(value) + _PUT_TAIL.pack(
            bool(tombstone), _DEFAULT if w is None else w, _DEFAULT if dw is None else dw,
            ttl_ms)
    if op == INCR:
        return head + _U32.pack(len(args)) + b"".join(_DELTA.pack(d) for d in args)
    raise ValueError(f"unknown coordinate operation {op}")


def _take_blob(view, at: int, what: str):
    if len(view) - at < 4:
        raise ProtocolError(f"peer message truncated in {what}")
    (n,) = _U32.unpack_from(view, at)
    if n > len(view) - at - 4:
        raise ProtocolError(f"peer message truncated in {what}")
    return bytes(view[at + 4:at + 4 + n]), at + 4 + n


def unpack_coordinate(view):
    """(op, key, args) as pack_coordinate takes them."""
    if len(view) < _COORD_HEAD.size:
        raise ProtocolError("peer message truncated in coordinate header")
    op, _ = _COORD_HEAD.unpack_from(view)
    key, at = _take_blob(view, 1, "key")
    if op == DYN_PUT:
        context, at = _take_blob(view, at, "context")
        value, at = _take_blob(view, at, "value")
        if len(view) - at != _PUT_TAIL.size:
            raise ProtocolError("peer DYN_PUT options have the wrong size")
        tombstone, w, dw, ttl_ms = _PUT_TAIL.unpack_from(view, at)
        if tombstone > 1:
            raise ProtocolError(f"peer DYN_PUT tombstone flag is {tombstone}")
        return op, key, (context, value, bool(tombstone), None if w == _DEFAULT else w,
                         None if dw == _DEFAULT else dw, ttl_ms)
    if op == INCR:
        if len(view) - at < 4:
            raise ProtocolError("peer message truncated in delta count")
        (count,) = _U32.unpack_from(view, at)
        at += 4
        if len(view) - at != count * _DELTA.size:
            raise ProtocolError("peer INCR deltas have the wrong size")
        return op, key, [_DELTA.unpack_from(view, at + i * _DELTA.size)[0]
                         for i in range(count)]
    raise ProtocolError(f"unknown coordinate operation {op}")


_CHANGE = struct.Struct("<II")


def pack_change(change) -> bytes:
    """HANDOFF_STATUS: a change (name, status, version, ring crc)."""
    return _blob(change[0].encode()) + _CHANGE.pack(change[2], change[3])


def _take_change(view, what: str):
    """(name, version, ring crc) at the start of a HANDOFF_* payload, and the offset after."""
    raw, at = _take_blob(view, 0, "change name")
    if len(view) - at < _CHANGE.size:
        raise ProtocolError(f"peer {what} truncated in its change")
    try:
        name = raw.decode()
    except UnicodeDecodeError:
        raise ProtocolError(f"peer {what} change name is not UTF-8") from None
    return (name,) + _CHANGE.unpack_from(view, at), at + _CHANGE.size


def unpack_change(view):
    """(name, version, ring crc) of a HANDOFF_STATUS."""
    change, at = _take_change(view, "HANDOFF_STATUS")
    if at != len(view):
        raise ProtocolError("peer HANDOFF_STATUS has the wrong size")
    return change


def pack_remaining(count: int) -> bytes:
    return _U32.pack(count)


def unpack_remaining(view) -> int:
    if len(view) != 4:
        raise ProtocolError(f"a HANDOFF_STATUS answer is 4 bytes, got {len(view)}")
    return _U32.unpack_from(view)[0]


def pack_done(change, partitions) -> bytes:
    """HANDOFF_DONE: the change (as HANDOFF_STATUS), u32 count, the partitions."""
    parts = sorted(partitions)
    return (pack_change(change) + _U32.pack(len(parts))
            + b"".join(_U32.pack(p) for p in parts))


def unpack_done(view):
    """((name, version, ring crc), [partitions]) of a HANDOFF_DONE."""
    change, at = _take_change(view, "HANDOFF_DONE")
    if len(view) - at < 4:
        raise ProtocolError("peer message truncated in handoff partitions")
    (count,) = _U32.unpack_from(view, at)
    at += 4
    if len(view) - at != 4 * count:
        raise ProtocolError("peer HANDOFF_DONE partitions have the wrong size")
    return change, [_U32.unpack_from(view, at + 4 * i)[0] for i in range(count)]


def pack_tree_requests(requests) -> bytes:
    """AE_TREE: [(partition, request bytes), ...]."""
    return _U32.pack(len(requests)) + b"".join(
        _U32.pack(p) + _U32.pack(len(r)) + r for p, r in requests)


def _count(view, what: str) -> int:
    if len(view) < 4:
        raise ProtocolError(f"peer {what} truncated in its count")
    return _U32.unpack_from(view)[0]


def unpack_tree_requests(view):
    count, at, out = _count(view, "AE_TREE"), 4, []
    for _ in range(count):
        if len(view) - at < 4:
            raise ProtocolError("peer AE_TREE truncated in a partition")
        (p,) = _U32.unpack_from(view, at)
        blob, at = _take_blob(view, at + 4, "Merkle request")
        out.append((p, blob))
    if at != len(view):
        raise ProtocolError("peer AE_TREE has bytes after its requests")
    return out


def pack_blobs(blobs) -> bytes:
    return _U32.pack(len(blobs)) + b"".join(_U32.pack(len(b)) + b for b in blobs)


def unpack_blobs(view):
    count, at, out = _count(view, "AE_TREE answer"), 4, []
    for _ in range(count):
        blob, at = _take_blob(view, at, "Merkle reply")
        out.append(blob)
    if at != len(view):
        raise ProtocolError("peer AE_TREE answer has bytes after its replies")
    return out


def pack_segments(segments: dict) -> bytes:
    """AE_LISTING: {partition: [segment, ...]}."""
    out = [_U32.pack(len(segments))]
    for p, segs in segments.items():
        segs = list(segs)
        out.append(struct.pack(f"<II{len(segs)}I", p, len(segs), *segs))
    return b"".join(out)


def unpack_segments(view) -> dict:
    count, at, out = _count(view, "AE_LISTING"), 4, {}
    for _ in range(count):
        if len(view) - at < 8:
            raise ProtocolError("peer AE_LISTING truncated in a partition")
        p, n = struct.unpack_from("<II", view, at)
        at += 8
        if len(view) - at < 4 * n:
            raise ProtocolError("peer AE_LISTING truncated in its segments")
        out[p] = list(struct.unpack_from(f"<{n}I", view, at))
        at += 4 * n
    if at != len(view):
        raise ProtocolError("peer AE_LISTING has bytes after its partitions")
    return out


def pack_digests(items) -> bytes:
    """AE_LISTING answer: [(key, digest), ...]."""
    return _U32.pack(len(items)) + pack_digest_items(items)


def pack_digest_items(items) -> bytes:
    """The entries of an AE_LISTING answer without its count (to build it a part at a time:
    the count, then the parts)."""
    return b"".join(_U32.pack(len(k)) + k + _U32.pack(d) for k, d in items)


def unpack_digests(view) -> dict:
    count, at, out = _count(view, "AE_LISTING answer"), 4, {}
    for _ in range(count):
        key, at = _take_blob(view, at, "listed key")
        if len(view) - at < 4:
            raise ProtocolError("peer AE_LISTING answer truncated in a digest")
        out[bytes(key)] = _U32.unpack_from(view, at)[0]
        at += 4
    if at != len(view):
        raise ProtocolError("peer AE_LISTING answer has bytes after its keys")
    return out


_U64 = struct.Struct("<Q")


def pack_exchanged(args) -> bytes:
    """AE_DONE: (sender name, start ms, partitions)."""
    name, start, partitions = args
    parts = list(partitions)
    return (pack_name(name) + _U64.pack(start) + _U32.pack(len(parts))
            + struct.pack(f"<{len(parts)}I", *parts))


def unpack_exchanged(view):
    raw, at = _take_blob(view, 0, "AE_DONE sender")
    if len(view) - at < 12:
        raise ProtocolError("peer AE_DONE truncated")
    (start,) = _U64.unpack_from(view, at)
    (count,) = _U32.unpack_from(view, at + 8)
    at += 12
    if len(view) - at != 4 * count:
        raise ProtocolError("peer AE_DONE partitions have the wrong size")
    try:
        name = bytes(raw).decode()
    except UnicodeDecodeError:
        raise ProtocolError("peer AE_DONE sender is not UTF-8") from None
    return name, start, list(struct.unpack_from(f"<{count}I", view, at))


def _pack_array(code: str, items) -> bytes:
    items = list(items)
    return _U32.pack(len(items)) + struct.pack(f"<{len(items)}{code}", *items)


def _unpack_array(view, code: str, what: str) -> list:
    count, size = _count(view, what), struct.calcsize(code)
    if len(view) != 4 + size * count:
        raise ProtocolError(f"peer {what} announces {count} items in {len(view) - 4} bytes")
    return list(struct.unpack_from(f"<{count}{code}", view, 4))


def pack_partitions(partitions) -> bytes:
    """AE_ROOTS: [partition, ...]."""
    return _pack_array("I", partitions)


def unpack_partitions(view) -> list:
    return _unpack_array(view, "I", "AE_ROOTS")


def pack_roots(roots) -> bytes:
    """AE_ROOTS answer: [root, ...] (u64 each)."""
    return _pack_array("Q", roots)


def unpack_roots(view) -> list:
    return _unpack_array(view, "Q", "AE_ROOTS answer")


def pack_count_request(partitions: int) -> bytes:
    """KEY_COUNTS: the sender's partition count."""
    return _U32.pack(partitions)


def unpack_count_request(view) -> int:
    if len(view) != 4:
        raise ProtocolError(f"a KEY_COUNTS request is 4 bytes, got {len(view)}")
    return _U32.unpack_from(view)[0]


def pack_counts(counts) -> bytes:
    """KEY_COUNTS answer: [live keys, ...] per partition (u64 each)."""
    return _pack_array("Q", counts)


def unpack_counts(view) -> list:
    return _unpack_array(view, "Q", "KEY_COUNTS answer")


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
    MessageKind(FLUSH, "FLUSH", pack_epoch, unpack_epoch, pack_epoch, unpack_epoch),
    MessageKind(KEYS, "KEYS", pack_listing, unpack_listing, pack_keys, unpack_keys),
    MessageKind(COORDINATE, "COORDINATE", lambda args: pack_coordinate(*args),
                unpack_coordinate, pack_results, unpack_results),
    MessageKind(GOSSIP_SYN, "GOSSIP_SYN", lambda args: gossip.pack_syn(*args),
                gossip.unpack_syn, lambda args: gossip.pack_ack(*args), gossip.unpack_ack),
    MessageKind(GOSSIP_PUSH, "GOSSIP_PUSH", gossip.pack_push, gossip.unpack_push, pack_empty,
                unpack_empty),
    MessageKind(HANDOFF_DONE, "HANDOFF_DONE", lambda args: pack_done(*args), unpack_done,
                pack_empty, unpack_empty),
    MessageKind(HANDOFF_STATUS, "HANDOFF_STATUS", pack_change, unpack_change,
                pack_remaining, unpack_remaining),
    MessageKind(AE_TREE, "AE_TREE", pack_tree_requests, unpack_tree_requests, pack_blobs,
                unpack_blobs),
    MessageKind(AE_LISTING, "AE_LISTING", pack_segments, unpack_segments, pack_digests,
                unpack_digests),
    MessageKind(AE_DONE, "AE_DONE", pack_exchanged, unpack_exchanged, pack_empty,
                unpack_empty),
    MessageKind(AE_ROOTS, "AE_ROOTS", pack_partitions, unpack_partitions, pack_roots,
                unpack_roots),
    MessageKind(KEY_COUNTS, "KEY_COUNTS", pack_count_request, unpack_count_request,
                pack_counts, unpack_counts),
)}
