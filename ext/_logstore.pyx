# cython: language_level=3
"""The log-structured storage engine: Bitcask (Sheehy & Smith 2010) with a C keydir.

On disk a data directory holds append-only segment files `<id>.data` (16 hex digits), hint
files `<id>.hint` written by merges, `LOCK` (flock, one process per directory), the marker
`FASTDYN-STORE` and `RECOVERY.json` (what the last open found).

Segment file (format 2): "FDSEG002" | magic u64 | crc32c u32 of those 16 bytes, then records.
The magic is 8 random bytes drawn when the segment is created.

Record (little-endian):  magic u64 | hcrc u32 | crc u32 | timestamp_ms u64 | expiry_ms u64 |
flags u8 | key_len u32 | value_len u32 | key | value.  hcrc is the crc32c of the 25 bytes from
the timestamp to value_len; crc extends it over key and value (so it is the crc32c of everything
from the timestamp on).  Flags: 1 tombstone, 2 value is lz4 block-compressed (with its size
prefix), 4 clear marker (FLUSHDB: every record before it, in segment order, is dead).

Why a magic: after a damaged record a reader must find the next record, and a CRC alone is no
proof that bytes are a record - a client can embed a record with a valid CRC inside a value.
Every record of a segment starts with that segment's random magic, which no client ever sees,
so bytes a client wrote cannot frame (a guess is right once in 2**64).  Resynchronising looks
for the 8 magic bytes (memmem) and checks each candidate's header CRC in O(1); a record with an
intact header is then trusted for its length, and skipped whole if its key or value is damaged.
A scan is therefore linear in the segment size whatever the damage.  Fixed-size blocks
(LevelDB's log) would give the same property but split records across blocks; this store
reads values in place from a mapping, so records stay contiguous and the append path pays only
12 bytes and no extra CRC work per record.  The magic sits in the segment header and in the
first record too, so a damaged header does not lose the segment.  Merge gives the records it
copies the magic of their new segment.

Format 1 (before the magic) had a 29-byte header: crc32c u32 then the same 25 bytes of fields.
Opening a store converts each format-1 segment (a new file renamed over the old one; a
read-only open converts in memory).  Format 1 cannot tell a forged record from a real one, so
a format-1 segment is read only up to its first damaged record.

Hint file: "FDHINT02" | data file size u64 | data file magic u64 | entries (offset u32,
size u32, expiry_ms u64, flags u8, key_len u32, key) | entry count u64 | crc32c u32 of
everything before it.  A hint replays exactly like a scan of its data file; one that fails any
check (CRC, size and magic of its data file, every entry a plausible record inside it, in
order) is ignored and the data file scanned.

Segment order decides which record of a key wins at start-up.  A merge writes the records it
keeps to new segments whose ids follow the largest merged id (ids leave 2**20 room after each
segment), so a copied record still sorts after every older version of its key and before
anything written later.
"""
import json
import os
import threading
import time
import weakref

import fcntl
import lz4.block

from fastdyn.errors import (BadKey, DurabilityLost, PersistFailed, StorageCorruption, StorageError,
                            StoreLocked)

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from xxh64 cimport fd_xxh64, FD_KEY_SEED
from libc.string cimport memchr, memcpy, memcmp, memset
from libc.stdlib cimport malloc, realloc, free, qsort
from libc.errno cimport errno, EINTR, EIO
from posix.unistd cimport write as c_write, fdatasync, ftruncate, usleep
from posix.mman cimport (mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_PRIVATE,
                         MAP_ANONYMOUS, MAP_FAILED)
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME
from cpython.bytes cimport (PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE,
                            PyBytes_CheckExact)
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.unicode cimport PyUnicode_Check


cdef extern from "crc32c.h":
    void crc32c_setup()
    uint32_t crc32c_extend(uint32_t crc, const void *p, size_t n) nogil
    uint32_t crc32c_portable(uint32_t crc, const void *p, size_t n) nogil

cdef extern from "string.h":
    void *memmem(const void *hay, size_t hlen, const void *needle, size_t nlen) nogil

cdef extern from "segment_map.h":
    void seg_prefault(char *map, size_t start, size_t end) nogil

cdef extern from *:
    void __builtin_prefetch(const void *p) nogil

cdef extern from "keydir.h":
    void kd_prefetch_home(const keydir *kd, uint64_t h) nogil
    const kd_entry *kd_candidate(const keydir *kd, uint64_t h) nogil
    uint32_t KD_DEAD
    uint64_t kd_hash(const keydir *kd, const void *key, size_t len) nogil
    size_t kd_home(const keydir *kd, uint64_t h) nogil
    kd_entry *kd_entry_at(const keydir *kd, size_t i) nogil
    size_t kd_entry_bytes(const kd_entry *e) nogil
    int kd_init(keydir *kd, uint64_t seed0, uint64_t seed1) nogil
    void kd_free(keydir *kd) nogil
    int64_t kd_find(const keydir *kd, const void *key, size_t len, uint64_t h) nogil
    int64_t kd_insert(keydir *kd, const void *key, size_t len, uint64_t h) nogil
    void kd_remove(keydir *kd, size_t i) nogil
    int kd_maybe_compact(keydir *kd) nogil
    int kd_reserve(keydir *kd, size_t n) nogil
    int kd_clear(keydir *kd) nogil
    uint64_t kd_cursor_for_slot(const keydir *kd, size_t i) nogil
    size_t kd_memory(const keydir *kd) nogil
    ctypedef struct kd_timer:
        uint64_t expiry
        uint64_t hash
    int kd_timer_push(keydir *kd, uint64_t expiry, uint64_t h) nogil
    int kd_timer_due(const keydir *kd, uint64_t now) nogil
    kd_timer kd_timer_pop(keydir *kd) nogil
    int64_t kd_find_timer(const keydir *kd, uint64_t h, uint64_t expiry) nogil

crc32c_setup()

# ---- on-disk format ------------------------------------------------------------------------
cdef enum:
    HDR = 41                # record header bytes (format 2)
    R_HCRC = 8              # offsets in a record header
    R_CRC = 12
    R_TS = 16
    R_EXP = 24
    R_FLAGS = 32
    R_KL = 33
    R_VL = 37
    FIELDS = 25             # ts, expiry, flags, key_len, value_len: what the header CRC covers
    SEG_HDR = 20            # segment header: "FDSEG002", magic u64, crc32c u32
    V1_HDR = 29             # format-1 record: crc32c u32, then the same 25 bytes of fields
    F_TOMB = 1
    F_LZ4 = 2
    F_CLEAR = 4
    F_KNOWN = 7
    SEG_FREE = 0
    SEG_SEALED = 1
    SEG_ACTIVE = 2
    SEG_RETIRED = 3
    SYNC_NEVER = 0
    SYNC_INTERVAL = 1
    SYNC_ALWAYS = 2
    HINT_ENTRY = 21         # off u32, size u32, expiry u64, flags u8, key_len u32
    BROKEN_WRITE = 1        # a write() failed: writes are refused until a retry succeeds
    BROKEN_FSYNC = 2        # an fsync failed: writes are refused until the store is reopened
    HINT_HEAD = 24          # "FDHINT02", data file size u64, segment magic u64

cdef uint64_t MAX_VALUE_HARD = 1 << 30
cdef size_t WBUF_FLUSH = 1 << 20       # write() early once this much is pending
cdef size_t UNLOCKED_READ = 256 << 10  # values this large are copied with the GIL released
# The seed of the anti-entropy item digest (fastdyn._merkle.item_digest uses the same).
cdef uint64_t ITEM_SEED = 0x4D45524B4C45  # "MERKLE"
cdef uint64_t ID_GAP = 1 << 20         # room for merge outputs after each segment id
cdef size_t GUESS_CAP = 1 << 24        # most keys the keydir is pre-sized for from data sizes
cdef size_t NO_ENTRY = <size_t>-1     # a merge's move found by key, not by arena position
cdef size_t NOT_COPIED = <size_t>-2
cdef size_t MERGE_STEP = 16384         # records a merge looks at per hold of the GIL
cdef size_t WALK_STEP = 1 << 20        # keydir arena bytes a merge walks per hold of the GIL
cdef uint64_t WALK_RATIO = 8           # a keydir entry walked costs under 1/8 of a record scanned
MARKER = "FASTDYN-STORE"
MARKER_TEXT = "fastdyn log-structured store, format 2\n"

HEADER_BYTES = HDR
SEGMENT_HEADER_BYTES = SEG_HDR


