# cython: language_level=3
# The storage engine's C-level interface: `from fastdyn._logstore cimport Store` lets another
# Cython module call Store's methods without Python attribute lookups.  (The dotted file name is
# how Cython finds the declarations of module fastdyn._logstore built from ext/_logstore.pyx.)
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t


cdef extern from "keydir.h":
    ctypedef struct kd_entry:
        uint32_t seg
        uint32_t off
        uint32_t size
        uint64_t expiry
        uint16_t klen_m1
        uint32_t digest
        char key[1]

    ctypedef struct keydir:
        uint64_t *slots
        size_t cap
        size_t nslots
        size_t count
        size_t volatile_count
        char *arena
        size_t arena_used
        size_t arena_cap
        size_t arena_dead
        size_t key_bytes
        size_t ntimers
        uint64_t seed0
        uint64_t seed1
        uint64_t gen


cdef enum:
    PREFETCH_MAX = 32   # keys one Store._prefetch_lookups call fetches ahead
    MAX_KEY = 65536     # the longest key


cdef struct Seg:
    int fd
    uint64_t id
    char *map
    size_t map_len
    uint64_t size       # bytes in the file (written with write())
    uint64_t synced     # bytes a successful fsync covers (it began when the file was this long)
    uint64_t live       # bytes of records the keydir points at, plus tombstones a merge kept
    uint64_t kept       # of which tombstones and clear markers a merge kept (in this process)
    uint64_t nrec       # records (a merge's cost estimate)
    uint64_t nshadow    # tombstones, clear markers and records with an expiry: what a merge may
                        # have to leave a tombstone for (see Store._merge_segments)
    int readers         # pins by unlocked reads, folds, fsync: unmap only when 0
    int state           # SEG_* below
    int hinted
    int dirty           # sealed with synced < size (counted in Store.ndirty)
    uint64_t magic      # random, in the segment header and at the start of each record


cdef struct HintBuf:
    char *p             # 24-byte header, entries, then count and crc (see _logstore.pyx)
    size_t len
    size_t cap
    uint64_t count


