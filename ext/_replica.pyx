# cython: language_level=3
"""The replica's hot loops (fastdyn/cluster/replica.py, fastdyn/peer/handler.py): a batch of
REPLICA_PUTs applied and a batch of REPLICA_GETs answered, straight from the peer payload.

Most replica writes are plain SETs: a short register (object.py: tag 0xA1, node, ts, value)
over nothing or over another such register, where the sync is "the greater (ts, node) mark
wins" and the stored bytes are the incoming ones. That case is decided here from the 17-byte
headers; every other object goes to the Python path `slow(key, object)` unchanged. In Python
the per-key cost of the common case was most of a replica's CPU per write.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from fastdyn._logstore cimport Store, kd_entry, keydir
from xxh64 cimport FD_KEY_SEED, fd_xxh64

from fastdyn.errors import ProtocolError, StorageError

cdef extern from "keydir.h":
    kd_entry *kd_entry_at(const keydir *kd, size_t i) nogil
    size_t kd_entry_bytes(const kd_entry *e) nogil
    enum: KD_DEAD

cdef enum:
    TAG_REGISTER = 0xA1
    TAG_REGISTER_TTL = 0xA2
    TAG_DELETED = 0xA4
    REGISTER_SIZE = 17
    REGISTER_TTL_SIZE = 21
    OK = 0
    NOT_FOUND = 1
    PUT_DURABLE = 0x01
    AHEAD = 16         # keys whose keydir slots, entries and records are fetched at once

cdef uint64_t MAX_TIMESTAMP = (1ULL << 63) - 1

OK_EMPTY = (OK, b"")


cdef inline uint64_t _u64(const unsigned char *p) noexcept:
    cdef uint64_t v = 0
    cdef int i
    for i in range(7, -1, -1):
        v = (v << 8) | p[i]
    return v


cdef inline size_t _u32(const unsigned char *p) noexcept:
    return <size_t>p[0] | (<size_t>p[1] << 8) | (<size_t>p[2] << 16) | (<size_t>p[3] << 24)


cdef inline bint _short(const unsigned char *p, Py_ssize_t n) noexcept:
    """A short-format register (plain write, with TTL, or deleted): its header is its mark."""
    return n >= REGISTER_SIZE and (p[0] == TAG_REGISTER or p[0] == TAG_REGISTER_TTL
                                   or p[0] == TAG_DELETED)


cdef inline int _cmp_mark(const unsigned char *a, const unsigned char *b) noexcept:
    """Compare two short registers' (ts, node) marks: -1, 0, 1."""
    cdef uint64_t ta = _u64(a + 9), tb = _u64(b + 9)
    cdef uint64_t na, nb
    if ta != tb:
        return -1 if ta < tb else 1
    na = _u64(a + 1)
    nb = _u64(b + 1)
    if na != nb:
        return -1 if na < nb else 1
    return 0


cdef void _prefetch(Store store, const unsigned char *base, Py_ssize_t pos, Py_ssize_t end,
                    bint with_values) noexcept:
    """Fetch ahead what the lookups of the next AHEAD keys of a payload from pos will touch
    (Store._prefetch_lookups). Stops quietly at anything malformed: the parse that follows
    reports it."""
    cdef const char *keys[AHEAD]
    cdef size_t lens[AHEAD]
    cdef Py_ssize_t m = 0, kl, vl
    while m < AHEAD and end - pos >= 4:
        kl = <Py_ssize_t>_u32(base + pos)
        if not 0 < kl <= 65536 or kl > end - pos - 4:
            break
        vl = 0
        if with_values:
            if end - pos - 4 - kl < 4:
                break
            vl = 4 + <Py_ssize_t>_u32(base + pos + 4 + kl)
            if vl > end - pos - 4 - kl:
                break
        keys[m] = <const char *>base + pos + 4
        lens[m] = <size_t>kl
        m += 1
        pos += 4 + kl + vl
    store._prefetch_lookups(keys, lens, m)


cdef enum:
    NOT_DECIDED = -1   # not a plain write over a short register: the general merge decides
    WRITTEN = 0        # stored
    KEPT = 1           # the store holds this write already, or a newer one of the same stamp
    LOST_TO_NEWER = 2  # the store holds a write with a greater stamp