cdef inline uint32_t ld32(const char *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v

cdef inline uint64_t ld64(const char *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v

cdef inline void st32(char *p, uint32_t v) noexcept nogil:
    memcpy(p, &v, 4)

cdef inline void st64(char *p, uint64_t v) noexcept nogil:
    memcpy(p, &v, 8)


cdef inline size_t encode_record(char *p, uint64_t magic, uint64_t ts, uint64_t expiry,
                                 uint8_t flags, const char *kp, size_t kl, const char *vp,
                                 size_t vl) noexcept nogil:
    """Write one whole record at p (room for HDR + kl + vl); returns its size."""
    cdef uint32_t hcrc
    st64(p, magic)
    st64(p + R_TS, ts)
    st64(p + R_EXP, expiry)
    p[R_FLAGS] = <char>flags
    st32(p + R_KL, <uint32_t>kl)
    st32(p + R_VL, <uint32_t>vl)
    if kl:
        memcpy(p + HDR, kp, kl)
    if vl:
        memcpy(p + HDR + kl, vp, vl)
    hcrc = crc32c_extend(0, p + R_TS, FIELDS)
    st32(p + R_HCRC, hcrc)
    st32(p + R_CRC, crc32c_extend(hcrc, p + HDR, kl + vl))
    return HDR + kl + vl


cdef inline size_t fields_size(const char *f) noexcept nogil:
    """Record size (header + key + value) the 25 field bytes at f describe, or 0 if they are
    not sane.  The fields are the same in both formats; hdr is the format's header size."""
    cdef uint8_t flags = <uint8_t>f[16]
    cdef uint64_t kl = ld32(f + 17)
    cdef uint64_t vl = ld32(f + 21)
    if flags & ~F_KNOWN:
        return 0
    if flags & F_CLEAR:
        if kl != 0 or vl != 0:
            return 0
    elif kl == 0 or kl > MAX_KEY:
        return 0
    if (flags & F_TOMB) and vl != 0:
        return 0
    if vl > MAX_VALUE_HARD:
        return 0
    return <size_t>(kl + vl + 1)      # + 1: a clear marker (no key, no value) is not 0


cdef inline size_t frame_size(const char *p, uint64_t magic) noexcept nogil:
    """Size of the record whose header (HDR bytes, present) is at p if that header is one
    this segment wrote: its magic, a sane length and the header CRC; else 0.  O(1)."""
    cdef size_t body
    if ld64(p) != magic:
        return 0
    body = fields_size(p + R_TS)
    if body == 0 or crc32c_extend(0, p + R_TS, FIELDS) != ld32(p + R_HCRC):
        return 0
    return HDR + body - 1


cdef inline bint body_ok(const char *p, size_t size) noexcept nogil:
    """The key and value of a framed record of `size` bytes at p check against its CRC."""
    return crc32c_extend(ld32(p + R_HCRC), p + HDR, size - HDR) == ld32(p + R_CRC)


cdef inline int64_t find_frame(const char *base, size_t pos, size_t end,
                               uint64_t magic) noexcept nogil:
    """First offset >= pos where a record header of this segment starts, or -1.  Candidates
    are the places where the segment's 8-byte random magic occurs (found with memmem), each
    checked in O(1): a scan is linear in the segment size whatever the damage."""
    cdef const char *hit
    while pos + HDR <= end:
        if frame_size(base + pos, magic):
            return <int64_t>pos
        hit = <const char *>memmem(base + pos + 1, end - pos - 1, &magic, 8)
        if hit == NULL:
            return -1
        pos = <size_t>(hit - base)
    return -1


cdef inline size_t next_record(const char *base, size_t *pos, size_t end,
                               uint64_t magic) noexcept nogil:
    """Move *pos to the next whole record that checks out (skipping damaged bytes, and a
    record whose header is intact but body is not as one piece); returns its size, 0 at the
    end.  Bytes inside a key or value never frame: they do not hold the segment's magic."""
    cdef int64_t nxt
    cdef size_t size
    while True:
        nxt = find_frame(base, pos[0], end, magic)
        if nxt < 0:
            pos[0] = end
            return 0
        pos[0] = <size_t>nxt
        size = frame_size(base + nxt, magic)
        if size > end - pos[0]:
            pos[0] = end
            return 0
        if body_ok(base + nxt, size):
            return size
        pos[0] += size


cdef inline size_t check_v1(const char *base, size_t pos, size_t end) noexcept nogil:
    """Size of the valid format-1 record at base+pos (header sane, CRC good), or 0."""
    cdef size_t body
    if end - pos < V1_HDR:
        return 0
    body = fields_size(base + pos + 4)
    if body == 0 or V1_HDR + body - 1 > end - pos:
        return 0
    if crc32c_extend(0, base + pos + 4, V1_HDR - 4 + body - 1) != ld32(base + pos):
        return 0
    return V1_HDR + body - 1


cdef size_t v1_prefix(const char *base, size_t end, size_t *nrec) noexcept nogil:
    """Length of the run of valid format-1 records at the start of a segment (and their
    count).  Format 1 has no magic: past a damaged record, bytes a client wrote inside a value
    cannot be told from records, so nothing after one is trusted."""
    cdef size_t pos = 0, rec
    nrec[0] = 0
    while pos < end:
        rec = check_v1(base, pos, end)
        if rec == 0:
            break
        pos += rec
        nrec[0] += 1
    return pos


cdef void v1_convert(const char *src, size_t end, char *dst, uint64_t magic) noexcept nogil:
    """Rewrite format-1 records src[0:end] (all valid) as format 2 after a segment header at
    dst: the magic and the header CRC are added, the record CRC carries over unchanged."""
    cdef size_t pos = 0, out = SEG_HDR, rec
    seg_header(dst, magic)
    while pos < end:
        rec = check_v1(src, pos, end)
        st64(dst + out, magic)
        st32(dst + out + R_HCRC, crc32c_extend(0, src + pos + 4, FIELDS))
        memcpy(dst + out + R_CRC, src + pos, 4)
        memcpy(dst + out + R_TS, src + pos + 4, rec - 4)
        out += rec + (HDR - V1_HDR)
        pos += rec


cdef void seg_header(char *p, uint64_t magic) noexcept nogil:
    memcpy(p, "FDSEG002", 8)
    st64(p + 8, magic)
    st32(p + 16, crc32c_extend(0, p, 16))


cdef int seg_format(const char *p, size_t size, uint64_t *magic) noexcept nogil:
    """Format of a segment file: 2 (with *magic set; 3 when its header is damaged but its magic
    was recovered) or 1.  The magic is kept in the header with a CRC; if the header fails, the
    first record (right after it) carries the magic too."""
    cdef char head[16]
    if size >= SEG_HDR:
        memcpy(head, "FDSEG002", 8)
        memcpy(head + 8, p + 8, 8)
        if crc32c_extend(0, head, 16) == ld32(p + 16):
            magic[0] = ld64(p + 8)
            return 2 if memcmp(p, head, 8) == 0 else 3
        if check_v1(p, 0, size) == 0:
            if size >= SEG_HDR + HDR and frame_size(p + SEG_HDR, ld64(p + SEG_HDR)):
                magic[0] = ld64(p + SEG_HDR)
                return 3
            if memcmp(p, head, 8) == 0:
                # header and first record both damaged: the magic that frames the most bytes
                # of consecutive records is the segment's (a chain forged inside one value
                # cannot outgrow the records around it)
                magic[0] = longest_chain_magic(p, size)
                if magic[0] == 0:
                    magic[0] = ld64(p + 8)
                return 3
    return 1


cdef uint64_t longest_chain_magic(const char *p, size_t size) noexcept nogil:
    """The 8 bytes that start the longest chain of framed records after the header, or 0.
    Linear: the search resumes after each chain it walks."""
    cdef size_t q = SEG_HDR, r, k, run, best_run = 0
    cdef uint64_t m, best = 0
    while q + HDR <= size:
        m = ld64(p + q)
        run = 0
        r = q
        while r + HDR <= size:
            k = frame_size(p + r, m)
            if k == 0 or k > size - r:
                break
            run += k
            r += k
        if run > best_run:
            best_run = run
            best = m
        q = r if r > q else q + 1
    return best


cdef int64_t hint_count(const char *p, size_t n, uint64_t data_size,
                        uint64_t magic) noexcept nogil:
    """Entries of a hint file that checks out against its data file (size and magic), or -1.
    Nothing in a hint is used unless all of it is sound: the CRC, and every entry describing a
    plausible record inside the data file, in order, none overlapping."""
    cdef size_t pos, end, kl, size, count = 0
    cdef uint64_t off, prev_end = SEG_HDR
    cdef uint8_t flags
    if n < HINT_HEAD + 12 or memcmp(p, "FDHINT02", 8) != 0:
        return -1
    if crc32c_extend(0, p, n - 4) != ld32(p + n - 4):
        return -1
    if ld64(p + 8) != data_size or ld64(p + 16) != magic:
        return -1
    end = n - 12
    pos = HINT_HEAD
    while pos < end:
        if end - pos < HINT_ENTRY:
            return -1
        off = ld32(p + pos)
        size = ld32(p + pos + 4)
        flags = <uint8_t>p[pos + 16]
        kl = ld32(p + pos + 17)
        if kl > MAX_KEY or end - pos - HINT_ENTRY < kl or flags & ~F_KNOWN:
            return -1
        if (kl == 0) != ((flags & F_CLEAR) != 0) or size < HDR + kl:
            return -1
        if (flags & (F_TOMB | F_CLEAR)) and size != HDR + kl:
            return -1
        if size - HDR - kl > MAX_VALUE_HARD or off < prev_end or off + size > data_size:
            return -1
        prev_end = off + size
        pos += HINT_ENTRY + kl
        count += 1
    if pos != end or count != ld64(p + end):
        return -1
    return <int64_t>count


cdef uint64_t new_magic() except? 0:
    """A random segment magic: 8 bytes no client can know, not all equal (so runs of one
    byte, such as zeroed blocks, never contain it)."""
    cdef bytes r
    cdef const char *q
    while True:
        r = os.urandom(8)
        q = PyBytes_AS_STRING(r)
        if memcmp(q, q + 1, 7) != 0:
            return ld64(q)


def _create_segment(path, uint64_t seg_id):
    """Create an empty segment file with its header: (fd, magic).  O_APPEND, so every later
    write() lands at the end."""
    cdef char head[SEG_HDR]
    cdef uint64_t magic = new_magic()
    seg_header(head, magic)
    name = os.path.join(path, "%016x.data" % seg_id)
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        if os.write(fd, PyBytes_FromStringAndSize(head, SEG_HDR)) != SEG_HDR:
            raise StorageError(f"short write creating segment {name}")
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    return fd, magic


def crc32c(data, crc=0, portable=False):
    """CRC-32C of a bytes-like object (extending `crc`); `portable` forces the table code."""
    cdef Py_buffer buf
    PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
    try:
        if portable:
            return crc32c_portable(<uint32_t>crc, buf.buf, <size_t>buf.len)
        return crc32c_extend(<uint32_t>crc, buf.buf, <size_t>buf.len)
    finally:
        PyBuffer_Release(&buf)


cdef int64_t wall_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000 + ts.tv_nsec // 1000000


cdef uint64_t expiry_arg(object expiry_ms) except? 0:
    """An expiry argument: a non-negative integer (absolute Unix time in ms, 0 = none)."""
    if not isinstance(expiry_ms, int) or expiry_ms < 0 or expiry_ms >= (1 << 63):
        raise ValueError(f"expiry_ms must be a non-negative integer (Unix time in ms), "
                         f"got {expiry_ms!r}")
    return expiry_ms


cdef bytes key_bytes(object key):
    """The key as bytes, validated: bytes, str (UTF-8) or another bytes-like object."""
    cdef bytes b
    if PyBytes_CheckExact(key):
        b = <bytes>key
    elif PyUnicode_Check(key):
        b = (<str>key).encode("utf-8")
    elif isinstance(key, (bytes, bytearray, memoryview)):
        b = bytes(key)
    else:
        raise TypeError(f"keys must be bytes or str, not {type(key).__name__}")
    if PyBytes_GET_SIZE(b) == 0 or PyBytes_GET_SIZE(b) > MAX_KEY:
        raise BadKey(f"key must be 1 to {MAX_KEY} bytes long, got {PyBytes_GET_SIZE(b)}")
    return b


ctypedef struct FoldItem:
    uint64_t seg_id
    uint32_t seg
    uint32_t off


cdef int fold_item_cmp(const void *a, const void *b) noexcept nogil:
    cdef const FoldItem *x = <const FoldItem *>a
    cdef const FoldItem *y = <const FoldItem *>b
    if x.seg_id != y.seg_id:
        return -1 if x.seg_id < y.seg_id else 1
    if x.off != y.off:
        return -1 if x.off < y.off else 1
    return 0


ctypedef struct HashedKey:
    uint64_t h
    size_t pos                  # the entry's place in the keydir arena


cdef int hashed_key_cmp(const void *a, const void *b) noexcept nogil:
    cdef uint64_t x = (<const HashedKey *>a).h, y = (<const HashedKey *>b).h
    return -1 if x < y else (1 if x > y else 0)


cdef uint64_t select_hash(HashedKey *a, size_t n, size_t k, uint64_t seed) noexcept nogil:
    """The k-th smallest hash of a[0:n] (k < n), a moved so that a[0:k] hold no greater ones
    and a[k+1:n] no smaller ones: Hoare's FIND (as Wirth writes it) around random pivots, so
    that no order of keys a client writes makes it quadratic."""
    cdef Py_ssize_t lo = 0, hi = <Py_ssize_t>n - 1, i, j, kk = <Py_ssize_t>k
    cdef uint64_t pivot, x = seed | 1
    cdef HashedKey t
    while lo < hi:
        x ^= x << 13                      # xorshift64
        x ^= x >> 7
        x ^= x << 17
        pivot = a[lo + <Py_ssize_t>(x % <uint64_t>(hi - lo + 1))].h
        i, j = lo, hi
        while i <= j:
            while a[i].h < pivot:
                i += 1
            while pivot < a[j].h:
                j -= 1
            if i <= j:
                t = a[i]; a[i] = a[j]; a[j] = t
                i += 1
                j -= 1
        if j < kk:
            lo = i
        if kk < i:
            hi = j
    return a[kk].h


cdef int sort_pairs(uint64_t *a, size_t n) noexcept nogil:
    """Sort the n pairs of words at a by their first word: LSD radix a byte at a time,
    skipping the bytes all keys share (a merge sorts up to one pair per keydir entry; qsort
    cost more than walking them).  -1: no memory."""
    cdef uint64_t *tmp
    cdef uint64_t *src = a
    cdef uint64_t *dst
    cdef uint64_t *t
    cdef size_t count[256]
    cdef size_t i, total, c
    cdef uint64_t seen = 0
    cdef int shift
    if n < 2:
        return 0
    for i in range(n):
        seen |= a[2 * i]
    tmp = <uint64_t *>malloc(n * 2 * sizeof(uint64_t))
    if tmp == NULL:
        return -1
    dst = tmp
    for shift in range(0, 64, 8):
        if (seen >> shift) == 0:
            break
        memset(count, 0, sizeof(count))
        for i in range(n):
            count[(src[2 * i] >> shift) & 255] += 1
        if count[(src[0] >> shift) & 255] == n:
            continue
        total = 0
        for i in range(256):
            c = count[i]
            count[i] = total
            total += c
        for i in range(n):
            c = (src[2 * i] >> shift) & 255
            dst[2 * count[c]] = src[2 * i]
            dst[2 * count[c] + 1] = src[2 * i + 1]
            count[c] += 1
        t = src
        src = dst
        dst = t
    if src != a:
        memcpy(a, src, n * 2 * sizeof(uint64_t))
    free(tmp)
    return 0


cdef void let_others_run() noexcept nogil:
    """Called with the GIL released, between steps of a long merge.  Releasing and at once
    retaking the GIL would mostly win the race against a thread waiting for it (which must
    first be woken) and restart that thread's 5 ms wait before it may ask for a switch: stay
    out briefly so that the waiter (the event loop) really gets the GIL."""
    usleep(50)


cdef void merge_pause(uint32_t us, uint64_t *paused) noexcept nogil:
    """Called with the GIL released, between steps of a merge: the node may slow its merges
    down (Store.merge_pause_us, 0 unless a cluster's admission control sets it)."""
    if us:
        usleep(us)
        paused[0] += us


cdef class _Batch:
    """Context manager returned by Store.batch(); nests."""
    cdef Store store

    def __cinit__(self, Store store):
        self.store = store

    def __enter__(self):
        self.store._check_writable()
        self.store.batch_depth += 1
        return self.store

    def __exit__(self, exc_type, exc, tb):
        self.store.batch_depth -= 1
        if self.store.batch_depth == 0 and not self.store.closed:
            self.store._flush()
            if self.store.sync_mode == SYNC_ALWAYS:
                self.store._fsync_active()
        return False


def _flusher_loop(ref, stop, double period):
    """Background duty of a store: write() pending records, fsync (interval policy) and start
    merges.  Holds only a weak reference, so a forgotten store can still be collected."""
    while not stop.wait(period):
        store = ref()
        if store is None:
            return
        try:
            store._tick()
        except Exception:
            # a closed store or a transient I/O error: the next tick or call reports it
            pass
        del store


cdef class Store:
    """A log-structured hash store in one data directory (see the module docstring).

    Keys are bytes (str keys are UTF-8 encoded; bytearray/memoryview are copied), 1 B to
    64 KiB.  Values are bytes-like, up to `max_value_bytes`; str values raise TypeError rather
    than guess an encoding.

    Durability (`sync`):
      - "always": every mutating call outside `batch()` returns only after its record is
        fsynced; in a batch, one write() and one fsync at the end of the outermost block.
      - "interval": records are handed to the OS (write()) at the end of each batch, when
        1 MiB is pending, and every `sync_interval_ms` by a background thread, which then
        fsyncs.  A crash loses at most about the last interval of writes.
      - "never": like "interval" without the fsync (the OS decides).
    A server on an event loop uses `batch()`, `flush_buffer()` and `fsync()` (see them) to
    commit a whole turn's writes with one write() and one fsync.

    Failures (docs/storage.md, "Durability"): a failed write() (disk full, file size limit,
    I/O error) is cut back out of the file and its records stay pending; writes raise
    PersistFailed until a retry succeeds.  A failed fsync makes every later write and fsync
    raise DurabilityLost until the store is reopened.  Reads keep working in both cases.
    `fsync_hook(fd, file_name, length)`, when set (tests only), runs in place of fdatasync of a
    data file `length` bytes long; an OSError it raises counts as a failed fsync.

    Other options: `segment_bytes` (rotate the active segment past this size),
    `compress_threshold` (lz4-compress values at least this long when that saves space; 0 =
    never), `merge_ratio` and `auto_merge` (a background thread merges sealed segments whose
    dead bytes reach that fraction, and writes hint files), `on_write(key, value_or_None)`
    (called after every put and every delete of a live key, None meaning deleted; not for
    expiry, set_expiry or clear).
    """

    def __cinit__(self):
        self.segs = NULL
        self.nsegs = 0
        self.segs_cap = 0
        self.active = -1
        self.wbuf = NULL
        self.wlen = 0
        self.wcap = 0
        self.closed = 1
        self.kd.slots = NULL
        self.kd.arena = NULL

    def __init__(self, path, sync="interval", int sync_interval_ms=1000,
                 max_value_bytes=16 << 20, segment_bytes=64 << 20, compress_threshold=4096,
                 merge_ratio=0.4, auto_merge=True, on_write=None, clock=None,
                 read_only=False, expire_hold_ms=0):
        """Open (creating if needed) the store in directory `path`.

        `clock`: a callable returning the current Unix time in milliseconds (tests use it to
        control expiry); default the system clock.  `read_only`: inspect without changing
        anything (no repair, no writes); the directory must exist.
        `expire_hold_ms` (> 0): records whose expiry is later than this do not expire, even at
        open (see the `expire_hold_ms` property).
        """
        if sync not in ("always", "interval", "never"):
            raise ValueError(f"sync must be 'always', 'interval' or 'never', not {sync!r}")
        if sync_interval_ms <= 0:
            raise ValueError("sync_interval_ms must be positive")
        if not 0 < max_value_bytes <= MAX_VALUE_HARD:
            raise ValueError(f"max_value_bytes must be between 1 and {MAX_VALUE_HARD}")
        if not 1024 <= segment_bytes <= (2 << 30):
            raise ValueError("segment_bytes must be between 1 KiB and 2 GiB")
        if compress_threshold < 0:
            raise ValueError("compress_threshold must be >= 0 (0 disables compression)")
        if not 0.0 < merge_ratio <= 1.0:
            raise ValueError("merge_ratio must be in (0, 1]")
        if on_write is not None and not callable(on_write):
            raise TypeError("on_write must be callable")
        self.path = os.path.abspath(os.fspath(path))
        self.sync = sync
        self.sync_mode = {"never": SYNC_NEVER, "interval": SYNC_INTERVAL, "always": SYNC_ALWAYS}[sync]
        self.sync_interval_ms = sync_interval_ms
        self.max_value_bytes = max_value_bytes
        self.segment_bytes = segment_bytes
        self.compress_threshold = compress_threshold
        self.merge_ratio = merge_ratio
        self.auto_merge = auto_merge and not read_only
        self.on_write = on_write
        self._clock = clock
        self.expire_hold = expire_hold_ms
        self.read_only = 1 if read_only else 0
        self.map_len = segment_bytes + HDR + MAX_KEY + max_value_bytes + 4096
        self._merge_lock = threading.Lock()
        self._merges_done = 0
        self._opened_unsynced = set()
        seed = os.urandom(16)
        if kd_init(&self.kd, ld64(PyBytes_AS_STRING(seed)), ld64(PyBytes_AS_STRING(seed) + 8)) < 0:
            raise MemoryError("cannot allocate the keydir")
        self._lock_directory()
        try:
            self.closed = 0
            self._open_segments()
        except BaseException:
            self._release_all()
            raise
        if not self.read_only:
            self._flusher_stop = threading.Event()
            period = self.sync_interval_ms / 1000.0 if self.sync_mode == SYNC_INTERVAL else 1.0
            self._flusher = threading.Thread(
                target=_flusher_loop, args=(weakref.ref(self), self._flusher_stop, period),
                name="fastdyn-store-flusher", daemon=True)
            self._flusher.start()

    # ---- opening --------------------------------------------------------------------------
    def _lock_directory(self):
        path = self.path
        if self.read_only:
            if not os.path.isdir(path):
                raise StorageError(f"{path} is not a directory")
            if not os.path.exists(os.path.join(path, MARKER)):
                raise StorageError(f"{path} is not a fastdyn data directory (no {MARKER} file)")
        else:
            os.makedirs(path, exist_ok=True)
        lock_path = os.path.join(path, "LOCK")
        try:
            f = open(lock_path, "a+" if not self.read_only else "r")
        except FileNotFoundError:
            raise StorageError(f"{path} is not a fastdyn data directory (no LOCK file)") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            who = f" (pid {holder})" if holder else ""
            raise StoreLocked(
                f"data directory {path} is locked by another process{who}; "
                "only one process may open a store at a time") from None
        if not self.read_only:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            marker = os.path.join(path, MARKER)
            if not os.path.exists(marker):
                with open(marker, "w") as m:
                    m.write(MARKER_TEXT)
                _fsync_dir(path)
        self._lock_file = f

    def _open_segments(self):
        cdef uint32_t si
        cdef int64_t now = self._now()
        cdef int64_t n
        t0 = time.perf_counter()
        report = {"segments": 0, "from_hints": 0, "scanned": 0, "keys": 0, "truncated": [],
                  "corrupt": [], "hint_fallbacks": [], "cleared": [], "migrated": [],
                  "seconds": 0.0}
        self.recovery_report = report      # replaying a clear marker lists what it cleared
        names = sorted(os.listdir(self.path))
        ids = []
        for name in names:
            if name.endswith(".tmp") and not self.read_only:
                os.unlink(os.path.join(self.path, name))
            elif name.endswith(".data") and len(name) == 21:
                try:
                    ids.append(int(name[:16], 16))
                except ValueError:
                    pass
        ids.sort()
        if not self.read_only:
            # a hint whose data file is gone (deleted by a clear while it was being written)
            wanted = {"%016x.hint" % seg_id for seg_id in ids}
            for name in names:
                if name.endswith(".hint") and len(name) == 21 and name not in wanted:
                    os.unlink(os.path.join(self.path, name))
        self.next_major = (ids[-1] // ID_GAP + 1) if ids else 1
        flags = os.O_RDONLY if self.read_only else os.O_RDWR
        hints = []
        expected = guessed = 0
        for seg_id in ids:
            si = self._open_segment(seg_id, flags, report)
            try:
                with open(os.path.join(self.path, "%016x.hint" % seg_id), "rb") as hf:
                    hint = hf.read()
            except FileNotFoundError:
                hint = None
            if hint is not None:
                n = hint_count(PyBytes_AS_STRING(hint), PyBytes_GET_SIZE(hint),
                               self.segs[si].size, self.segs[si].magic)
                if n < 0:
                    report["hint_fallbacks"].append("%016x.hint" % seg_id)
                    hint = None
                else:
                    expected += n
            if hint is None:
                guessed += self.segs[si].size // 256
            hints.append(hint)
        # size the keydir once instead of growing it step by step while replaying; a guess
        # from data sizes is capped, and if memory is short the table just grows as it goes
        kd_reserve(&self.kd, min(expected + min(guessed, GUESS_CAP), 1 << 32))
        for si in range(self.nsegs):
            report["segments"] += 1
            if hints[si] is not None and self._load_hint(si, hints[si], now):
                self.segs[si].hinted = 1
                report["from_hints"] += 1
                continue
            report["scanned"] += 1
            self._scan_segment(si, now, report)
        for si in range(self.nsegs):
            if self.segs[si].state != SEG_RETIRED and not self.read_only:
                self._opened_unsynced.add(self.segs[si].id)
            self._release(si)      # sealed segments are read through their mapping alone
        report["keys"] = self.kd.count
        report["seconds"] = round(time.perf_counter() - t0, 6)
        if not self.read_only:
            tmp = os.path.join(self.path, "RECOVERY.json.tmp")
            with open(tmp, "w") as f:
                json.dump(dict(report, opened_at=time.time()), f, indent=1)
            os.replace(tmp, os.path.join(self.path, "RECOVERY.json"))

    cdef uint32_t _open_segment(self, uint64_t seg_id, int oflags, dict report) except? 0xFFFFFFFF:
        """Open and map one segment file.  A format-1 segment is converted to format 2: on disk
        (a new file renamed over it) or, read-only, in memory."""
        cdef uint64_t magic = 0
        cdef size_t nrec, valid, out_len
        cdef char *buf
        cdef int fmt, err = 0, tfd
        name = "%016x.data" % seg_id
        data_path = os.path.join(self.path, name)
        fd = os.open(data_path, oflags | os.O_CLOEXEC)
        size = os.fstat(fd).st_size
        cdef uint32_t si = self._add_seg(seg_id, fd, size, size, SEG_SEALED)
        cdef char *old = self.segs[si].map
        fmt = seg_format(old, size, &magic)
        if fmt == 3:
            report["corrupt"].append({"file": name, "offset": 0, "bytes": SEG_HDR})
        if fmt != 1:
            self.segs[si].magic = magic
            return si
        valid = v1_prefix(old, size, &nrec)
        if valid < <size_t>size:
            report["truncated"].append({"file": name, "offset": valid, "bytes": size - valid})
        out_len = SEG_HDR + valid + nrec * (HDR - V1_HDR)
        buf = <char *>mmap(NULL, out_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0)
        if buf == MAP_FAILED:
            raise MemoryError(f"cannot convert segment {name} to format 2")
        magic = new_magic()
        with nogil:
            v1_convert(old, valid, buf, magic)
        report["migrated"].append(name)
        if not self.read_only:
            tmp = data_path + ".tmp"
            try:
                tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                with nogil:
                    err = write_all(tfd, buf, out_len)
                    if err == 0 and fdatasync(tfd) != 0:
                        err = errno
                os.close(tfd)
                if err:
                    raise StorageError(f"cannot convert segment {data_path} to format 2: "
                                       f"{os.strerror(err)}")
            finally:
                munmap(buf, out_len)
            os.replace(tmp, data_path)
            _fsync_dir(self.path)
            try:
                os.unlink(os.path.join(self.path, "%016x.hint" % seg_id))
            except FileNotFoundError:
                pass
            self.segs[si].fd = os.open(data_path, oflags | os.O_CLOEXEC)
            os.close(fd)
            buf = <char *>mmap(NULL, out_len, PROT_READ, MAP_SHARED, self.segs[si].fd, 0)
            if buf == MAP_FAILED:
                buf = NULL
                err = errno
        if old != NULL:
            munmap(old, self.segs[si].map_len)
        self.segs[si].map = buf
        self.segs[si].map_len = out_len if buf != NULL else 0
        self.segs[si].size = out_len
        self.segs[si].live = SEG_HDR
        self.segs[si].magic = magic
        if buf == NULL:
            raise StorageError(f"cannot map segment {name}: {os.strerror(err)}")
        return si

    cdef uint32_t _add_seg(self, uint64_t seg_id, int fd, size_t map_len, uint64_t size,
                           int state) except? 0xFFFFFFFF:
        cdef Seg *segs
        cdef void *m
        if self.nsegs == self.segs_cap:
            segs = <Seg *>realloc(self.segs, (self.segs_cap * 2 + 16) * sizeof(Seg))
            if segs == NULL:
                raise MemoryError()
            self.segs = segs
            self.segs_cap = self.segs_cap * 2 + 16
        m = NULL
        if map_len:
            m = mmap(NULL, map_len, PROT_READ, MAP_SHARED, fd, 0)
            if m == MAP_FAILED:
                os.close(fd)
                raise StorageError(f"cannot map segment {seg_id:016x}: {os.strerror(errno)}")
        cdef Seg *s = &self.segs[self.nsegs]
        memset(s, 0, sizeof(Seg))
        s.fd = fd
        s.id = seg_id
        s.map = <char *>m
        s.map_len = map_len
        s.size = size
        s.synced = size     # what was on disk at open counts as durable: it is never rewritten
        s.live = SEG_HDR if size >= SEG_HDR else 0   # the header: not dead bytes to merge away
        s.state = state
        self.nsegs += 1
        return self.nsegs - 1

    cdef int _apply(self, uint32_t si, uint32_t off, uint32_t size, const char *kp, size_t kl,
                    uint8_t flags, uint64_t expiry, int64_t now) except -1:
        """Replay one record (from a scan or a hint) into the keydir; later records win."""
        cdef int64_t slot
        self.segs[si].nrec += 1
        if (flags & (F_TOMB | F_CLEAR)) or expiry != 0:
            self.segs[si].nshadow += 1
        if flags & F_CLEAR:
            kd_clear(&self.kd)
            self.segs[si].live = SEG_HDR       # what came before the marker here is gone too
            self.segs[si].kept = 0
            cleared = self.recovery_report["cleared"]
            for i in range(self.nsegs):
                if i != si and self.segs[i].state == SEG_SEALED and self.segs[i].id < self.segs[si].id:
                    name = "%016x.data" % self.segs[i].id
                    if name not in cleared:
                        cleared.append(name)
                    self.segs[i].live = 0
                    if not self.read_only:
                        self._retire(i)
            return 0
        if (flags & F_TOMB) or (expiry != 0 and <int64_t>expiry <= self._expiry_clock(now)):
            slot = kd_find(&self.kd, kp, kl, kd_hash(&self.kd, kp, kl))
            if slot >= 0:
                self._remove_slot(slot)
            return 0
        self._index(kp, kl, si, off, size, expiry, 0)
        return 0

    cdef int _scan_segment(self, uint32_t si, int64_t now, dict report) except -1:
        """Replay a segment record by record.  Bytes that do not frame are reported as corrupt
        (up to the next record header of this segment), a record whose header is intact but whose
        key or value is not is skipped whole, and damage reaching the end is a torn tail, cut off."""
        cdef size_t pos = SEG_HDR, rec, end = self.segs[si].size
        cdef const char *base = self.segs[si].map
        cdef uint64_t magic = self.segs[si].magic
        cdef int64_t nxt
        name = "%016x.data" % self.segs[si].id
        while pos < end:
            nxt = find_frame(base, pos, end, magic)
            if nxt >= 0:
                rec = frame_size(base + nxt, magic)
            # the last record not checking out, whole or not, is a write the crash cut short
            if (nxt < 0 or rec > end - <size_t>nxt
                    or (rec == end - <size_t>nxt and not body_ok(base + nxt, rec))):
                report["truncated"].append({"file": name, "offset": pos, "bytes": end - pos})
                if not self.read_only:
                    os.ftruncate(self.segs[si].fd, pos)
                    os.fsync(self.segs[si].fd)
                self.segs[si].size = pos
                self.segs[si].synced = pos
                break
            if <size_t>nxt > pos:
                report["corrupt"].append({"file": name, "offset": pos, "bytes": <size_t>nxt - pos})
                pos = <size_t>nxt
            if not body_ok(base + pos, rec):
                report["corrupt"].append({"file": name, "offset": pos, "bytes": rec})
            else:
                self._apply(si, <uint32_t>pos, <uint32_t>rec, base + pos + HDR,
                            ld32(base + pos + R_KL), <uint8_t>base[pos + R_FLAGS],
                            ld64(base + pos + R_EXP), now)
            pos += rec
        return 0

    cdef int _load_hint(self, uint32_t si, bytes hint, int64_t now) except -1:
        """Replay a hint file; 0 (and nothing applied) when it does not check out."""
        cdef const char *p = PyBytes_AS_STRING(hint)
        cdef size_t n = PyBytes_GET_SIZE(hint), pos = HINT_HEAD, kl, end = n - 12
        if hint_count(p, n, self.segs[si].size, self.segs[si].magic) < 0:
            return 0
        while pos < end:
            kl = ld32(p + pos + 17)
            self._apply(si, ld32(p + pos), ld32(p + pos + 4), p + pos + HINT_ENTRY, kl,
                        <uint8_t>p[pos + 16], ld64(p + pos + 8), now)
            pos += HINT_ENTRY + kl
        return 1

    # ---- small helpers ----------------------------------------------------------------------
    cdef int64_t _now(self) except? -1:
        if self._clock is None:
            return wall_ms()
        return int(self._clock())

    cdef int _check_open(self) except -1:
        if self.closed:
            raise StorageError(f"store {self.path} is closed")
        return 0

    cdef int _check_writable(self) except -1:
        if self.closed:
            raise StorageError(f"store {self.path} is closed")
        if self.read_only:
            raise StorageError(f"store {self.path} is open read-only")
        if self.broken == BROKEN_FSYNC:
            raise DurabilityLost(self.broken_reason)
        if self.broken == BROKEN_WRITE:
            self._flush()          # retry the records a failed write() left pending
        return 0

    cdef int64_t _lookup(self, const char *kp, size_t kl) except -2:
        """Slot of a live key, or -1; an expired key found here is dropped (lazy expiry)."""
        cdef int64_t now = -1
        if self._clock is not None:
            now = self._now()    # Python code may let other threads in: not between find and use
        cdef int64_t slot = kd_find(&self.kd, kp, kl, kd_hash(&self.kd, kp, kl))
        cdef kd_entry *e
        if slot < 0:
            return -1
        e = kd_entry_at(&self.kd, slot)
        if e.expiry != 0:
            if now < 0:
                now = wall_ms()
            if <int64_t>e.expiry <= self._expiry_clock(now):
                if not self.read_only:
                    self._remove_slot(slot)
                    self.expired_removed += 1
                return -1
        return slot

    cdef int _remove_slot(self, size_t slot) except -1:
        cdef kd_entry *e = kd_entry_at(&self.kd, slot)
        if e.digest:
            self._tree_update(e.key, <size_t>e.klen_m1 + 1, e.digest, 0)
        self.segs[e.seg].live -= e.size
        kd_remove(&self.kd, slot)
        if kd_maybe_compact(&self.kd) < 0:
            raise MemoryError("cannot compact the keydir")
        return 0

    cdef int _index(self, const char *kp, size_t kl, uint32_t seg, uint32_t off,
                    uint32_t size, uint64_t expiry, uint32_t digest,
                    uint64_t *leaf=NULL) except -1:
        """Point key at a record (insert or update), moving its live bytes; digest is the
        value's anti-entropy digest (0 when the trees are off or it is not known)."""
        cdef uint64_t h = kd_hash(&self.kd, kp, kl)
        cdef int64_t slot = kd_find(&self.kd, kp, kl, h)
        cdef kd_entry *e
        if slot >= 0:
            e = kd_entry_at(&self.kd, slot)
            self.segs[e.seg].live -= e.size
        else:
            slot = kd_insert(&self.kd, kp, kl, h)
            if slot < 0:
                raise MemoryError("cannot grow the keydir")
            e = kd_entry_at(&self.kd, slot)
        if e.expiry != 0:
            self.kd.volatile_count -= 1
        if expiry != 0:
            self.kd.volatile_count += 1
            if kd_timer_push(&self.kd, expiry, h) < 0:
                raise MemoryError("cannot grow the expiry heap")
        e.seg = seg
        e.off = off
        e.size = size
        e.expiry = expiry
        if e.digest != digest:
            if leaf != NULL:
                leaf[0] += <uint64_t>digest - <uint64_t>e.digest
            else:
                self._tree_update(kp, kl, e.digest, digest)
            e.digest = digest
        self.segs[seg].live += size
        return 0

    cdef uint32_t _digest(self, const char *kp, size_t kl, const char *vp, size_t vl) noexcept:
        """The anti-entropy digest of a key and its value (as written, never compressed):
        nonzero, and 0 when the trees are off."""
        if self.tree_nodes == NULL:
            return 0
        cdef uint64_t h = fd_xxh64(vp, vl, fd_xxh64(kp, kl, ITEM_SEED))
        cdef uint32_t d = <uint32_t>(h ^ (h >> 32))
        return d if d != 0 else 1

    cdef uint64_t *_tree_leaf(self, const char *kp, size_t kl) noexcept:
        """The leaf of key's tree, marked for refresh_trees, and fetched into the cache: a
        write asks for it before appending its record, so the (random) leaf is in cache by
        the time the write adds to it. NULL when the trees are off."""
        if self.tree_nodes == NULL:
            return NULL
        cdef uint64_t h = fd_xxh64(kp, kl, FD_KEY_SEED)
        cdef uint64_t t = (h >> (64 - self.tree_pbits)) if self.tree_pbits else 0
        cdef uint64_t *leaf = self.tree_nodes + (t * self.tree_size
                                                 + self.tree_offsets[self.tree_depth]
                                                 + (h & <uint64_t>(self.tree_leaves - 1)))
        self.tree_dirty[t] = 1
        __builtin_prefetch(leaf)
        return leaf

    cdef void _tree_update(self, const char *kp, size_t kl, uint32_t old, uint32_t new) noexcept:
        """Replace one item of its partition's tree (0 = absent): a leaf is the sum of its
        items' digests, so a write changes one leaf; the inner levels (sums of their
        children) are summed again when the tree is next read (refresh_trees): one memory
        write per write instead of one per level."""
        if self.tree_nodes == NULL or old == new:
            return
        cdef uint64_t h = fd_xxh64(kp, kl, FD_KEY_SEED)
        cdef uint64_t t = (h >> (64 - self.tree_pbits)) if self.tree_pbits else 0
        self.tree_nodes[t * self.tree_size + self.tree_offsets[self.tree_depth]
                        + (h & <uint64_t>(self.tree_leaves - 1))] += <uint64_t>new - <uint64_t>old
        self.tree_dirty[t] = 1

    cdef int64_t _expiry_clock(self, int64_t now) noexcept:
        """The time records expire by: now, or the hold when one is set and earlier."""
        if self.expire_hold > 0 and self.expire_hold < now:
            return self.expire_hold
        return now

    cdef object _read_value(self, kd_entry *e):
        """The value of the record e points at, checked against its CRC."""
        cdef uint32_t si = e.seg, off = e.off, size = e.size
        cdef size_t kl = <size_t>e.klen_m1 + 1
        cdef size_t vl = size - HDR - kl
        cdef uint64_t flushed = self.segs[si].size
        cdef const char *p
        cdef bint in_buffer = si == <uint32_t>self.active and off >= flushed
        cdef uint32_t crc, stored_crc
        cdef uint8_t flags
        cdef bytes out
        cdef char *dst
        if in_buffer:
            p = self.wbuf + (off - flushed)
        else:
            p = self.segs[si].map + off
        stored_crc = ld32(p + R_CRC)
        flags = <uint8_t>p[R_FLAGS]
        if vl >= UNLOCKED_READ and not in_buffer:
            # a big copy from the page cache may fault in pages from disk: let other threads run
            # (p is not touched after the pin is dropped: a merge may unmap the segment then)
            self.segs[si].readers += 1
            out = PyBytes_FromStringAndSize(NULL, vl)
            dst = PyBytes_AS_STRING(out)
            with nogil:
                crc = crc32c_extend(0, p + R_TS, size - R_TS)
                memcpy(dst, p + HDR + kl, vl)
            self.segs[si].readers -= 1
            self._release(si)
        else:
            crc = crc32c_extend(0, p + R_TS, size - R_TS)
            out = None
        if crc != stored_crc:
            self._corrupt_record(si, off)
        if out is None:
            out = PyBytes_FromStringAndSize(p + HDR + kl, vl)
        if flags & F_LZ4:
            return lz4.block.decompress(out)
        return out

    cdef int _corrupt_record(self, uint32_t si, uint32_t off) except -1:
        raise StorageCorruption(
            f"record at offset {off} of segment {self.segs[si].id:016x}.data in {self.path} "
            "fails its checksum")

    cdef Py_ssize_t _value_head(self, kd_entry *e, char *out, size_t n) except -2:
        """Copy up to n bytes from the start of e's value into out, the record checked against
        its CRC, without making the value's bytes (a replica compares a stored header before
        it writes); the value's length, or -1 for a value stored compressed or large (read
        that with _read_value)."""
        cdef size_t kl = <size_t>e.klen_m1 + 1
        cdef const char *vp
        cdef Py_ssize_t vl = self._checked_value(e, kl, &vp)
        if vl >= 0:
            memcpy(out, vp, n if n < <size_t>vl else <size_t>vl)
        return vl

    cdef Py_ssize_t _checked_value(self, kd_entry *e, size_t kl, const char **vp) except -3:
        """Where e's value is (*vp: in the segment's mapping or the write buffer, valid until
        the next call into the store) once its record checks against its CRC; its length, or
        -1 for a value stored compressed or large (read that with _read_value)."""
        cdef uint32_t si = e.seg, off = e.off, size = e.size
        cdef size_t vl = size - HDR - kl
        cdef uint64_t flushed = self.segs[si].size
        cdef const char *p
        if si == <uint32_t>self.active and off >= flushed:
            p = self.wbuf + (off - flushed)
        else:
            p = self.segs[si].map + off
        if vl >= UNLOCKED_READ or (<uint8_t>p[R_FLAGS]) & F_LZ4:
            return -1
        if crc32c_extend(0, p + R_TS, size - R_TS) != ld32(p + R_CRC):
            self._corrupt_record(si, off)
        vp[0] = p + HDR + kl
        return <Py_ssize_t>vl

    cdef void _prefetch_lookups(self, const char **keys, size_t *lens, Py_ssize_t m) noexcept:
        """Start fetching what looking up these m keys (at most PREFETCH_MAX) will touch:
        keydir slot, then entry, then the record's first cache lines, each level for every key
        before the next. A batch of lookups of random keys (a pipeline, a peer frame) then
        overlaps its cache misses instead of waiting on each in turn. Nothing is read or
        checked here: a tag match that is not the key only wastes a fetch."""
        cdef uint64_t hashes[PREFETCH_MAX]
        cdef const kd_entry *e
        cdef const char *p
        cdef uint64_t flushed
        cdef uint32_t si
        cdef size_t at
        cdef Py_ssize_t i
        if self.closed or m <= 0:
            return
        if m > PREFETCH_MAX:
            m = PREFETCH_MAX
        for i in range(m):
            hashes[i] = kd_hash(&self.kd, keys[i], lens[i])
            kd_prefetch_home(&self.kd, hashes[i])
        for i in range(m):
            e = kd_candidate(&self.kd, hashes[i])
            if e != NULL:
                __builtin_prefetch(e)
        for i in range(m):
            e = kd_candidate(&self.kd, hashes[i])
            if e == NULL or e.seg >= self.nsegs:
                continue
            si = e.seg
            flushed = self.segs[si].size
            if si == <uint32_t>self.active and e.off >= flushed:
                p = self.wbuf + (e.off - flushed)
            elif self.segs[si].map != NULL:
                p = self.segs[si].map + e.off
            else:
                continue
            at = 0
            while at < e.size and at < 192:     # header, key and the value's head
                __builtin_prefetch(p + at)
                at += 64

    # ---- write path -------------------------------------------------------------------------
    cdef int _append(self, const char *kp, size_t kl, const char *vp, size_t vl,
                     uint64_t expiry, uint8_t flags, int64_t now) except -1:
        """Append one record to the write buffer of the active segment (rotating first when it
        would overflow).  The record's (segment, offset) is active, size + wlen before."""
        cdef size_t rec = HDR + kl + vl, ncap
        cdef char *nb
        while self._needs_rotation(rec):
            self._rotate()      # may let other threads run (file creation, directory fsync)
        if self.wlen + rec > self.wcap:
            ncap = self.wcap * 2 if self.wcap else (1 << 16)
            while ncap < self.wlen + rec:
                ncap *= 2
            nb = <char *>realloc(self.wbuf, ncap)
            if nb == NULL:
                raise MemoryError("cannot grow the write buffer")
            self.wbuf = nb
            self.wcap = ncap
        encode_record(self.wbuf + self.wlen, self.segs[self.active].magic, <uint64_t>now, expiry,
                      flags, kp, kl, vp, vl)
        self.wlen += rec
        self.segs[self.active].nrec += 1
        if (flags & (F_TOMB | F_CLEAR)) or expiry != 0:
            self.segs[self.active].nshadow += 1
        return 0

    cdef bint _needs_rotation(self, size_t rec) noexcept:
        """Whether a record of rec bytes must go to a new segment (an empty one takes any)."""
        cdef uint64_t used
        if self.active < 0:
            return True
        used = self.segs[self.active].size + self.wlen
        return used > SEG_HDR and used + rec > self.segment_bytes

    cdef int _after_write(self) except -1:
        """Apply the sync policy after a mutating call."""
        if self.batch_depth:
            if self.wlen >= WBUF_FLUSH:
                self._flush()
            return 0
        if self.sync_mode == SYNC_ALWAYS:
            self._flush()
            self._fsync_active()
        elif self.wlen >= WBUF_FLUSH:
            self._flush()
        return 0

    cdef int _flush(self) except -1:
        """One write() of the pending records (retrying short writes).  When the write fails
        (disk full, file size limit, I/O error) the file is cut back to its last whole record
        and every record stays pending: no read reaches past the end of the file, and writes
        are refused (PersistFailed) until a retry - the next write or the background tick -
        succeeds."""
        if self.wlen == 0 or self.active < 0:
            return 0
        cdef int fd = self.segs[self.active].fd
        cdef uint64_t size = self.segs[self.active].size
        cdef size_t done = 0, n = self.wlen
        cdef ssize_t r
        cdef int err = 0
        while done < n:
            r = c_write(fd, self.wbuf + done, n - done)
            if r < 0:
                if errno == EINTR:
                    continue
                err = errno
                break
            done += r
        if err:
            if done and ftruncate(fd, size) != 0:
                # the torn tail stays, and appends would land after it: only a reopen (whose
                # recovery cuts the tail) can write to this directory again
                r = errno
                self.broken = BROKEN_FSYNC
                self.broken_reason = (f"write to {self.path} failed ({os.strerror(err)}) and "
                                      f"the torn tail cannot be cut ({os.strerror(r)}); "
                                      "reopen the store")
                raise DurabilityLost(self.broken_reason)
            if self.broken != BROKEN_FSYNC:
                self.broken = BROKEN_WRITE
            raise PersistFailed(f"write to {self.path} failed: {os.strerror(err)}; writes are "
                                "refused until one succeeds")
        seg_prefault(self.segs[self.active].map, size, size + done)
        self.segs[self.active].size = size + done
        self.wlen = 0
        if self.broken == BROKEN_WRITE:
            self.broken = 0
        return 0

    cdef int _sync_fd(self, int fd, uint64_t seg_id, uint64_t length) except -1:
        """fdatasync (without the GIL) a data file now `length` bytes long, or let fsync_hook
        stand in for it; 0 or the errno of the failure."""
        cdef int rc
        if self.fsync_hook is not None:
            try:
                self.fsync_hook(fd, "%016x.data" % seg_id, length)
            except OSError as exc:
                return exc.errno or EIO
            return 0
        with nogil:
            rc = fdatasync(fd)
            if rc != 0:
                rc = errno
        return rc

    cdef int _lose_durability(self, uint64_t seg_id, int err) except -1:
        """After a failed fsync the kernel may have dropped the dirty pages (and reports the
        error once): no later fsync can vouch for them, so no write is acknowledged again."""
        self.broken = BROKEN_FSYNC
        self.broken_reason = (f"fsync of {seg_id:016x}.data in {self.path} failed: "
                              f"{os.strerror(err)}; writes are refused until the store is reopened")
        raise DurabilityLost(self.broken_reason)

    cdef int _sync_opened(self, uint64_t after) except -1:
        """fsync the segments newer than id `after` that were found at open: after a crash of
        the process alone their last records may still be only in the page cache."""
        for seg_id in sorted(i for i in self._opened_unsynced if i > after):
            try:
                fd = os.open(os.path.join(self.path, "%016x.data" % seg_id),
                             os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:      # merged away since
                self._opened_unsynced.discard(seg_id)
                continue
            try:
                err = self._sync_fd(fd, seg_id, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            if err:
                self._lose_durability(seg_id, err)
            self._opened_unsynced.discard(seg_id)
        return 0

    cdef int _fsync_seg(self, uint32_t si) except -1:
        """fdatasync one segment (pinned so it cannot be closed).  A success covers what the
        file held when the fsync began, so only that moves the segment's durable mark; a write
        made meanwhile waits for a later fsync."""
        cdef uint64_t target = self.segs[si].size
        cdef int err
        self.segs[si].readers += 1
        try:
            err = self._sync_fd(self.segs[si].fd, self.segs[si].id, target)
        finally:
            self.segs[si].readers -= 1
        if err:
            self._release(si)
            self._lose_durability(self.segs[si].id, err)
        if target > self.segs[si].synced:
            self.segs[si].synced = target
        if self.segs[si].dirty and self.segs[si].synced >= self.segs[si].size:
            self.segs[si].dirty = 0
            self.ndirty -= 1
        self._release(si)
        return 0

    cdef int _fsync_active(self) except -1:
        """fsync every segment sealed with unsynced writes (oldest first), then the segment that
        was active when the call began; a failure stops here and raises."""
        cdef uint32_t i = 0
        cdef int act = self.active
        if self.broken == BROKEN_FSYNC:
            raise DurabilityLost(self.broken_reason)
        if self.ndirty:
            while i < self.nsegs:      # the table may grow while the GIL is released
                if self.segs[i].dirty and self.segs[i].state == SEG_SEALED:
                    self._fsync_seg(i)
                i += 1
        if (act >= 0 and self.segs[act].synced < self.segs[act].size
                and self.segs[act].state in (SEG_ACTIVE, SEG_SEALED)):
            self._fsync_seg(act)
        return 0

    cdef int _seal_active(self) except -1:
        """Flush the active segment and make it immutable, without releasing the GIL (so no
        other thread can append in between).  The next fsync - the same call's under "always",
        else the background thread's, fsync() or close() - makes it durable first."""
        cdef int si = self.active
        if si < 0:
            return 0
        self._flush()
        if self.segs[si].synced < self.segs[si].size:
            self.segs[si].dirty = 1
            self.ndirty += 1
        self.segs[si].state = SEG_SEALED
        self.active = -1
        self._release(si)
        return 0

    cdef int _rotate(self) except -1:
        """Seal the active segment and start a new, empty one (fsyncing the directory).  The
        file is created first: the switch itself happens with no GIL release.  When sealing
        fails (the pending records cannot be written) the new file goes again."""
        cdef uint64_t major = self.next_major
        seg_id = major * ID_GAP
        self.next_major += 1
        fd, magic = _create_segment(self.path, seg_id)
        name = os.path.join(self.path, "%016x.data" % seg_id)
        try:
            _fsync_dir(self.path)
            if self.next_major != major + 1:
                # another thread rotated meanwhile: its newer segment takes the writes (ids are
                # the replay order, so an older id must not follow it), this empty file goes
                os.close(fd)
                os.unlink(name)
                return 0
            self._seal_active()
        except BaseException:
            os.close(fd)
            os.unlink(name)
            raise
        self.active = self._add_seg(seg_id, fd, self.map_len, SEG_HDR, SEG_ACTIVE)
        self.segs[self.active].magic = magic
        return 0

    cdef int _put(self, object key, object value, uint64_t expiry_ms) except -1:
        cdef bytes kb
        cdef const char *kp
        cdef size_t kl, vl
        cdef const char *vp
        cdef Py_buffer vbuf
        cdef bint have_buf = False
        cdef uint8_t flags = 0
        cdef uint32_t digest
        if self.closed or self.read_only or self.broken:
            self._check_writable()
        if PyBytes_CheckExact(key) and 0 < PyBytes_GET_SIZE(key) <= MAX_KEY:
            kb = <bytes>key
        else:
            kb = key_bytes(key)
        kp = PyBytes_AS_STRING(kb)
        kl = PyBytes_GET_SIZE(kb)
        stored = value
        if PyBytes_CheckExact(value):
            vp = PyBytes_AS_STRING(value)
            vl = PyBytes_GET_SIZE(value)
        elif PyUnicode_Check(value) or value is None:
            raise TypeError(f"values must be bytes-like, not {type(value).__name__} "
                            "(encode str values explicitly)")
        else:
            try:
                PyObject_GetBuffer(value, &vbuf, PyBUF_SIMPLE)
            except TypeError:
                raise TypeError(f"values must be bytes-like, not {type(value).__name__}") from None
            have_buf = True
            vp = <const char *>vbuf.buf
            vl = vbuf.len
        try:
            if vl > self.max_value_bytes:
                raise ValueError(f"value of {vl} bytes exceeds max_value_bytes "
                                 f"({self.max_value_bytes})")
            digest = self._digest(kp, kl, vp, vl)
            if self.compress_threshold and vl >= self.compress_threshold:
                packed = lz4.block.compress(value, store_size=True)
                if PyBytes_GET_SIZE(packed) < <Py_ssize_t>vl:
                    stored = packed
                    vp = PyBytes_AS_STRING(packed)
                    vl = PyBytes_GET_SIZE(packed)
                    flags = F_LZ4
            self._write(kp, kl, vp, vl, expiry_ms, flags, digest)
        finally:
            if have_buf:
                PyBuffer_Release(&vbuf)
        if self.on_write is not None:
            self.on_write(kb, value)
        return 0

    cdef int _write(self, const char *kp, size_t kl, const char *vp, size_t vl,
                    uint64_t expiry_ms, uint8_t flags, uint32_t digest) except -1:
        """Append the record of a checked key and value (as stored) and index it."""
        cdef int64_t now = self._now()
        cdef uint64_t *leaf = self._tree_leaf(kp, kl) if digest else NULL
        self._append(kp, kl, vp, vl, expiry_ms, flags, now)
        cdef uint32_t off = <uint32_t>(self.segs[self.active].size + self.wlen - (HDR + kl + vl))
        self._index(kp, kl, self.active, off, <uint32_t>(HDR + kl + vl), expiry_ms, digest,
                    leaf)
        if expiry_ms != 0 and <int64_t>expiry_ms <= self._expiry_clock(now):
            # written already expired (e.g. SET .. PXAT in the past): the key is gone
            self._remove_slot(kd_find(&self.kd, kp, kl, kd_hash(&self.kd, kp, kl)))
        self._after_write()
        return 0

    cdef bint _plain_put_ok(self, size_t vl) noexcept:
        """Whether a value this long may be written with _put_plain: the store takes writes,
        nothing watches them (on_write) and the value is stored as it is (not compressed)."""
        return (not (self.closed or self.read_only or self.broken) and self.on_write is None
                and vl <= self.max_value_bytes
                and (self.compress_threshold == 0 or vl < self.compress_threshold))

    cdef int _put_plain(self, const char *kp, size_t kl, const char *vp, size_t vl,
                        uint64_t expiry_ms) except -1:
        """put(key, value, expiry_ms) from C bytes when _plain_put_ok(vl): a command loop
        writes straight from its receive buffer. 1 <= kl <= MAX_KEY."""
        return self._write(kp, kl, vp, vl, expiry_ms, 0, self._digest(kp, kl, vp, vl))

    cdef Py_ssize_t _value_ref(self, const char *kp, size_t kl, const char **vp) except -3:
        """The value of a live key, checked against its CRC, without making its bytes: *vp
        points into the segment's mapping or the write buffer, valid until the next call
        into the store. Returns its length; -1 when absent; -2 for a value stored compressed
        or large (read that with get). 1 <= kl <= MAX_KEY."""
        if self.closed:
            self._check_open()
        cdef int64_t slot = self._lookup(kp, kl)
        if slot < 0:
            return -1
        cdef Py_ssize_t vl = self._checked_value(kd_entry_at(&self.kd, slot), kl, vp)
        return -2 if vl == -1 else vl

    # ---- the mapping API --------------------------------------------------------------------
    def put(self, key, value, expiry_ms=0):
        """Store value under key; expiry_ms is an absolute Unix time in ms (0 = none)."""
        self._put(key, value, expiry_arg(expiry_ms))

    def __setitem__(self, key, value):
        self._put(key, value, 0)

    def set(self, key, value, ttl=None):
        """Store value under key, expiring after `ttl` seconds (float) when given."""
        cdef uint64_t expiry = 0
        if ttl is not None:
            if (not isinstance(ttl, (int, float)) or not 0 < ttl < 1e12):
                raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
            expiry = <uint64_t>(self._now() + max(1, int(round(ttl * 1000))))
        self._put(key, value, expiry)

    cdef int64_t _find(self, key) except -2:
        """The live slot of key (-1 when absent); a plain bytes key skips the conversion."""
        if self.closed:
            self._check_open()
        if PyBytes_CheckExact(key) and 0 < PyBytes_GET_SIZE(key) <= MAX_KEY:
            return self._lookup(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
        kb = key_bytes(key)
        return self._lookup(PyBytes_AS_STRING(kb), PyBytes_GET_SIZE(kb))

    def __getitem__(self, key):
        cdef int64_t slot = self._find(key)
        if slot < 0:
            raise KeyError(key)
        return self._read_value(kd_entry_at(&self.kd, slot))

    def get(self, key, default=None):
        """The value of key, or default when absent or expired."""
        cdef int64_t slot = self._find(key)
        if slot < 0:
            return default
        return self._read_value(kd_entry_at(&self.kd, slot))

    def get_entry(self, key):
        """(value, expiry_ms) of a live key, or None when absent or expired."""
        self._check_open()
        kb = key_bytes(key)
        cdef int64_t slot = self._lookup(PyBytes_AS_STRING(kb), PyBytes_GET_SIZE(kb))
        if slot < 0:
            return None
        cdef kd_entry *e = kd_entry_at(&self.kd, slot)
        expiry = e.expiry
        return self._read_value(e), expiry

    def expiry_ms(self, key):
        """From the keydir alone: None if absent or expired, 0 if no expiry, else the expiry."""
        self._check_open()
        kb = key_bytes(key)
        cdef int64_t slot = self._lookup(PyBytes_AS_STRING(kb), PyBytes_GET_SIZE(kb))
        if slot < 0:
            return None
        return kd_entry_at(&self.kd, slot).expiry

    def __contains__(self, key):
        self._check_open()
        kb = key_bytes(key)
        return self._lookup(PyBytes_AS_STRING(kb), PyBytes_GET_SIZE(kb)) >= 0

    def delete(self, key):
        """Remove key; True if a live key was removed (a tombstone records it)."""
        self._check_writable()
        kb = key_bytes(key)
        cdef const char *kp = PyBytes_AS_STRING(kb)
        cdef size_t kl = PyBytes_GET_SIZE(kb)
        cdef int64_t now = self._now()
        cdef int64_t slot = self._lookup(kp, kl)
        if slot < 0:
            return False
        self._append(kp, kl, NULL, 0, 0, F_TOMB, now)
        # the append may have let other threads run (a rotation): whatever the keydir holds for
        # the key now was written before the tombstone, but it may hold nothing any more
        slot = kd_find(&self.kd, kp, kl, kd_hash(&self.kd, kp, kl))
        if slot >= 0:
            # the tombstone's own bytes are dead from the start: merge drops them when it can
            self._remove_slot(slot)
        self._after_write()
        if slot < 0:
            return False
        if self.on_write is not None:
            self.on_write(kb, None)
        return True

    def __delitem__(self, key):
        if not self.delete(key):
            raise KeyError(key)

    def set_expiry(self, key, expiry_ms):
        """Give a live key a new absolute expiry (0 = persist) by rewriting its record.
        Returns False when the key is absent or expired.  An expiry in the past removes it."""
        self._check_writable()
        cdef uint64_t expiry = expiry_arg(expiry_ms)
        kb = key_bytes(key)
        cdef const char *kp = PyBytes_AS_STRING(kb)
        cdef size_t kl = PyBytes_GET_SIZE(kb)
        cdef int64_t now = self._now()
        cdef int64_t slot
        cdef kd_entry *e
        cdef const char *p
        while True:
            slot = self._lookup(kp, kl)
            if slot < 0:
                return False
            e = kd_entry_at(&self.kd, slot)
            if e.expiry == expiry:
                return True
            if not self._needs_rotation(e.size):
                break
            self._rotate()   # may let other threads change the key: look it up again
        # from here to the index update nothing lets another thread in, so the record copied is
        # still the key's current one when its rewrite lands
        if e.seg == <uint32_t>self.active and e.off >= self.segs[e.seg].size:
            p = self.wbuf + (e.off - self.segs[e.seg].size)
        else:
            p = self.segs[e.seg].map + e.off
        # copy the stored (maybe compressed) value: the buffer may move while appending
        stored = PyBytes_FromStringAndSize(p + HDR + kl, e.size - HDR - kl)
        flags = (<uint8_t>p[R_FLAGS]) & F_LZ4
        digest = e.digest        # the value stays: so does its digest
        self._append(kp, kl, PyBytes_AS_STRING(stored), PyBytes_GET_SIZE(stored), expiry,
                     flags, now)
        self._index(kp, kl, self.active,
                    <uint32_t>(self.segs[self.active].size + self.wlen - (HDR + kl + PyBytes_GET_SIZE(stored))),
                    <uint32_t>(HDR + kl + PyBytes_GET_SIZE(stored)), expiry, digest)
        if expiry != 0 and <int64_t>expiry <= self._expiry_clock(now):
            self._remove_slot(kd_find(&self.kd, kp, kl, kd_hash(&self.kd, kp, kl)))
        self._after_write()
        return True

    def sweep_expired(self, max_keys=20):
        """Active expiry: drop up to max_keys expired keys from the keydir (their records
        already carry the expiry, so no tombstone is written).  Returns how many."""
        self._check_open()
        if not isinstance(max_keys, int) or max_keys < 0:
            raise ValueError(f"max_keys must be a non-negative integer, got {max_keys!r}")
        if self.read_only or max_keys == 0:
            return 0
        return self._expire_due(self._now(), min(max_keys, 1 << 40))

    cdef size_t _expire_due(self, int64_t now, size_t want) except? 0:
        """Drop up to `want` keys whose expiry has passed, found through the keydir's heap of
        expiry times (a timer per expiry set; one left by a key since overwritten or removed
        matches nothing): the work is in the keys that expired, not in the table size."""
        cdef size_t removed = 0, examined = 0, limit = max(<size_t>1024, want * 16)
        cdef kd_timer t
        cdef int64_t slot
        now = self._expiry_clock(now)
        if self.kd.volatile_count == 0:
            self.kd.ntimers = 0          # every timer left is stale
            return 0
        while removed < want and kd_timer_due(&self.kd, <uint64_t>now):
            if examined >= limit and want != <size_t>-1:
                break
            t = kd_timer_pop(&self.kd)
            examined += 1
            slot = kd_find_timer(&self.kd, t.hash, t.expiry)
            if slot >= 0:
                self._remove_slot(slot)
                removed += 1
        self.expired_removed += removed
        return removed

    def __len__(self):
        """Live keys (expired keys are dropped first, so they never count)."""
        self._check_open()
        if self.kd.volatile_count and not self.read_only:
            self._expire_due(self._now(), <size_t>-1)
        elif self.kd.volatile_count:
            return self.kd.count - self._count_expired()
        return self.kd.count

    cdef size_t _count_expired(self):
        cdef size_t i, n = 0
        cdef kd_entry *e
        cdef int64_t now = self._expiry_clock(self._now())
        for i in range(self.kd.nslots):
            if self.kd.slots[i]:
                e = kd_entry_at(&self.kd, i)
                if e.expiry != 0 and <int64_t>e.expiry <= now:
                    n += 1
        return n

    def scan(self, cursor, count=10):
        """Redis SCAN: returns (next_cursor, keys); cursor 0 starts, a returned 0 ends.

        The cursor is a hash value and slots are kept in hash order, so every key present for
        the whole scan is returned exactly once even when the table grows or shrinks between
        calls.  Expired keys are skipped.  `count` is a hint: a call finishes the run of
        occupied slots it is in."""
        self._check_open()
        cdef uint64_t start
        cdef size_t want
        try:
            start = cursor
        except (OverflowError, TypeError):
            raise ValueError(f"invalid cursor {cursor!r}") from None
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        want = min(count, 1 << 40)
        cdef size_t i = kd_home(&self.kd, start) if start else 0
        cdef size_t found = 0, last = self.kd.nslots - 1
        cdef uint64_t s
        cdef kd_entry *e
        cdef int64_t now = self._expiry_clock(self._now())   # before the table is read: it may run Python code
        out = []
        while True:
            s = self.kd.slots[i]
            if s == 0:
                if found >= want or i >= last:
                    break
                i += 1
                continue
            e = kd_entry_at(&self.kd, i)
            if kd_hash(&self.kd, e.key, <size_t>e.klen_m1 + 1) >= start:
                if e.expiry == 0 or <int64_t>e.expiry > now:
                    out.append(PyBytes_FromStringAndSize(e.key, <size_t>e.klen_m1 + 1))
                    found += 1
            i += 1
        return (0 if i >= last else kd_cursor_for_slot(&self.kd, i + 1)), out

    def __iter__(self):
        cursor = 0
        while True:
            cursor, keys = self.scan(cursor, 1024)
            yield from keys
            if cursor == 0:
                return

    def keys(self):
        return iter(self)

    def items(self):
        """Yield (key, value, expiry_ms) for every live key, reading records in segment order
        (sequential disk reads).  A key live for the whole iteration is yielded exactly once,
        with the value it has when yielded; keys written during the iteration may be missed."""
        self._check_open()
        cdef size_t n = 0, i, cap = self.kd.count + 1
        cdef FoldItem *items = <FoldItem *>malloc(cap * sizeof(FoldItem))
        cdef size_t pos = 0
        cdef kd_entry *e
        cdef int64_t now = self._expiry_clock(self._now()), slot
        cdef const char *p
        cdef Seg *s
        if items == NULL:
            raise MemoryError()
        pinned = set()
        try:
            while pos < self.kd.arena_used:
                e = <kd_entry *>(self.kd.arena + pos)
                pos += kd_entry_bytes(e)
                if e.seg == KD_DEAD or (e.expiry != 0 and <int64_t>e.expiry <= now):
                    continue
                items[n].seg_id = self.segs[e.seg].id
                items[n].seg = e.seg
                items[n].off = e.off
                n += 1
            qsort(items, n, sizeof(FoldItem), fold_item_cmp)
            for i in range(n):
                if items[i].seg not in pinned:
                    pinned.add(items[i].seg)
                    self.segs[items[i].seg].readers += 1
            for i in range(n):
                self._check_open()
                s = &self.segs[items[i].seg]
                if items[i].seg == <uint32_t>self.active and items[i].off >= s.size:
                    p = self.wbuf + (items[i].off - s.size)
                else:
                    p = s.map + items[i].off
                key = PyBytes_FromStringAndSize(p + HDR, ld32(p + R_KL))
                slot = self._lookup(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
                if slot < 0:
                    continue
                e = kd_entry_at(&self.kd, slot)
                expiry = e.expiry
                value = self._read_value(e)
                yield key, value, expiry
        finally:
            free(items)
            if not self.closed:
                for si in pinned:
                    self.segs[<uint32_t>si].readers -= 1
                    self._release(si)

    def fold(self, fn):
        """Call fn(key, value, expiry_ms) for every live record, in segment order (the same
        guarantees as items()); returns how many records it visited."""
        n = 0
        for key, value, expiry in self.items():
            fn(key, value, expiry)
            n += 1
        return n

    # ---- group commit -----------------------------------------------------------------------
    def batch(self):
        """`with store.batch():` defers write() and fsync to the end of the outermost block:
        one write() (more only past 1 MiB pending) and, for sync="always", one fsync, before
        the block exits.  Reads inside the block see its writes."""
        return _Batch(self)

    def flush_buffer(self):
        """Hand every pending record to the OS with one write().  No fsync: after it returns
        the records survive a crash of this process, not of the machine."""
        self._check_writable()
        self._flush()

    def fsync(self):
        """Make durable every record written to the OS (by flush_buffer(), a batch's end or an
        earlier call) before this call began.  Releases the GIL while the disk works, so a
        worker thread may call it while another thread keeps appending."""
        self._check_writable()
        self._fsync_active()

    def _tick(self):
        """The background thread's periodic duty (see _flusher_loop)."""
        if self.closed:
            return
        if self.batch_depth == 0:
            self._flush()
            if self.sync_mode == SYNC_INTERVAL:
                self._fsync_active()
        if self.auto_merge:
            self._maybe_start_merge()

    # ---- clear ------------------------------------------------------------------------------
    def clear(self):
        """Remove every key, durably: a clear marker is written and fsynced in a new segment,
        then older segments are deleted.  A crash in between finishes the clear at the next
        open.  on_write is not called.  A running merge is not waited for: it sees the clear
        and gives up, and whatever it wrote sorts before the marker, so the marker covers it."""
        self._check_writable()
        cdef int64_t now = self._now()
        cdef uint32_t i
        self.clears += 1
        self._rotate()
        self._append(NULL, 0, NULL, 0, 0, F_CLEAR, now)
        # no other thread has run since the marker went in: the keydir forgets exactly the
        # records before it, and later writes (during the fsync below) stay
        kd_clear(&self.kd)
        if self.tree_nodes != NULL:
            self.tree_array.fill(0)
        doomed = []
        for i in range(self.nsegs):
            if self.segs[i].state == SEG_SEALED:
                doomed.append(i)
            # the active segment keeps its header (and the marker, which is dead)
            self.segs[i].live = SEG_HDR if i == <uint32_t>self.active else 0
            self.segs[i].kept = 0
        self._flush()
        self._fsync_active()
        for i in doomed:
            self._retire(i)
        _fsync_dir(self.path)

    # ---- merge ------------------------------------------------------------------------------
    cdef int _release(self, uint32_t si) except -1:
        """Once nothing pins a segment: unmap and close a retired one, and close a sealed one
        whose writes are all durable - it is read through its mapping alone, so open files stay
        bounded by the active and not yet synced segments however many there are.  (No Seg
        pointer is held across a Python call anywhere: another thread may grow the table
        meanwhile.)"""
        cdef Seg *s = &self.segs[si]
        cdef int fd = s.fd
        cdef char *gone = NULL
        cdef size_t gone_len = 0
        if s.readers != 0:
            return 0
        if s.state == SEG_RETIRED:
            gone, gone_len = s.map, s.map_len
            s.map = NULL
            s.fd = -1
            s.state = SEG_FREE
            if gone != NULL:
                # unmapping a large segment can take milliseconds (its page tables, and its
                # page cache once the file is unlinked): not with the GIL, which the event loop
                # then waits for. Nothing pins it, no key points into it, and `s` is not used
                # after (another thread may grow the table meanwhile).
                with nogil:
                    munmap(gone, gone_len)
            if fd >= 0:
                os.close(fd)
        elif s.state == SEG_SEALED and fd >= 0 and s.synced >= s.size:
            s.fd = -1
            os.close(fd)
        return 0

    cdef int _retire(self, uint32_t si) except -1:
        """Delete a segment's files; its memory goes when the last pin does.  (A segment a
        clear and a merge both retire goes once.)"""
        if self.segs[si].state != SEG_SEALED:
            return 0
        self.segs[si].state = SEG_RETIRED
        base = os.path.join(self.path, "%016x" % self.segs[si].id)
        for suffix in (".hint", ".data"):
            try:
                os.unlink(base + suffix)
            except FileNotFoundError:
                pass
        self._release(si)
        return 0

    def _stop_merge(self):
        t = self._merge_thread
        if t is not None and t.is_alive():
            self.merge_stop = 1
            if t is not threading.current_thread():
                t.join()
        self._merge_thread = None

    def _mergeable(self, bint all_dead):
        """Sealed segments worth merging: any dead bytes (explicit merge) or a dead fraction of
        at least merge_ratio (background)."""
        cdef uint32_t i
        cdef uint64_t dead
        out = []
        for i in range(self.nsegs):
            if self.segs[i].state != SEG_SEALED or self.segs[i].size == 0:
                continue
            dead = self.segs[i].size - self.segs[i].live
            if (all_dead and dead > 0) or (dead >= self.merge_ratio * self.segs[i].size):
                out.append(i)
        return out

    def _unhinted(self):
        return [i for i in range(self.nsegs)
                if self.segs[i].state == SEG_SEALED and not self.segs[i].hinted]

    def merge(self):
        """Merge now, synchronously: seal the active segment, rewrite every sealed segment that
        holds dead bytes (dropping overwritten, deleted and expired records) and write hint
        files for the rest.  Returns the number of segments merged."""
        self._check_writable()
        with self._merge_lock:
            self._seal_active()
            victims = self._mergeable(True)
            self._merge_segments(victims)
            for si in self._unhinted():
                if self.merge_stop:
                    break
                self._hint_segment(si)
        return len(victims)

    def _maybe_start_merge(self):
        t = self._merge_thread
        if self.closed or self.merge_stop or (t is not None and t.is_alive()):
            return
        if self._mergeable(False) or self._unhinted():
            self._merge_thread = threading.Thread(
                target=self._background_merge, name="fastdyn-store-merge", daemon=True)
            self._merge_thread.start()

    def _background_merge(self):
        if not self._merge_lock.acquire(blocking=False):
            return
        try:
            if self.closed or self.merge_stop:
                return
            if self.broken:
                return
            self._merge_segments(self._mergeable(False))
            for si in self._unhinted():
                if self.merge_stop or self.closed:
                    break
                self._hint_segment(si)
        finally:
            self._merge_lock.release()

    def _hint_segment(self, uint32_t si):
        """Write the hint file of a sealed segment from its records (dead ones included: a hint
        replays exactly like a scan of its data file).  The segment is immutable, so the scan
        runs without the GIL."""
        cdef HintBuf hb
        cdef const char *base
        cdef size_t end
        cdef uint64_t magic
        cdef int rc
        if self.segs[si].state != SEG_SEALED:
            return                     # a clear retired it
        if self.segs[si].dirty:
            self._fsync_seg(si)        # a hint must never describe data the disk may lose
        if hint_start(&hb) < 0:
            raise MemoryError()
        self.segs[si].readers += 1
        try:
            end = self.segs[si].size
            base = self.segs[si].map
            magic = self.segs[si].magic
            with nogil:
                rc = hint_add_records(&hb, base, end, 0, SEG_HDR, magic)
            if rc < 0 or self.segs[si].state != SEG_SEALED:
                free(hb.p)
                if rc < 0:
                    raise MemoryError("cannot build a hint file")
                return
            write_hint_file(self.path, self.segs[si].id, &hb, end, self.segs[si].magic)
            self.segs[si].hinted = 1
        finally:
            self.segs[si].readers -= 1
            self._release(si)

    def _merge_segments(self, victims):
        """Rewrite the live records of `victims` (segment slots) into new segments placed just
        after the largest victim id, then delete the victims.  Runs in any thread: keydir work
        happens with the GIL held, the writes without it.  A keydir entry moves to the copy only
        if it still points at the original (Bitcask's rule), so concurrent writes win."""
        cdef uint32_t si, out = 0xFFFFFFFF
        cdef size_t pos, end, rec, kl, mlen, mcap = 2 << 20, rel, k
        cdef const char *base
        cdef const char *kp
        cdef char *mbuf
        cdef int64_t slot, now
        cdef kd_entry *e
        cdef uint8_t flags
        cdef uint64_t expiry
        cdef int fd, err
        cdef ssize_t r
        cdef size_t *moves      # old offset, offset in mbuf, size, arena position or NO_ENTRY
        cdef size_t nmoves
        cdef uint32_t j
        cdef uint64_t top = 0, limit = self.next_major * ID_GAP, gen = self.clears
        cdef uint64_t vmagic, omagic    # of the victim being read, of the output being written
        if not victims:
            return
        vset = set(victims)
        while True:
            top = 0
            limit = self.next_major * ID_GAP
            for v in vset:
                top = max(top, self.segs[<uint32_t>v].id)
            for j in range(self.nsegs):
                if self.segs[j].state in (SEG_SEALED, SEG_ACTIVE) and self.segs[j].id > top:
                    limit = min(limit, self.segs[j].id)
            if top + 1 < limit:
                break
            # no id left between the victims and the next segment (e.g. the output of an
            # interrupted merge sits there): merge that segment too
            for j in range(self.nsegs):
                if self.segs[j].state == SEG_SEALED and self.segs[j].id == limit:
                    vset.add(j)
                    break
            else:
                raise StorageError("no segment id left for a merge output")
        victims = [v for _, v in sorted([(self.segs[<uint32_t>v].id, v) for v in vset])]
        next_id = top + 1
        # a tombstone must survive the merge when an older segment outside it may hold the key
        keep_tombs = {}
        for v in victims:
            keep = False
            for j in range(self.nsegs):
                if (self.segs[j].state == SEG_SEALED and j not in vset
                        and self.segs[j].id < self.segs[<uint32_t>v].id):
                    keep = True
            keep_tombs[v] = keep
        mbuf = <char *>malloc(mcap)
        moves = <size_t *>malloc(4 * sizeof(size_t) * (mcap // HDR + 1))
        if mbuf == NULL or moves == NULL:
            free(mbuf)
            free(moves)
            raise MemoryError()
        cdef HintBuf hb
        cdef uint64_t out_size = 0
        cdef uint64_t *found = NULL     # pairs (victim rank << 32 | offset, arena position)
        cdef size_t nfound = 0, fi = 0, fend = 0, at = 0, entry_at
        cdef uint64_t walk_gen = 0      # the arena positions in found hold while kd.gen is this
        cdef size_t examined, nrec_out, nshadow_out
        cdef int64_t nxt
        cdef bint walk
        hb.p = NULL
        outputs = []
        emitted = set()
        stopped = False
        try:
            walked = self._walk_plan(victims, keep_tombs)
            if walked and self._walk_keydir(victims, walked, gen, &found, &nfound, &walk_gen):
                stopped = True
            for rank, i in enumerate(victims):
                if stopped:
                    break
                si = i
                walk = rank in walked
                if walk:   # this victim's entries: found[fi:fend]
                    fi = fend
                    while fi < nfound and (found[2 * fi] >> 32) < <uint64_t>rank:
                        fi += 1
                    fend = fi
                    while fend < nfound and (found[2 * fend] >> 32) == <uint64_t>rank:
                        fend += 1
                self.segs[si].readers += 1
                try:
                    pos = SEG_HDR
                    end = self.segs[si].size
                    vmagic = self.segs[si].magic
                    while True:
                        if walk and fi == fend:
                            # the safety net: scan a victim something still points into (a record
                            # the walk could not copy) rather than retire it
                            if self.segs[si].live == SEG_HDR + self.segs[si].kept:
                                break
                            walk = False
                            pos = SEG_HDR
                        if not walk and pos >= end:
                            break
                        now = self._expiry_clock(self._now())
                        # a clear retires the victims and makes every copy pointless: give up
                        if (self.merge_stop or self.closed or self.clears != gen
                                or self.segs[si].state != SEG_SEALED):
                            stopped = True
                            break
                        # -- with the GIL: choose what to keep from up to ~256 KiB of records,
                        # looking at a bounded number of records (the event loop waits for the GIL)
                        base = self.segs[si].map
                        mlen = 0
                        nmoves = 0
                        examined = 0
                        nrec_out = nshadow_out = 0
                        while mlen < (256 << 10) and examined < MERGE_STEP:
                            examined += 1
                            if walk:
                                if fi == fend:
                                    break
                                pos = <uint32_t>found[2 * fi]
                                at = found[2 * fi + 1]
                                fi += 1
                                # the entry pointed here when the walk saw it: an intact header
                                if pos < SEG_HDR or pos + HDR > end:
                                    continue
                                rec = frame_size(base + pos, vmagic)
                                if rec == 0 or rec > end - pos:
                                    continue
                            else:
                                if pos >= end:
                                    break
                                nxt = find_frame(base, pos, end, vmagic)
                                if nxt < 0:
                                    pos = end
                                    break
                                pos = <size_t>nxt
                                # the header has its own CRC: the size is trusted, and the body
                                # is checked only for a record that is copied or whose key is used
                                rec = frame_size(base + pos, vmagic)
                                if rec > end - pos:
                                    pos = end
                                    break
                            if mlen + rec > mcap:
                                if mlen:
                                    if walk:
                                        fi -= 1
                                    break
                                mcap = rec + HDR
                                mbuf = <char *>realloc(mbuf, mcap)
                                if mbuf == NULL:
                                    raise MemoryError()
                            flags = <uint8_t>base[pos + R_FLAGS]
                            kl = ld32(base + pos + R_KL)
                            kp = base + pos + HDR
                            expiry = ld64(base + pos + R_EXP)
                            # where the entry of a record to copy is: a position in the arena,
                            # NO_ENTRY (look the key up again), or NOT_COPIED
                            entry_at = NOT_COPIED
                            slot = 0
                            if walk and self.kd.gen == walk_gen:
                                # the entry the walk saw, unmoved: when it still points here and
                                # has not expired, copy without looking the key up
                                e = <kd_entry *>(self.kd.arena + at)
                                if (e.seg == si and e.off == pos and not (flags & F_TOMB)
                                        and (e.expiry == 0 or <int64_t>e.expiry > now)):
                                    entry_at = at
                            if flags & F_CLEAR:
                                if keep_tombs[i] and not walk and body_ok(base + pos, rec):
                                    memcpy(mbuf + mlen, base + pos, rec)
                                    mlen += rec
                                    nrec_out += 1
                                    nshadow_out += 1
                                pos += rec
                                continue
                            if entry_at == NOT_COPIED:
                                # an unchecked key is safe to look up: only the key that was
                                # indexed at exactly this record can match below
                                slot = kd_find(&self.kd, kp, kl, kd_hash(&self.kd, kp, kl))
                                if slot >= 0 and not (flags & F_TOMB):
                                    e = kd_entry_at(&self.kd, slot)
                                    if e.seg == si and e.off == pos:
                                        if e.expiry != 0 and <int64_t>e.expiry <= now:
                                            if body_ok(base + pos, rec):
                                                self._remove_slot(slot)
                                                self.expired_removed += 1
                                                slot = -1
                                        else:
                                            entry_at = NO_ENTRY
                            if entry_at != NOT_COPIED:
                                if body_ok(base + pos, rec):    # else skipped whole, as a scan does
                                    memcpy(mbuf + mlen, base + pos, rec)
                                    moves[4 * nmoves] = pos
                                    moves[4 * nmoves + 1] = mlen
                                    moves[4 * nmoves + 2] = rec
                                    moves[4 * nmoves + 3] = entry_at
                                    nmoves += 1
                                    mlen += rec
                                    nrec_out += 1
                                    if expiry != 0:
                                        nshadow_out += 1
                                pos += rec
                                continue
                            if slot < 0 and keep_tombs[i] and body_ok(base + pos, rec):
                                key = PyBytes_FromStringAndSize(kp, kl)
                                if key not in emitted:
                                    emitted.add(key)
                                    mlen += encode_record(mbuf + mlen, 0, <uint64_t>now, 0,
                                                          F_TOMB, kp, kl, NULL, 0)
                                    nrec_out += 1
                                    nshadow_out += 1
                            pos += rec
                        if mlen == 0:
                            with nogil:
                                let_others_run()
                            continue
                        # -- an output segment with room
                        if out == 0xFFFFFFFF or (out_size > SEG_HDR and out_size + mlen > self.segment_bytes):
                            if out != 0xFFFFFFFF:
                                self._finish_output(out, &hb)
                            if next_id >= limit:
                                raise StorageError("no segment id left for a merge output")
                            fdo, out_magic = _create_segment(self.path, next_id)
                            out = self._add_seg(next_id, fdo, self.map_len, SEG_HDR, SEG_SEALED)
                            self.segs[out].magic = out_magic
                            self.segs[out].readers += 1   # pinned while being written
                            outputs.append(out)
                            next_id += 1
                            out_size = SEG_HDR
                            if hint_start(&hb) < 0:
                                raise MemoryError()
                        # -- without the GIL: one write of the chunk, and its hint entries
                        fd = self.segs[out].fd
                        omagic = self.segs[out].magic
                        rel = 0
                        err = 0
                        with nogil:
                            restamp(mbuf, mlen, omagic)
                            if hint_add_records(&hb, mbuf, mlen, out_size, 0, omagic) < 0:
                                err = -1
                            while err == 0 and rel < mlen:
                                r = c_write(fd, mbuf + rel, mlen - rel)
                                if r < 0:
                                    if errno == EINTR:
                                        continue
                                    err = errno
                                    break
                                rel += r
                            merge_pause(self.merge_pause_us, &self.merge_paused_us)
                        if err == -1:
                            raise MemoryError("cannot build a hint file")
                        if err:
                            raise StorageError(f"merge write failed: {os.strerror(err)}")
                        seg_prefault(self.segs[out].map, out_size, out_size + mlen)
                        # -- with the GIL: move keydir entries that still point at the originals
                        for k in range(nmoves):
                            if moves[4 * k + 3] != NO_ENTRY and self.kd.gen == walk_gen:
                                e = <kd_entry *>(self.kd.arena + moves[4 * k + 3])
                            else:
                                kp = mbuf + moves[4 * k + 1] + HDR
                                kl = ld32(mbuf + moves[4 * k + 1] + R_KL)
                                slot = kd_find(&self.kd, kp, kl, kd_hash(&self.kd, kp, kl))
                                if slot < 0:
                                    continue
                                e = kd_entry_at(&self.kd, slot)
                            if e.seg == si and e.off == moves[4 * k]:
                                self.segs[si].live -= e.size
                                e.seg = out
                                e.off = <uint32_t>(out_size + moves[4 * k + 1])
                                self.segs[out].live += e.size
                        # tombstones and markers a merge keeps are needed: count them live
                        self.segs[out].live += mlen - sum_moves(moves, nmoves)
                        self.segs[out].kept += mlen - sum_moves(moves, nmoves)
                        self.segs[out].nrec += nrec_out
                        self.segs[out].nshadow += nshadow_out
                        self.segs[out].size += mlen
                        out_size += mlen
                        self.merge_written += mlen
                        self.merge_copied += nmoves
                    if not stopped:
                        if rank in walked and walk:
                            self.merge_walked += 1
                        else:
                            self.merge_scanned += 1
                finally:
                    self.segs[si].readers -= 1
                    self._release(si)
            if out != 0xFFFFFFFF:
                self._finish_output(out, &hb)
            if not stopped and self.clears == gen and not self._forget_uncopied(victims, gen):
                # a victim may hold the only durable version of a key whose newer version sits
                # in a later segment not yet synced: that must be durable before the victim goes
                self._flush()
                self._fsync_active()
                self._sync_opened(self.segs[<uint32_t>victims[0]].id)
                _fsync_dir(self.path)
                for i in victims:
                    self._retire(i)
                _fsync_dir(self.path)
                self._merges_done += 1
        finally:
            for o in outputs:
                si = o
                self.segs[si].readers -= 1
                if self.segs[si].state == SEG_SEALED:    # a clear may have retired it meanwhile
                    if self.segs[si].size == 0:
                        self._retire(si)       # created, then its first write failed
                    elif self.segs[si].synced < self.segs[si].size and not self.segs[si].dirty:
                        self.segs[si].dirty = 1   # unfinished: the next fsync covers it
                        self.ndirty += 1
                self._release(si)
            free(mbuf)
            free(moves)
            free(found)
            free(hb.p)

    cdef int _forget_uncopied(self, list victims, uint64_t clears) except -1:
        """Before the victims go: drop the keydir entries that still point into one - records
        that failed their CRC, which the merge could not copy (a read of them fails its checksum
        anyway; a cluster's replicas repair the key) - so that no entry outlives its segment.
        1 when the merge must stop; raises when the keydir kept moving under the walk (the
        merge is then left undone: its outputs replay after the victims, so nothing is lost)."""
        cdef uint64_t *found = NULL
        cdef size_t nfound = 0, i
        cdef uint64_t kgen = 0
        cdef const kd_entry *e
        cdef int64_t slot
        left = {rank for rank, v in enumerate(victims)
                if self.segs[<uint32_t>v].live != SEG_HDR + self.segs[<uint32_t>v].kept}
        if not left:
            return 0
        slots = {victims[rank] for rank in left}
        try:
            if self._walk_keydir(victims, left, clears, &found, &nfound, &kgen):
                return 1
            if not left or self.kd.gen != kgen:
                raise StorageError("a merge could not find the records it left behind")
            keys = []
            for i in range(nfound):
                e = <const kd_entry *>(self.kd.arena + found[2 * i + 1])
                keys.append(PyBytes_FromStringAndSize(e.key, <size_t>e.klen_m1 + 1))
        finally:
            free(found)
        for key in keys:
            slot = kd_find(&self.kd, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                           kd_hash(&self.kd, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key)))
            if slot >= 0 and kd_entry_at(&self.kd, slot).seg in slots:
                self._remove_slot(slot)
                self.merge_dropped += 1
        return 0

    def _walk_plan(self, victims, keep_tombs):
        """Ranks (in victims) of the victims whose live records a walk of the keydir finds,
        when one walk costs less than scanning their records.  A walk sees only the keys the
        keydir holds, so not for a victim that may have to leave tombstones behind: one that
        keeps tombstones and holds a tombstone, clear marker or record with an expiry (whose
        key may be gone without a tombstone)."""
        cdef uint64_t records = 0
        cdef size_t live = self.kd.arena_used - self.kd.arena_dead
        cdef double entries = (<double>self.kd.arena_used * self.kd.count / live) if live else 0
        ranks = set()
        for rank, v in enumerate(victims):
            if not keep_tombs[v] or self.segs[<uint32_t>v].nshadow == 0:
                ranks.add(rank)
                records += self.segs[<uint32_t>v].nrec
        if not ranks or entries > WALK_RATIO * records:
            return set()
        return ranks

    cdef int _walk_keydir(self, list victims, set walked, uint64_t clears, uint64_t **found,
                          size_t *nfound, uint64_t *kgen) except -1:
        """Collect a pair (rank << 32 | offset, position in the arena) for every keydir entry
        that points into a victim of `walked`, sorted, into a new array; *kgen is the arena's
        generation they are valid for.  The arena is walked in steps, letting other threads
        run in between: they may remove entries or add new ones at the end (which point at the
        active segment, never into a victim), but a rebuild moves entries, so the walk starts
        over.  1 when the merge must stop; empties `walked` when the arena keeps moving."""
        cdef uint32_t nslots = self.nsegs, none = 0xFFFFFFFF
        cdef uint32_t *rank_of = <uint32_t *>malloc(nslots * sizeof(uint32_t) + 1)
        cdef uint64_t *buf = NULL
        cdef uint64_t *nb
        cdef size_t pos, end, step_end, n = 0, cap = 0
        cdef const kd_entry *e
        cdef int rc
        if rank_of == NULL:
            raise MemoryError()
        try:
            memset(rank_of, 0xFF, nslots * sizeof(uint32_t))
            for rank in walked:
                rank_of[<uint32_t>victims[rank]] = rank
            for _ in range(3):
                kgen[0] = self.kd.gen
                end = self.kd.arena_used
                pos = n = 0
                while pos < end:
                    step_end = pos + WALK_STEP
                    while pos < end and pos < step_end:
                        e = <const kd_entry *>(self.kd.arena + pos)
                        if e.seg < nslots and rank_of[e.seg] != none:   # KD_DEAD >= nslots
                            if n == cap:
                                cap = cap * 2 if cap else 4096
                                nb = <uint64_t *>realloc(buf, cap * 2 * sizeof(uint64_t))
                                if nb == NULL:
                                    raise MemoryError()
                                buf = nb
                            buf[2 * n] = (<uint64_t>rank_of[e.seg] << 32) | e.off
                            buf[2 * n + 1] = pos
                            n += 1
                        pos += kd_entry_bytes(e)
                    with nogil:
                        let_others_run()
                        merge_pause(self.merge_pause_us, &self.merge_paused_us)
                    if self.merge_stop or self.closed or self.clears != clears:
                        return 1
                    if self.kd.gen != kgen[0]:
                        break
                else:
                    with nogil:
                        rc = sort_pairs(buf, n)
                    if rc < 0:
                        raise MemoryError()
                    found[0] = buf
                    nfound[0] = n
                    buf = NULL
                    return 0
            walked.clear()
            return 0
        finally:
            free(rank_of)
            free(buf)

    def _segment_accounting(self):
        """For tests: per sealed or active segment id, (live, kept, SEG_HDR + sizes of the
        keydir entries pointing into it); live should be kept + the last."""
        cdef size_t pos = 0
        cdef const kd_entry *e
        cdef uint32_t i
        self._check_open()
        pointed = [SEG_HDR] * self.nsegs
        while pos < self.kd.arena_used:
            e = <const kd_entry *>(self.kd.arena + pos)
            pos += kd_entry_bytes(e)
            if e.seg != KD_DEAD:
                pointed[e.seg] += e.size
        return {self.segs[i].id: (self.segs[i].live, self.segs[i].kept, pointed[i])
                for i in range(self.nsegs) if self.segs[i].state in (SEG_SEALED, SEG_ACTIVE)}

    cdef int _finish_output(self, uint32_t out, HintBuf *hb) except -1:
        """fsync a merge output and write its hint file (which frees hb)."""
        if self.segs[out].state != SEG_SEALED:      # a clear retired it: no hint for it
            free(hb.p)
            hb.p = NULL
            return 0
        cdef uint64_t target = self.segs[out].size
        cdef int err = self._sync_fd(self.segs[out].fd, self.segs[out].id, target)
        if err:
            free(hb.p)
            hb.p = NULL
            self._lose_durability(self.segs[out].id, err)
        self.segs[out].synced = target
        write_hint_file(self.path, self.segs[out].id, hb, self.segs[out].size,
                        self.segs[out].magic)
        self.segs[out].hinted = 1
        return 0

    # ---- statistics and lifetime ---------------------------------------------------------------
    # ---- anti-entropy trees -----------------------------------------------------------------
    # The store keeps them because every change of a key passes through it, expiry and merges
    # included: one Merkle tree per partition (the top `partition_bits` of the key's XXH64,
    # as the ring cuts partitions), whose leaves are segments of the key space (the low bits)
    # holding the sum of their keys' 32-bit digests. Each keydir entry keeps its digest, so a
    # write replaces one item in O(depth) without reading the old value.
    def enable_trees(self, nodes, int partition_bits, int fanout, int depth):
        """Keep the trees in `nodes` (a C-contiguous uint64 array of 2**partition_bits trees,
        each the levels root..leaves of a complete fanout-ary tree of the given depth). They
        start empty: keys written from now on are in them at once, keys already stored once
        rebuild_trees() has reached them."""
        cdef uint64_t[::1] view = nodes
        cdef int fbits = fanout.bit_length() - 1, level
        cdef size_t width = 1, total = 0
        if fanout < 2 or fanout & (fanout - 1) or not 1 <= depth <= 6 or fbits * depth > 24:
            raise ValueError(f"bad tree shape: fanout {fanout}, depth {depth}")
        if not 0 <= partition_bits <= 16:
            raise ValueError(f"partition_bits must be in 0..16, got {partition_bits}")
        for level in range(depth + 1):
            self.tree_offsets[level] = total
            total += width
            width *= fanout
        if <size_t>view.shape[0] != total << partition_bits:
            raise ValueError(f"the trees need {total << partition_bits} nodes, "
                             f"got {view.shape[0]}")
        self._check_open()
        nodes.fill(0)
        # every digest known so far is forgotten: the rebuild computes them again
        cdef size_t pos = 0
        cdef kd_entry *e
        while pos < self.kd.arena_used:
            e = <kd_entry *>(self.kd.arena + pos)
            pos += kd_entry_bytes(e)
            e.digest = 0
        self.tree_array = nodes
        self.tree_nodes = &view[0]
        self.tree_dirty_array = bytearray(1 << partition_bits)
        cdef uint8_t[::1] dirty = self.tree_dirty_array
        self.tree_dirty = &dirty[0]
        self.tree_pbits = partition_bits
        self.tree_fbits = fbits
        self.tree_depth = depth
        self.tree_size = total
        self.tree_leaves = width // fanout
        self.tree_pos = 0
        self.tree_gen = self.kd.gen

    def refresh_trees(self):
        """Sum the inner levels of every tree whose leaves changed since (call before reading
        a tree's inner levels); returns how many trees were summed."""
        if self.tree_nodes == NULL:
            return 0
        cdef size_t t, i, j, base, child, width, fanout = <size_t>1 << self.tree_fbits
        cdef size_t count = <size_t>1 << self.tree_pbits, done = 0
        cdef int level
        cdef uint64_t acc
        cdef uint64_t *tree
        for t in range(count):
            if not self.tree_dirty[t]:
                continue
            self.tree_dirty[t] = 0
            tree = self.tree_nodes + t * self.tree_size
            for level in range(self.tree_depth - 1, -1, -1):
                base = self.tree_offsets[level]
                child = self.tree_offsets[level + 1]
                width = child - base
                for i in range(width):
                    acc = 0
                    for j in range(fanout):
                        acc += tree[child + i * fanout + j]
                    tree[base + i] = acc
            done += 1
        return done

    def rebuild_trees(self, max_keys=65536):
        """Add up to max_keys stored keys whose digest is not known yet to the trees (a fold
        over the keydir, reading each value once); returns (keys added, done)."""
        self._check_open()
        if self.tree_nodes == NULL:
            raise StorageError("the anti-entropy trees are not enabled")
        cdef size_t added = 0, want = max_keys, kl
        cdef kd_entry *e
        cdef const char *p
        cdef uint32_t si, d
        if self.kd.gen != self.tree_gen:
            self.tree_pos = 0         # entries moved in the arena: walk again (known ones are skipped)
            self.tree_gen = self.kd.gen
        while self.tree_pos < self.kd.arena_used and added < want:
            e = <kd_entry *>(self.kd.arena + self.tree_pos)
            self.tree_pos += kd_entry_bytes(e)
            if e.seg == KD_DEAD or e.digest != 0:
                continue
            si = e.seg
            kl = <size_t>e.klen_m1 + 1
            if si == <uint32_t>self.active and e.off >= self.segs[si].size:
                p = self.wbuf + (e.off - self.segs[si].size)
            else:
                p = self.segs[si].map + e.off
            if (<uint8_t>p[R_FLAGS]) & F_LZ4:
                value = self._read_value(e)     # Python may run: e is looked up again
                kb = PyBytes_FromStringAndSize(p + HDR, kl)
                slot = kd_find(&self.kd, PyBytes_AS_STRING(kb), kl,
                               kd_hash(&self.kd, PyBytes_AS_STRING(kb), kl))
                if slot < 0 or self.kd.gen != self.tree_gen:
                    continue
                e = kd_entry_at(&self.kd, slot)
                d = self._digest(e.key, kl, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
            else:
                d = self._digest(e.key, kl, p + HDR + kl, e.size - HDR - kl)
            e.digest = d
            self._tree_update(e.key, kl, 0, d)
            added += 1
        return added, self.tree_pos >= self.kd.arena_used

    def tree_listing(self, wanted, cursor=None, max_entries=1 << 62):
        """A step of a walk over the keydir listing the stored keys in the wanted segments
        with their digests: `wanted` is a uint8 array with one flag per (partition, segment),
        partition-major. Returns (next cursor or None at the end, entries, listing), the
        listing being the entries packed as (key length u32 LE, key, digest u32 LE), the form
        `listing_differences` reads (anti-entropy sends it as it is). Start with cursor None.
        Keys whose digest is not known yet are left out (their trees are not complete
        either); a walk that the keydir moved under starts again."""
        self._check_open()
        if self.tree_nodes == NULL:
            raise StorageError("the anti-entropy trees are not enabled")
        cdef const uint8_t[::1] flags = wanted
        cdef size_t pos = 0, kl, seen = 0, limit = max_entries, used = 0, cap = 1 << 16, count = 0
        cdef uint64_t h, index, gen = self.kd.gen
        cdef kd_entry *e
        cdef uint32_t le
        cdef char *buf
        cdef char *grown
        if <size_t>flags.shape[0] != self.tree_leaves << self.tree_pbits:
            raise ValueError(f"expected {self.tree_leaves << self.tree_pbits} flags, "
                             f"got {flags.shape[0]}")
        if cursor is not None and cursor[1] == gen:
            pos = cursor[0]
        buf = <char *>malloc(cap)
        if buf == NULL:
            raise MemoryError()
        try:
            while pos < self.kd.arena_used and seen < limit:
                e = <kd_entry *>(self.kd.arena + pos)
                pos += kd_entry_bytes(e)
                seen += 1
                if e.seg == KD_DEAD or e.digest == 0:
                    continue
                kl = <size_t>e.klen_m1 + 1
                h = fd_xxh64(e.key, kl, FD_KEY_SEED)
                index = h & <uint64_t>(self.tree_leaves - 1)
                if self.tree_pbits:
                    index += (h >> (64 - self.tree_pbits)) * self.tree_leaves
                if not flags[index]:
                    continue
                if used + kl + 8 > cap:
                    cap = 2 * (used + kl + 8)
                    grown = <char *>realloc(buf, cap)
                    if grown == NULL:
                        raise MemoryError()
                    buf = grown
                le = <uint32_t>kl                 # the platforms built for are little-endian
                memcpy(buf + used, &le, 4)
                memcpy(buf + used + 4, e.key, kl)
                le = e.digest
                memcpy(buf + used + 4 + kl, &le, 4)
                used += kl + 8
                count += 1
            listing = PyBytes_FromStringAndSize(buf, used)
        finally:
            free(buf)
        return (None if pos >= self.kd.arena_used else (pos, gen)), count, listing

    def listing_differences(self, listing, size_t at=0, size_t max_entries=1 << 62):
        """Read up to max_entries entries of a listing (see `tree_listing`) from byte `at`
        and compare their digests with this store's: returns (next offset, entries read,
        [(key, this store's digest or 0 when absent), ...] for the keys whose digests differ).
        A listing that does not parse raises ValueError (it came from a peer)."""
        self._check_open()
        cdef const uint8_t[::1] view = listing
        cdef size_t n = view.shape[0], seen = 0
        cdef uint32_t kl, theirs, ours
        cdef const char *key
        cdef int64_t slot
        out = []
        while at < n and seen < max_entries:
            if n - at < 4:
                raise ValueError(f"listing truncated at byte {at}")
            memcpy(&kl, &view[at], 4)
            if kl == 0 or kl > MAX_KEY or n - at - 4 < <size_t>kl + 4:
                raise ValueError(f"listing entry at byte {at} has a bad key length {kl}")
            key = <const char *>&view[at + 4]
            memcpy(&theirs, &view[at + 4 + kl], 4)
            at += <size_t>kl + 8
            seen += 1
            slot = kd_find(&self.kd, key, kl, kd_hash(&self.kd, key, kl))
            ours = 0 if slot < 0 else kd_entry_at(&self.kd, slot).digest
            if ours != theirs:
                out.append((PyBytes_FromStringAndSize(key, kl), ours))
        return at, seen, out

    def keys_by_hash(self, uint64_t start, size_t limit):
        """The `limit` stored keys with the smallest ring hashes (xxh64, as the ring and the
        trees hash them) at or after `start`, plus every further key sharing the last one's
        hash, as sorted [(hash, key), ...], and whether keys past them remain: (more, pairs).
        One pass over the keydir in C and a selection, whatever the store holds: SCAN, KEYS
        and DBSIZE read a cluster member's keys in hash order this way."""
        self._check_open()
        cdef size_t pos = 0, m = 0, chosen, i, kl
        cdef uint64_t h, last
        cdef kd_entry *e
        cdef HashedKey *items = NULL
        if limit == 0:
            return self.kd.count > 0, []
        items = <HashedKey *>malloc((self.kd.count + 1) * sizeof(HashedKey))
        if items == NULL:
            raise MemoryError()
        try:
            while pos < self.kd.arena_used:
                e = <kd_entry *>(self.kd.arena + pos)
                if e.seg != KD_DEAD:
                    h = fd_xxh64(e.key, <size_t>e.klen_m1 + 1, FD_KEY_SEED)
                    if h >= start:
                        items[m].h = h
                        items[m].pos = pos
                        m += 1
                pos += kd_entry_bytes(e)
            chosen = m
            if m > limit:
                last = select_hash(items, m, limit - 1, self.kd.seed0 ^ m ^ start)
                chosen = limit
                for i in range(limit, m):      # the keys sharing the last hash come too
                    if items[i].h == last:
                        items[chosen], items[i] = items[i], items[chosen]
                        chosen += 1
            qsort(items, chosen, sizeof(HashedKey), hashed_key_cmp)
            out = []
            for i in range(chosen):
                e = <kd_entry *>(self.kd.arena + items[i].pos)
                kl = <size_t>e.klen_m1 + 1
                out.append((items[i].h, PyBytes_FromStringAndSize(e.key, kl)))
        finally:
            free(items)
        return chosen < m, out

    def small_records(self, cursor, max_entries, tags, max_value):
        """A step of a walk over the keydir for the live keys whose value (as written) is at
        most max_value bytes and starts with one of the bytes of `tags`: returns (next cursor
        or None at the end, [(key, value, written_ms), ...]), written_ms being when this node
        wrote the record. Start with cursor None; a walk that the keydir moved under starts
        again (keys already seen may come again)."""
        self._check_open()
        cdef bytes wanted = bytes(tags)
        cdef size_t pos = 0, seen = 0, kl, vl, limit = max_entries
        cdef uint64_t gen = self.kd.gen
        cdef kd_entry *e
        cdef const char *p
        cdef uint32_t si
        if cursor is not None and cursor[1] == gen:
            pos = cursor[0]
        out = []
        while pos < self.kd.arena_used and seen < limit:
            e = <kd_entry *>(self.kd.arena + pos)
            pos += kd_entry_bytes(e)
            if e.seg == KD_DEAD:
                continue
            seen += 1
            kl = <size_t>e.klen_m1 + 1
            vl = e.size - HDR - kl
            if vl == 0 or vl > <size_t>max_value:
                continue
            si = e.seg
            if si == <uint32_t>self.active and e.off >= self.segs[si].size:
                p = self.wbuf + (e.off - self.segs[si].size)
            else:
                p = self.segs[si].map + e.off
            if (<uint8_t>p[R_FLAGS]) & F_LZ4 or memchr(PyBytes_AS_STRING(wanted),
                                                       <uint8_t>p[HDR + kl], len(wanted)) == NULL:
                continue
            out.append((PyBytes_FromStringAndSize(p + HDR, kl),
                        PyBytes_FromStringAndSize(p + HDR + kl, vl), ld64(p + R_TS)))
        return (None if pos >= self.kd.arena_used else (pos, gen)), out

    def digest_of(self, key):
        """The anti-entropy digest kept for key (0: absent, or not known yet)."""
        kb = key_bytes(key)
        cdef int64_t slot = kd_find(&self.kd, PyBytes_AS_STRING(kb), PyBytes_GET_SIZE(kb),
                                    kd_hash(&self.kd, PyBytes_AS_STRING(kb), PyBytes_GET_SIZE(kb)))
        return 0 if slot < 0 else kd_entry_at(&self.kd, slot).digest

    @property
    def expire_hold_ms(self):
        """0, or a time (Unix ms): records whose expiry is later do not expire yet. Anti-entropy
        holds expired values back this way until every replica has seen them (they act as
        tombstones until then); reads above the store decide visibility themselves."""
        return self.expire_hold

    @expire_hold_ms.setter
    def expire_hold_ms(self, value):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"expire_hold_ms must be a non-negative integer, got {value!r}")
        self.expire_hold = value

    def stats(self):
        """Keys, per-segment live/dead bytes, expired-but-unswept keys (read-only: a writable
        store drops them first), keys removed because they expired since open (lazily on
        access, by sweep_expired or by a merge), keydir memory, the last recovery report."""
        self._check_open()
        cdef Seg s
        cdef uint32_t i
        expired = 0
        if self.kd.volatile_count:
            if self.read_only:
                expired = self._count_expired()
            else:
                self._expire_due(self._now(), <size_t>-1)
        segments = []
        live = dead = 0
        for i in range(self.nsegs):
            s = self.segs[i]          # a copy: building dicts may let another thread in
            if s.state not in (SEG_SEALED, SEG_ACTIVE):
                continue
            size = s.size + (self.wlen if i == <uint32_t>self.active else 0)
            segments.append({"file": "%016x.data" % s.id, "bytes": size, "live_bytes": s.live,
                             "dead_bytes": size - s.live, "hint": bool(s.hinted),
                             "active": i == <uint32_t>self.active})
            live += s.live
            dead += size - s.live
        n = self.kd.count
        mem = kd_memory(&self.kd)
        return {
            "path": self.path,
            "keys": n,
            "expired_keys": expired,
            "keys_with_expiry": self.kd.volatile_count,
            "expired_removed": self.expired_removed,
            "live_bytes": live,
            "dead_bytes": dead,
            "pending_bytes": self.wlen,
            "segments": segments,
            "keydir_bytes": mem,
            "keydir_bytes_per_key": (mem / n) if n else 0.0,
            "keydir_overhead_per_key": ((mem - self.kd.key_bytes) / n) if n else 0.0,
            "sync": self.sync,
            "merging": self._merge_thread is not None and self._merge_thread.is_alive(),
            "merges": self._merges_done,
            # victims whose live records a keydir walk found / that were read whole, records
            # merges copied (since open)
            "merge_walked_segments": self.merge_walked,
            "merge_scanned_segments": self.merge_scanned,
            "merge_copied_records": self.merge_copied,
            "merge_dropped_records": self.merge_dropped,
            "recovery": self.recovery_report,
        }

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def close(self):
        """Write and fsync pending records, stop the background threads, release the lock."""
        if self.closed:
            return
        self.merge_stop = 1            # no new merge starts from here on
        if self._flusher_stop is not None:
            self._flusher_stop.set()
            if self._flusher is not threading.current_thread():
                self._flusher.join()
        self._stop_merge()
        try:
            if not self.read_only:
                self._flush()
                self._fsync_active()
        finally:
            self._release_all()

    def _release_all(self):
        cdef uint32_t i
        self.closed = 1
        for i in range(self.nsegs):
            if self.segs[i].map != NULL:
                munmap(self.segs[i].map, self.segs[i].map_len)
                self.segs[i].map = NULL
            if self.segs[i].fd >= 0 and self.segs[i].state != SEG_FREE:
                os.close(self.segs[i].fd)
            self.segs[i].fd = -1
            self.segs[i].state = SEG_FREE
        self.active = -1
        free(self.wbuf)
        self.wbuf = NULL
        self.wlen = self.wcap = 0
        kd_free(&self.kd)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __del__(self):
        if not self.closed:
            try:
                self.close()
            except Exception:
                pass

    def __dealloc__(self):
        cdef uint32_t i
        if self.segs != NULL:
            for i in range(self.nsegs):
                if self.segs[i].map != NULL:
                    munmap(self.segs[i].map, self.segs[i].map_len)
            free(self.segs)
        free(self.wbuf)
        if self.kd.slots != NULL:
            kd_free(&self.kd)

    def __repr__(self):
        state = "closed" if self.closed else f"{self.kd.count} keys"
        return f"<fastdyn Store {self.path!r} sync={self.sync} {state}>"


cdef void restamp(char *p, size_t n, uint64_t magic) noexcept nogil:
    """Give the records in p[0:n] (whole, back to back) the magic of the segment they go to;
    the CRCs do not cover it."""
    cdef size_t pos = 0
    while pos < n:
        st64(p + pos, magic)
        pos += HDR + ld32(p + pos + R_KL) + ld32(p + pos + R_VL)


cdef size_t sum_moves(size_t *moves, size_t n) noexcept nogil:
    cdef size_t t = 0, k
    for k in range(n):
        t += moves[4 * k + 2]
    return t


cdef int hint_reserve(HintBuf *h, size_t more) noexcept nogil:
    cdef size_t cap = h.cap if h.cap else (1 << 16)
    cdef char *p
    while cap < h.len + more:
        cap *= 2
    if cap != h.cap:
        p = <char *>realloc(h.p, cap)
        if p == NULL:
            return -1
        h.p = p
        h.cap = cap
    return 0


cdef int hint_start(HintBuf *h) noexcept nogil:
    """An empty hint: room for the header, filled in by hint_finish."""
    h.p = NULL
    h.len = h.cap = 0
    h.count = 0
    if hint_reserve(h, HINT_HEAD) < 0:
        return -1
    h.len = HINT_HEAD
    return 0


cdef int hint_add_records(HintBuf *h, const char *base, size_t end, uint64_t off_base,
                          size_t start, uint64_t magic) noexcept nogil:
    """Append an entry for every valid record in base[start:end] (damaged bytes are skipped as
    a scan skips them); entry offsets are off_base + position."""
    cdef size_t pos = start, rec, kl
    cdef char *q
    while True:
        rec = next_record(base, &pos, end, magic)
        if rec == 0:
            break
        kl = ld32(base + pos + R_KL)
        if hint_reserve(h, HINT_ENTRY + kl) < 0:
            return -1
        q = h.p + h.len
        st32(q, <uint32_t>(off_base + pos))
        st32(q + 4, <uint32_t>rec)
        memcpy(q + 8, base + pos + R_EXP, 8)
        q[16] = base[pos + R_FLAGS]
        st32(q + 17, <uint32_t>kl)
        memcpy(q + HINT_ENTRY, base + pos + HDR, kl)
        h.len += HINT_ENTRY + kl
        h.count += 1
        pos += rec
    return 0


cdef int hint_finish(HintBuf *h, uint64_t data_size, uint64_t magic) noexcept nogil:
    """Fill in the header and append the count and the crc32c."""
    if hint_reserve(h, 12) < 0:
        return -1
    memcpy(h.p, "FDHINT02", 8)
    st64(h.p + 8, data_size)
    st64(h.p + 16, magic)
    st64(h.p + h.len, h.count)
    h.len += 8
    st32(h.p + h.len, crc32c_extend(0, h.p, h.len))
    h.len += 4
    return 0


cdef int write_hint_file(path, uint64_t seg_id, HintBuf *h, uint64_t data_size,
                         uint64_t magic) except -1:
    """Write `<id>.hint` atomically (temporary file, fsync, rename); frees the buffer."""
    cdef int fd, rc = 0, err = 0
    cdef size_t done = 0
    cdef ssize_t r
    try:
        if hint_finish(h, data_size, magic) < 0:
            raise MemoryError("cannot build a hint file")
        final = os.path.join(path, "%016x.hint" % seg_id)
        tmp = final + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        with nogil:
            while done < h.len:
                r = c_write(fd, h.p + done, h.len - done)
                if r < 0:
                    if errno == EINTR:
                        continue
                    err = errno
                    break
                done += r
            if err == 0:
                rc = fdatasync(fd)
                if rc:
                    err = errno
        os.close(fd)
        if err:
            os.unlink(tmp)
            raise StorageError(f"cannot write hint file {final}: {os.strerror(err)}")
        os.replace(tmp, final)
    finally:
        free(h.p)
        h.p = NULL
        h.len = h.cap = 0
    return 0


cdef int write_all(int fd, const char *p, size_t n) noexcept nogil:
    """write() all of p[0:n], retrying short writes; 0 or the errno of the failure."""
    cdef size_t done = 0
    cdef ssize_t r
    while done < n:
        r = c_write(fd, p + done, n - done)
        if r < 0:
            if errno == EINTR:
                continue
            return errno
        done += r
    return 0


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