cdef class Store:
    cdef keydir kd
    cdef Seg *segs
    cdef uint32_t nsegs, segs_cap
    cdef int active
    cdef char *wbuf
    cdef size_t wlen, wcap
    cdef int sync_mode
    cdef int ndirty
    cdef int batch_depth
    cdef int closed, read_only
    cdef int broken                 # BROKEN_* in _logstore.pyx: why writes are refused
    cdef object broken_reason
    cdef public object fsync_hook   # test seam: runs in place of fdatasync when set
    cdef object _opened_unsynced    # ids of segments found at open that no fsync covered yet
    cdef int merge_stop
    cdef uint64_t clears            # clear() calls: a merge that sees this change gives up
    cdef uint64_t next_major
    cdef size_t segment_bytes, max_value_bytes, compress_threshold, map_len
    cdef double merge_ratio
    cdef uint64_t expired_removed   # keys dropped because they expired, since open
    cdef uint64_t merge_walked      # victims whose live records a keydir walk found, since open
    cdef uint64_t merge_scanned     # victims merged by reading all their records, since open
    cdef uint64_t merge_copied      # records merges copied, since open
    cdef uint64_t merge_dropped     # live records merges dropped for a bad CRC, since open
    cdef object _clock
    cdef object on_write
    cdef readonly object path
    cdef readonly object recovery_report
    cdef readonly str sync
    cdef readonly int sync_interval_ms
    cdef readonly bint auto_merge
    cdef object _lock_file
    cdef object _merge_lock
    cdef object _merge_thread
    cdef object _flusher
    cdef object _flusher_stop
    cdef object _merges_done
    cdef public uint32_t merge_pause_us   # sleep between merge steps (0: none): slows merges
    cdef readonly uint64_t merge_paused_us  # time merges slept so, since open
    cdef readonly uint64_t merge_written    # bytes merges wrote, since open
    cdef object __weakref__
    # anti-entropy: one Merkle tree per partition over the keys' digests (enable_trees)
    cdef uint64_t *tree_nodes
    cdef object tree_array
    cdef int tree_pbits, tree_fbits, tree_depth
    cdef size_t tree_size, tree_leaves
    cdef size_t tree_offsets[8]
    cdef size_t tree_pos            # the rebuild's place in the keydir arena
    cdef uint64_t tree_gen          # the keydir's gen when tree_pos was taken
    cdef uint8_t *tree_dirty        # per tree: leaves changed since its inner levels were summed
    cdef object tree_dirty_array
    cdef int64_t expire_hold        # > 0: nothing expires later than this (ms)

    cdef int64_t _now(self) except? -1
    cdef int64_t _lookup(self, const char *kp, size_t kl) except -2
    cdef int64_t _find(self, key) except -2
    cdef object _read_value(self, kd_entry *e)
    cdef int _corrupt_record(self, uint32_t si, uint32_t off) except -1
    cdef Py_ssize_t _value_head(self, kd_entry *e, char *out, size_t n) except -2
    cdef Py_ssize_t _checked_value(self, kd_entry *e, size_t kl, const char **vp) except -3
    cdef void _prefetch_lookups(self, const char **keys, size_t *lens, Py_ssize_t m) noexcept
    cdef int _put(self, object key, object value, uint64_t expiry_ms) except -1
    cdef int _write(self, const char *kp, size_t kl, const char *vp, size_t vl,
                    uint64_t expiry_ms, uint8_t flags, uint32_t digest) except -1
    cdef bint _plain_put_ok(self, size_t vl) noexcept
    cdef int _put_plain(self, const char *kp, size_t kl, const char *vp, size_t vl,
                        uint64_t expiry_ms) except -1
    cdef Py_ssize_t _value_ref(self, const char *kp, size_t kl, const char **vp) except -3
    cdef int _append(self, const char *kp, size_t kl, const char *vp, size_t vl,
                     uint64_t expiry, uint8_t flags, int64_t now) except -1
    cdef int _index(self, const char *kp, size_t kl, uint32_t seg, uint32_t off,
                    uint32_t size, uint64_t expiry, uint32_t digest,
                    uint64_t *leaf=*) except -1
    cdef uint64_t *_tree_leaf(self, const char *kp, size_t kl) noexcept
    cdef uint32_t _digest(self, const char *kp, size_t kl, const char *vp, size_t vl) noexcept
    cdef void _tree_update(self, const char *kp, size_t kl, uint32_t old, uint32_t new) noexcept
    cdef int64_t _expiry_clock(self, int64_t now) noexcept
    cdef int _remove_slot(self, size_t slot) except -1
    cdef int _after_write(self) except -1
    cdef int _flush(self) except -1
    cdef int _fsync_active(self) except -1
    cdef int _fsync_seg(self, uint32_t si) except -1
    cdef int _rotate(self) except -1
    cdef bint _needs_rotation(self, size_t rec) noexcept
    cdef int _seal_active(self) except -1
    cdef uint32_t _add_seg(self, uint64_t seg_id, int fd, size_t map_len, uint64_t size,
                           int state) except? 0xFFFFFFFF
    cdef int _finish_output(self, uint32_t out, HintBuf *hb) except -1
    cdef int _forget_uncopied(self, list victims, uint64_t clears) except -1
    cdef int _walk_keydir(self, list victims, set walked, uint64_t clears, uint64_t **found,
                          size_t *nfound, uint64_t *kgen) except -1
    cdef int _release(self, uint32_t si) except -1
    cdef int _retire(self, uint32_t si) except -1
    cdef int _apply(self, uint32_t si, uint32_t off, uint32_t size, const char *kp, size_t kl,
                    uint8_t flags, uint64_t expiry, int64_t now) except -1
    cdef int _scan_segment(self, uint32_t si, int64_t now, dict report) except -1
    cdef int _load_hint(self, uint32_t si, bytes hint, int64_t now) except -1
    cdef uint32_t _open_segment(self, uint64_t seg_id, int oflags, dict report) except? 0xFFFFFFFF
    cdef size_t _expire_due(self, int64_t now, size_t want) except? 0
    cdef size_t _count_expired(self)
    cdef int _check_open(self) except -1
    cdef int _check_writable(self) except -1
    cdef int _sync_fd(self, int fd, uint64_t seg_id, uint64_t length) except -1
    cdef int _lose_durability(self, uint64_t seg_id, int err) except -1
    cdef int _sync_opened(self, uint64_t after) except -1