cdef object _merge_register(Store store, bytes key, const unsigned char *obj, Py_ssize_t n,
                            uint64_t flush_epoch, uint64_t ts_limit, uint64_t *max_ts,
                            int *outcome):
    """Sync a plain SET register (tag 0xA1) stamped in [flush_epoch, ts_limit] into the
    stored object when that is absent or another short register: the greater (ts, node) mark
    wins and the stored bytes become the incoming ones. *outcome: NOT_DECIDED for any other
    case; returns the stored bytes when they stay (KEPT, LOST_TO_NEWER), else None."""
    cdef Py_ssize_t kl = PyBytes_GET_SIZE(key)
    cdef uint64_t ts
    cdef int64_t slot
    cdef int c
    outcome[0] = NOT_DECIDED
    if (n < REGISTER_SIZE or obj[0] != TAG_REGISTER or not 0 < kl <= 65536
            or store.closed or store.broken):
        return None
    ts = _u64(obj + 9)
    if not (1 <= ts <= ts_limit and ts <= MAX_TIMESTAMP and ts >= flush_epoch):
        return None
    cdef unsigned char head[REGISTER_SIZE]
    cdef Py_ssize_t stored_len = -2      # -2: nothing stored
    cdef kd_entry *e = NULL
    try:
        slot = store._lookup(PyBytes_AS_STRING(key), kl)
        if slot >= 0:
            # the stored header alone decides; the value's bytes are made only to answer it
            e = kd_entry_at(&store.kd, slot)
            stored_len = store._value_head(e, <char *>head, REGISTER_SIZE)
            if stored_len == -1:
                return None        # compressed or large: the general path reads it
    except StorageError:
        return None     # unreadable: the general path answers the error
    if stored_len >= 0 and not _short(head, stored_len):
        return None
    if ts > max_ts[0]:
        max_ts[0] = ts
    if stored_len >= 0:
        c = _cmp_mark(head, obj)
        if c >= 0:
            # a newer write with a greater stamp is answered, so the coordinator stamps the
            # write again above it
            outcome[0] = LOST_TO_NEWER if _u64(head + 9) > ts else KEPT
            return store._read_value(e)
    store._put(key, PyBytes_FromStringAndSize(<const char *>obj, n), 0)
    outcome[0] = WRITTEN
    return None


cdef class ReplicaCore:
    """The state of a replica that its C paths use (fastdyn/cluster/replica.py's Replica adds
    the rest): the store, the node's hybrid clock, the flush epoch, and write_seq, the count of
    writes that the group commit waits on. The coordinator syncs its own copy of a plain write
    through merge_plain, with no Python call."""

    def __init__(self, store, hlc):
        self.store = store
        self.hlc = hlc
        self.flush_epoch = 0
        self.write_seq = 0
        self.in_c = isinstance(store, Store)

    cdef object merge_plain(self, bytes key, data):
        """merge_in of a plain SET register over nothing or over another short register,
        decided from the headers (_merge_register): the stored bytes afterwards, or None when
        the general merge must decide."""
        cdef Py_buffer buf
        cdef uint64_t max_ts = 0
        cdef object stored
        cdef int c
        if not self.in_c:
            return None
        PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
        try:
            stored = _merge_register(<Store>self.store, key, <const unsigned char *>buf.buf,
                                     buf.len, self.flush_epoch, self.hlc.accept_limit(),
                                     &max_ts, &c)
        finally:
            PyBuffer_Release(&buf)
        if c == NOT_DECIDED:
            return None
        if max_ts:
            self.hlc.observe(max_ts)
        if c == WRITTEN:
            self.write_seq += 1
            return data if type(data) is bytes else bytes(data)
        return stored

    def merge_plain_in(self, bytes key, data):
        """merge_plain for Python callers."""
        return self.merge_plain(key, data)


cdef class PutBatch:
    """The outcome of apply_puts: per-key results, and what the caller must account for."""
    cdef readonly list results
    cdef readonly uint64_t max_ts     # the greatest stamp written here (for the node's clock)
    cdef readonly Py_ssize_t writes   # records written by the fast path
    cdef readonly bint durable        # the batch asked for PUT_DURABLE

    def __cinit__(self):
        self.results = []


def apply_puts(Store store, payload, uint64_t flush_epoch, uint64_t ts_limit, slow):
    """Apply a REPLICA_PUT payload (messages.pack_puts layout) to store.

    A plain SET register stamped in [flush_epoch, ts_limit] over nothing or over another short
    register is decided here; each other key is slow(key bytes, object memoryview) ->
    (status, blob). A plain write that lost
    to a newer stored write answers (OK, stored bytes), as the Python path does."""
    cdef Py_buffer buf
    cdef PutBatch out = PutBatch()
    cdef const unsigned char *base
    cdef Py_ssize_t end, pos, i, n, kl, vl, kstart, vstart
    cdef bytes key
    cdef object stored = None
    cdef int c
    cdef object view = None
    cdef list results = out.results
    PyObject_GetBuffer(payload, &buf, PyBUF_SIMPLE)
    try:
        base = <const unsigned char *>buf.buf
        end = buf.len
        if end < 5:
            raise ProtocolError("peer message truncated in put header")
        if base[0] & ~PUT_DURABLE:
            raise ProtocolError(f"peer REPLICA_PUT has unknown flags {base[0]:#04x}")
        out.durable = base[0] & PUT_DURABLE
        n = <Py_ssize_t>_u32(base + 1)
        pos = 5
        for i in range(n):
            if i % AHEAD == 0:
                _prefetch(store, base, pos, end, True)
            if end - pos < 4:
                raise ProtocolError("peer message truncated in key")
            kl = <Py_ssize_t>_u32(base + pos)
            kstart = pos + 4
            if kl > end - kstart or end - kstart - kl < 4:
                raise ProtocolError("peer message truncated in key")
            vl = <Py_ssize_t>_u32(base + kstart + kl)
            vstart = kstart + kl + 4
            if vl > end - vstart:
                raise ProtocolError("peer message truncated in object")
            pos = vstart + vl
            key = PyBytes_FromStringAndSize(<const char *>base + kstart, kl)
            stored = _merge_register(store, key, base + vstart, vl, flush_epoch, ts_limit,
                                     &out.max_ts, &c)
            if c != NOT_DECIDED:
                if c == WRITTEN:
                    out.writes += 1
                    results.append(OK_EMPTY)
                elif c == LOST_TO_NEWER:
                    results.append((OK, stored))
                else:
                    results.append(OK_EMPTY)
                continue
            if view is None:
                view = memoryview(payload)
            results.append(slow(key, view[vstart:vstart + vl]))
        if pos != end:
            raise ProtocolError(f"peer message has {end - pos} unexpected trailing bytes")
    finally:
        PyBuffer_Release(&buf)
    return out


def answer_gets(Store store, payload, slow):
    """Answer a REPLICA_GET payload (messages.pack_keys layout) as a results payload
    (messages.pack_results layout), reading each key's stored object; slow(key) -> (status,
    blob) answers every key instead when not None (a node that keeps hints merges them)."""
    cdef Py_buffer buf
    cdef const unsigned char *base
    cdef Py_ssize_t end, pos, i, n, kl, total = 4
    cdef int64_t slot
    cdef list blobs = [], statuses = []
    cdef bytes key, blob, out
    cdef char *p
    PyObject_GetBuffer(payload, &buf, PyBUF_SIMPLE)
    try:
        base = <const unsigned char *>buf.buf
        end = buf.len
        if end < 4:
            raise ProtocolError("peer message truncated in batch count")
        n = <Py_ssize_t>_u32(base)
        pos = 4
        for i in range(n):
            if slow is None and i % AHEAD == 0:
                _prefetch(store, base, pos, end, False)
            if end - pos < 4:
                raise ProtocolError("peer message truncated in key")
            kl = <Py_ssize_t>_u32(base + pos)
            if kl > end - pos - 4:
                raise ProtocolError("peer message truncated in key")
            pos += 4
            if slow is not None or not 0 < kl <= 65536:
                key = PyBytes_FromStringAndSize(<const char *>base + pos, kl)
                status, blob = slow(key) if slow is not None else (2, b"bad key length")
                statuses.append(status)
            else:
                try:
                    slot = store._lookup(<const char *>base + pos, kl)
                    if slot < 0:
                        statuses.append(NOT_FOUND)
                        blob = b""
                    else:
                        blob = store._read_value(kd_entry_at(&store.kd, slot))
                        statuses.append(OK)
                except StorageError as exc:
                    statuses.append(2)
                    blob = str(exc).encode()
            pos += kl
            blobs.append(blob)
            total += 5 + PyBytes_GET_SIZE(blob)
        if pos != end:
            raise ProtocolError(f"peer message has {end - pos} unexpected trailing bytes")
    finally:
        PyBuffer_Release(&buf)
    out = PyBytes_FromStringAndSize(NULL, total)
    p = PyBytes_AS_STRING(out)
    _put32(p, len(blobs))
    p += 4
    for i in range(len(blobs)):
        blob = <bytes>blobs[i]
        p[0] = <char><int>statuses[i]
        _put32(p + 1, PyBytes_GET_SIZE(blob))
        memcpy(p + 5, PyBytes_AS_STRING(blob), PyBytes_GET_SIZE(blob))
        p += 5 + PyBytes_GET_SIZE(blob)
    return out


cdef inline void _put32(char *p, size_t v) noexcept:
    p[0] = <char>(v & 0xFF)
    p[1] = <char>((v >> 8) & 0xFF)
    p[2] = <char>((v >> 16) & 0xFF)
    p[3] = <char>((v >> 24) & 0xFF)


def census_step(Store store, cursor, size_t max_entries, uint64_t now_ms, uint64_t flush_epoch,
                uint64_t[::1] per_partition):
    """A step of a count of the keys a plain GET finds here (INFO's keyspace line, DBSIZE):
    walks up to max_entries keydir entries from `cursor` (None: the start) and decides short
    registers from their headers, adding each live one to its ring partition's count in
    `per_partition` (one per partition, a power of two of them). Returns (restarted, next
    cursor or None at the end, live, live with a TTL, keys to decide from their whole object:
    siblings, counters, compressed or unreadable values); `restarted` is True when the keydir
    moved since `cursor`, so the walk began again: per_partition was zeroed first and the
    caller's counts so far are void."""
    store._check_open()
    cdef keydir *kd = &store.kd
    cdef size_t pos = 0, seen = 0, live = 0, ttl = 0, kl
    cdef size_t parts = per_partition.shape[0]
    cdef int pbits = 0
    cdef uint64_t ts, gen = kd.gen
    cdef kd_entry *e
    cdef Py_ssize_t n
    cdef bint alive
    cdef unsigned char head[REGISTER_TTL_SIZE]
    if parts == 0 or parts & (parts - 1):
        raise ValueError(f"per_partition needs a power of two of counts, got {parts}")
    while (<size_t>1 << pbits) < parts:
        pbits += 1
    restarted = cursor is not None and cursor[1] != gen
    if cursor is not None and not restarted:
        pos = cursor[0]
    if restarted:
        per_partition[:] = 0
    others = []
    while pos < kd.arena_used and seen < max_entries:
        e = <kd_entry *>(kd.arena + pos)
        pos += kd_entry_bytes(e)
        if e.seg == KD_DEAD:
            continue
        seen += 1
        kl = <size_t>e.klen_m1 + 1
        try:
            n = store._value_head(e, <char *>head, REGISTER_TTL_SIZE)
        except StorageError:
            n = -1
        if n >= REGISTER_SIZE and (head[0] == TAG_REGISTER or head[0] == TAG_DELETED):
            alive = head[0] == TAG_REGISTER and _u64(head + 9) >= flush_epoch
        elif n >= REGISTER_TTL_SIZE and head[0] == TAG_REGISTER_TTL:
            ts = _u64(head + 9)
            alive = ts >= flush_epoch and ts // 1000 + _u32(head + 17) > now_ms
            ttl += alive
        else:
            others.append(PyBytes_FromStringAndSize(e.key, <Py_ssize_t>kl))
            continue
        if alive:
            live += 1
            per_partition[0 if pbits == 0 else fd_xxh64(e.key, kl, FD_KEY_SEED) >> (64 - pbits)] += 1
    return (restarted, None if pos >= kd.arena_used else (pos, gen), live, ttl, others)
