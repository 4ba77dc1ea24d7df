# cython: language_level=3
"""The load generator's hot path: request generation, reply accounting and latency recording.

One `Worker` per process drives many `Connection`s (asyncio protocols on uvloop). Each reply
batch from the socket is scanned in C, every reply is matched to its in-flight record, its
latency goes into a log-linear histogram, and the freed pipeline slots are refilled with new
requests encoded straight into one output buffer: one transport.write per connection per
batch, no Python object per request.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport log
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove
from posix.time cimport CLOCK_MONOTONIC, itimerspec
from posix.unistd cimport close, read

import numpy as np


cdef extern from "decimal.h":
    char *put_uint(char *p, uint64_t v) noexcept nogil


cdef extern from "_bench.h":
    ctypedef struct fd_rng:
        pass
    ctypedef struct fd_zipf:
        uint64_t n
    uint64_t fd_now_ns() noexcept nogil
    void fd_rng_seed(fd_rng *r, uint64_t seed) noexcept nogil
    uint64_t fd_rng_next(fd_rng *r) noexcept nogil
    double fd_rng_double(fd_rng *r) noexcept nogil
    uint64_t fd_rng_below(fd_rng *r, uint64_t n) noexcept nogil
    void fd_zipf_init(fd_zipf *z, uint64_t n, double theta) noexcept nogil
    uint64_t fd_zipf_next(fd_zipf *z, fd_rng *r) noexcept nogil
    uint64_t fd_fnv64(uint64_t x) noexcept nogil
    int fd_hist_index(uint64_t v) noexcept nogil
    int FD_HIST_BUCKETS


cdef extern from "<sys/timerfd.h>" nogil:
    int timerfd_create(int clockid, int flags)
    int timerfd_settime(int fd, int flags, const itimerspec *new_value, itimerspec *old_value)
    int TFD_NONBLOCK
    int TFD_CLOEXEC
    int TFD_TIMER_ABSTIME


from client_wire cimport (FD_REPLY_OK, FD_REPLY_ERROR, FD_REPLY_NIL, FD_REPLY_PUSH,
                         fd_resp_skip, fd_mc_skip, fd_resp_first_string)


HIST_BUCKETS = FD_HIST_BUCKETS

# Operation kinds, key distributions and protocols as C constants (compared in the hot path)
cdef enum:
    K_GET, K_SET, K_INSERT, K_DEL, K_INCR, K_SCAN, K_RMW, K_DYN_GET, K_DYN_PUT, K_DYN_RMW
cdef enum:
    D_UNIFORM, D_ZIPFIAN, D_LATEST, D_SEQUENTIAL
cdef enum:
    PR_RESP, PR_MEMCACHE

# ... and their Python names; fastdyn.bench.workload maps the user's names onto them
KIND_GET, KIND_SET, KIND_INSERT, KIND_DEL, KIND_INCR = K_GET, K_SET, K_INSERT, K_DEL, K_INCR
KIND_SCAN, KIND_RMW, KIND_DYN_GET, KIND_DYN_PUT = K_SCAN, K_RMW, K_DYN_GET, K_DYN_PUT
KIND_DYN_RMW = K_DYN_RMW
DIST_UNIFORM, DIST_ZIPFIAN, DIST_LATEST, DIST_SEQUENTIAL = D_UNIFORM, D_ZIPFIAN, D_LATEST, D_SEQUENTIAL
PROTO_RESP, PROTO_MEMCACHE = PR_RESP, PR_MEMCACHE
ARRIVAL_EXP, ARRIVAL_CONST = 0, 1

cdef enum:
    MAX_OPS = 16
    SETUP_OP = 255
    KEY_LEN = 16
    BACKLOG_LIMIT = 1 << 22
    # the open loop's timer fires at most this often: sends are at most this late (plus the
    # scheduler's noise), and the tool does not spin the CPU away from the target
    TIMER_MIN_GAP_NS = 50000

cdef enum Encoding:
    E_GET, E_SET, E_DEL, E_INCR, E_MGET, E_DYN_GET, E_DYN_PUT


def hist_index(values):
    """Bucket index of each latency (ns) in a numpy array, the same function the workers use."""
    cdef const uint64_t[::1] v = np.ascontiguousarray(values, dtype=np.uint64)
    out = np.empty(v.shape[0], dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef Py_ssize_t i
    for i in range(v.shape[0]):
        o[i] = fd_hist_index(v[i])
    return out


def now_ns():
    return fd_now_ns()


# ---------------------------------------------------------------------------------------------
# Open-loop arrivals

cdef struct Arrivals:
    double gap_ns       # mean gap between intended sends
    int kind            # ARRIVAL_EXP or ARRIVAL_CONST
    double next_ns      # next intended send time (fractional ns keep the long-run rate exact)


cdef inline void arrivals_init(Arrivals *a, double rate, int kind, uint64_t start) noexcept:
    a.gap_ns = 1e9 / rate
    a.kind = kind
    a.next_ns = <double>start


cdef inline uint64_t arrivals_pop(Arrivals *a, fd_rng *rng) noexcept:
    """Returns the current intended time and advances to the next one."""
    cdef uint64_t t = <uint64_t>a.next_ns
    if a.kind == 0:
        # exponential inter-arrival (a Poisson process); 1 - u avoids log(0)
        a.next_ns += -log(1.0 - fd_rng_double(rng)) * a.gap_ns
    else:
        a.next_ns += a.gap_ns
    return t


def arrival_schedule(double rate, Py_ssize_t n, int kind, uint64_t seed, uint64_t start=0):
    """The first n intended send times (ns) of an open-loop schedule, as the workers make it."""
    cdef Arrivals a
    cdef fd_rng rng
    fd_rng_seed(&rng, seed)
    arrivals_init(&a, rate, kind, start)
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = arrivals_pop(&a, &rng)
    return out


# ---------------------------------------------------------------------------------------------
# Request generation

cdef struct OutBuf:
    char *data
    size_t length
    size_t cap


cdef int outbuf_reserve(OutBuf *b, size_t extra) except -1:
    cdef size_t cap
    cdef char *grown
    if b.length + extra <= b.cap:
        return 0
    cap = max(b.cap * 2, b.length + extra, <size_t>4096)
    grown = <char *>realloc(b.data, cap)
    if grown == NULL:
        raise MemoryError()
    b.data = grown
    b.cap = cap
    return 0


cdef inline char *put(char *p, const char *s, size_t n) noexcept:
    memcpy(p, s, n)
    return p + n


cdef inline char *put_key(char *p, const char *prefix, uint64_t idx) noexcept:
    """"key:" + 12 zero-padded digits, the key format of redis-benchmark -r."""
    cdef int i
    memcpy(p, prefix, 4)
    for i in range(15, 3, -1):
        p[i] = <char>(48 + idx % 10)
        idx //= 10
    return p + KEY_LEN


@cython.final
cdef class Generator:
    """Chooses each request's operation, key and value and encodes it (RESP or memcached)."""
    cdef fd_rng rng
    cdef fd_zipf zipf
    cdef readonly int protocol, nops, dist, wid, nworkers, scan_max
    cdef int kinds[MAX_OPS]
    cdef uint64_t thresholds[MAX_OPS]
    cdef readonly uint64_t keys, vmin, vmax, seq, inserted
    cdef bytes pool
    cdef const char *pool_p
    cdef uint64_t pool_len

    def __init__(self, *, int protocol, kinds, weights, uint64_t keys, int dist, double theta,
                 uint64_t vmin, uint64_t vmax, int scan_max, int wid, int nworkers, uint64_t seed):
        cdef int i
        cdef double acc = 0.0, total = sum(weights)
        if not 0 < len(kinds) <= MAX_OPS or len(kinds) != len(weights):
            raise ValueError("between 1 and 16 operations, one weight each")
        if keys < 1 or keys >= 10 ** 12:
            raise ValueError("the key space must hold 1 .. 10^12 - 1 keys")
        self.protocol = protocol
        self.nops = len(kinds)
        for i in range(self.nops):
            acc += weights[i] / total
            self.kinds[i] = kinds[i]
            self.thresholds[i] = <uint64_t>(acc * 18446744073709549568.0)
        self.thresholds[self.nops - 1] = 0xFFFFFFFFFFFFFFFF
        self.keys = keys
        self.dist = dist
        if dist == D_ZIPFIAN or dist == D_LATEST:
            fd_zipf_init(&self.zipf, keys, theta)
        self.vmin = vmin
        self.vmax = vmax
        self.scan_max = max(scan_max, 1)
        self.wid = wid
        self.nworkers = nworkers
        fd_rng_seed(&self.rng, seed * 1000003 + wid)
        # values are slices of one random printable pool: no per-request generation cost
        self.pool_len = vmax + (1 << 16)
        self.pool = np.random.default_rng(seed + wid).integers(
            97, 123, self.pool_len, dtype=np.uint8).tobytes()
        self.pool_p = PyBytes_AS_STRING(self.pool)

    cdef inline uint64_t next_key(self) noexcept:
        cdef uint64_t newest, r
        if self.dist == D_UNIFORM:
            return fd_rng_below(&self.rng, self.keys)
        if self.dist == D_ZIPFIAN:
            return fd_fnv64(fd_zipf_next(&self.zipf, &self.rng)) % self.keys
        if self.dist == D_LATEST:
            # recently inserted keys are the hot ones (YCSB's SkewedLatest)
            if self.inserted:
                newest = self.keys + (self.inserted - 1) * self.nworkers + self.wid
            else:
                newest = self.keys - 1
            r = fd_zipf_next(&self.zipf, &self.rng)
            return newest - r if r <= newest else 0
        r = (self.wid + self.seq * self.nworkers) % self.keys
        self.seq += 1
        return r

    cdef inline uint64_t insert_key(self) noexcept:
        cdef uint64_t k = self.keys + self.inserted * self.nworkers + self.wid
        self.inserted += 1
        return k

    def op_kind(self, int op):
        return self.kinds[op]

    cdef inline int choose_op(self) noexcept:
        cdef uint64_t u = fd_rng_next(&self.rng)
        cdef int i = 0
        while u > self.thresholds[i]:
            i += 1
        return i

    cdef int emit(self, OutBuf *out, int op, uint64_t *key) except -1:
        """Encodes the first request of a new operation `op`; stores its key."""
        cdef int kind = self.kinds[op]
        cdef uint64_t k
        if kind == K_INSERT:
            k = self.insert_key()
        else:
            k = self.next_key()
        key[0] = k
        if kind == K_GET or kind == K_RMW:
            return self.encode(out, E_GET, k, NULL, 0)
        if kind == K_SET or kind == K_INSERT:
            return self.encode(out, E_SET, k, NULL, 0)
        if kind == K_DEL:
            return self.encode(out, E_DEL, k, NULL, 0)
        if kind == K_INCR:
            return self.encode(out, E_INCR, k, NULL, 0)
        if kind == K_SCAN:
            return self.encode(out, E_MGET, k, NULL, 0)
        if kind == K_DYN_GET or kind == K_DYN_RMW:
            return self.encode(out, E_DYN_GET, k, NULL, 0)
        return self.encode(out, E_DYN_PUT, k, "", 0)

    cdef int emit_write(self, OutBuf *out, int op, uint64_t key, const char *ctx,
                        int64_t ctxlen) except -1:
        """Encodes the write half of a read-modify-write."""
        if self.kinds[op] == K_DYN_RMW:
            return self.encode(out, E_DYN_PUT, key, ctx, ctxlen)
        return self.encode(out, E_SET, key, NULL, 0)

    def encode_one(self, int op):
        """The bytes of one new request of `op` (for tests and for checking the encoding)."""
        cdef OutBuf out
        cdef uint64_t key
        out.data = NULL
        out.length = out.cap = 0
        try:
            self.emit(&out, op, &key)
            return PyBytes_FromStringAndSize(out.data, out.length), key
        finally:
            free(out.data)

    def encode_next(self):
        """Chooses the next operation as a worker does; returns (op index, request, key)."""
        op = self.choose_op()
        data, key = self.encode_one(op)
        return op, data, key

    def encode_write(self, int op, uint64_t key, bytes ctx=b""):
        cdef OutBuf out
        out.data = NULL
        out.length = out.cap = 0
        try:
            self.emit_write(&out, op, key, PyBytes_AS_STRING(ctx), PyBytes_GET_SIZE(ctx))
            return PyBytes_FromStringAndSize(out.data, out.length)
        finally:
            free(out.data)

    cdef int encode(self, OutBuf *out, int enc, uint64_t k, const char *ctx,
                    int64_t ctxlen) except -1:
        cdef uint64_t vlen = self.vmin
        cdef uint64_t n = 0, i, voff
        cdef char *p
        cdef const char *prefix = "ctr:" if enc == E_INCR else "key:"
        if enc == E_SET or enc == E_DYN_PUT:
            if self.vmax > self.vmin:
                vlen = self.vmin + fd_rng_below(&self.rng, self.vmax - self.vmin + 1)
        if enc == E_MGET:
            n = 1 + fd_rng_below(&self.rng, self.scan_max)
        outbuf_reserve(out, 128 + vlen + ctxlen + n * (KEY_LEN + 8))
        p = out.data + out.length
        if self.protocol == PR_RESP:
            if enc == E_GET:
                p = put(p, "*2\r\n$3\r\nGET\r\n$16\r\n", 18)
            elif enc == E_SET:
                p = put(p, "*3\r\n$3\r\nSET\r\n$16\r\n", 18)
            elif enc == E_DEL:
                p = put(p, "*2\r\n$3\r\nDEL\r\n$16\r\n", 18)
            elif enc == E_INCR:
                p = put(p, "*2\r\n$4\r\nINCR\r\n$16\r\n", 19)
            elif enc == E_DYN_GET:
                p = put(p, "*2\r\n$7\r\nDYN.GET\r\n$16\r\n", 22)
            elif enc == E_DYN_PUT:
                p = put(p, "*4\r\n$7\r\nDYN.PUT\r\n$16\r\n", 22)
            else:
                p[0] = b'*'
                p = put_uint(p + 1, n + 1)
                p = put(p, "\r\n$4\r\nMGET\r\n", 12)
                for i in range(n):
                    p = put(p, "$16\r\n", 5)
                    p = put_key(p, "key:", (k + i) % self.keys)
                    p = put(p, "\r\n", 2)
                out.length = p - out.data
                return 0
            p = put_key(p, prefix, k)
            p = put(p, "\r\n", 2)
            if enc == E_DYN_PUT:
                p[0] = b'$'
                p = put_uint(p + 1, ctxlen)
                p = put(p, "\r\n", 2)
                p = put(p, ctx, ctxlen)
                p = put(p, "\r\n", 2)
            if enc == E_SET or enc == E_DYN_PUT:
                p[0] = b'$'
                p = put_uint(p + 1, vlen)
                p = put(p, "\r\n", 2)
                voff = fd_rng_below(&self.rng, self.pool_len - vlen + 1)
                p = put(p, self.pool_p + voff, vlen)
                p = put(p, "\r\n", 2)
        else:
            if enc == E_GET:
                p = put(p, "get ", 4)
            elif enc == E_SET:
                p = put(p, "set ", 4)
            elif enc == E_DEL:
                p = put(p, "delete ", 7)
            elif enc == E_INCR:
                p = put(p, "incr ", 5)
            elif enc == E_MGET:
                p = put(p, "get", 3)
                for i in range(n):
                    p = put(p, " ", 1)
                    p = put_key(p, "key:", (k + i) % self.keys)
                p = put(p, "\r\n", 2)
                out.length = p - out.data
                return 0
            else:
                raise ValueError("DYN.* operations need a RESP target")
            p = put_key(p, prefix, k)
            if enc == E_SET:
                p = put(p, " 0 0 ", 5)
                p = put_uint(p, vlen)
                p = put(p, "\r\n", 2)
                voff = fd_rng_below(&self.rng, self.pool_len - vlen + 1)
                p = put(p, self.pool_p + voff, vlen)
            elif enc == E_INCR:
                p = put(p, " 1", 2)
            p = put(p, "\r\n", 2)
        out.length = p - out.data
        return 0


# ---------------------------------------------------------------------------------------------
# Results

@cython.final
cdef class Stats:
    """Per-operation counters and latency histograms of the current reporting interval."""
    cdef readonly int nops
    cdef readonly object hist, service, ok, errors, timeouts, nils, max_ns, max_service
    cdef int64_t[:, ::1] h, hs
    cdef int64_t[::1] c_ok, c_err, c_nil
    cdef uint64_t[::1] c_max, c_smax
    cdef readonly list error_samples
    cdef readonly bint track_service

    def __init__(self, int nops, bint track_service):
        self.nops = nops
        self.track_service = track_service
        self.hist = np.zeros((nops, FD_HIST_BUCKETS), dtype=np.int64)
        self.service = np.zeros((nops, FD_HIST_BUCKETS), dtype=np.int64)
        self.ok = np.zeros(nops, dtype=np.int64)
        self.errors = np.zeros(nops, dtype=np.int64)
        self.timeouts = np.zeros(nops, dtype=np.int64)
        self.nils = np.zeros(nops, dtype=np.int64)
        self.max_ns = np.zeros(nops, dtype=np.uint64)
        self.max_service = np.zeros(nops, dtype=np.uint64)
        self.h = self.hist
        self.hs = self.service
        self.c_ok = self.ok
        self.c_err = self.errors
        self.c_nil = self.nils
        self.c_max = self.max_ns
        self.c_smax = self.max_service
        self.error_samples = [None] * nops

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef inline void record(self, int op, uint64_t latency, uint64_t service) noexcept:
        self.h[op, fd_hist_index(latency)] += 1
        self.c_ok[op] += 1
        if latency > self.c_max[op]:
            self.c_max[op] = latency
        if self.track_service:
            self.hs[op, fd_hist_index(service)] += 1
            if service > self.c_smax[op]:
                self.c_smax[op] = service

    cdef void error(self, int op, const char *p, const char *end) noexcept:
        self.c_err[op] += 1
        if self.error_samples[op] is None:
            sample = PyBytes_FromStringAndSize(p, min(end - p, 200))
            if sample[:1] == b"!":      # RESP3 blob error: the text follows its length line
                sample = sample.partition(b"\r\n")[2]
            sample = sample.strip().lstrip(b"-")
            self.error_samples[op] = sample.decode("utf-8", "replace")

    def fail(self, int op, int count, str reason, bint timeout=False):
        """Counts requests that got no reply (connection lost, timed out)."""
        if timeout:
            self.timeouts[op] += count
        else:
            self.errors[op] += count
        if self.error_samples[op] is None:
            self.error_samples[op] = reason

    def take(self):
        """This interval's numbers, then a fresh interval."""
        snap = {
            "hist": self.hist.copy(), "ok": self.ok.copy(), "errors": self.errors.copy(),
            "timeouts": self.timeouts.copy(), "nils": self.nils.copy(),
            "max_ns": self.max_ns.copy(), "error_samples": list(self.error_samples),
        }
        if self.track_service:
            snap["service"] = self.service.copy()
            snap["max_service_ns"] = self.max_service.copy()
        for arr in (self.hist, self.service, self.ok, self.errors, self.timeouts, self.nils,
                    self.max_ns, self.max_service):
            arr[...] = 0
        self.error_samples[:] = [None] * self.nops
        return snap


# ---------------------------------------------------------------------------------------------
# Connections and the worker

cdef struct Rec:
    uint64_t intended    # when the operation should have started (open loop) or started
    uint64_t sent        # when its first request was actually written
    uint64_t key
    uint8_t op
    uint8_t phase        # 1 for the write half of a read-modify-write


@cython.final
cdef class Worker:
    """The state one load-generating process shares between its connections."""
    cdef readonly Generator gen
    cdef readonly Stats stats
    cdef readonly int pipeline
    cdef readonly bint open_loop
    cdef public bint stopping
    cdef public bint started
    cdef readonly int64_t budget
    cdef readonly list conns
    cdef bytes setup
    cdef int setup_count
    cdef Arrivals arrivals
    cdef uint64_t *backlog
    cdef Py_ssize_t bl_head, bl_count, bl_cap
    cdef readonly long long dropped
    cdef Py_ssize_t rr
    cdef public object on_ready, on_lost, on_done, on_fatal
    cdef readonly object fatal
    cdef int timerfd

    def __init__(self, Generator gen, *, int pipeline, int64_t budget=-1, bytes setup=b"",
                 int setup_count=0, double rate=0.0, int arrival=0):
        self.gen = gen
        self.pipeline = max(pipeline, 1)
        self.budget = budget
        self.setup = setup
        self.setup_count = setup_count
        self.open_loop = rate > 0
        self.timerfd = -1
        self.stats = Stats(gen.nops, self.open_loop)
        self.conns = []
        if self.open_loop:
            arrivals_init(&self.arrivals, rate, arrival, 0)
            self.bl_cap = 1024
            self.backlog = <uint64_t *>malloc(self.bl_cap * sizeof(uint64_t))
            if self.backlog == NULL:
                raise MemoryError()

    def __dealloc__(self):
        free(self.backlog)
        if self.timerfd >= 0:
            close(self.timerfd)

    def connection(self):
        """A protocol factory for loop.create_connection."""
        conn = Connection(self)
        self.conns.append(conn)
        return conn

    def forget(self, Connection conn):
        if conn in self.conns:
            self.conns.remove(conn)

    def start(self, uint64_t start_ns):
        """Begins sending: closed loop fills every pipeline, open loop starts the schedule."""
        cdef Connection c
        self.started = True
        if self.open_loop:
            self.arrivals.next_ns = <double>start_ns
            self.pump()
        else:
            for c in list(self.conns):
                c.refill(fd_now_ns())
                c.flush()
        self.check_done()

    def next_due(self):
        """Seconds until the next intended send (open loop)."""
        cdef double dt = (self.arrivals.next_ns - <double>fd_now_ns()) / 1e9
        return dt if dt > 0 else 0.0

    def timer_fd(self):
        """A timerfd for loop.add_reader: the event loop's own timers only have millisecond
        resolution, this one wakes the loop at the intended send time to the microsecond."""
        if self.timerfd < 0:
            self.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
            if self.timerfd < 0:
                raise OSError("timerfd_create failed")
        return self.timerfd

    def arm_timer(self):
        """Sets the timer to the next intended send (or TIMER_MIN_GAP_NS from now)."""
        cdef itimerspec spec
        cdef uint64_t at, now
        if self.timerfd < 0 or self.stopping or self.budget == 0:
            return
        now = fd_now_ns()
        at = max(<uint64_t>self.arrivals.next_ns, now + TIMER_MIN_GAP_NS)
        if self.bl_count:
            # behind schedule, every connection is busy: their replies dispatch the backlog,
            # the timer is only a safety net
            at = max(at, now + 1000000)
        spec.it_interval.tv_sec = spec.it_interval.tv_nsec = 0
        spec.it_value.tv_sec = at // 1000000000
        spec.it_value.tv_nsec = at % 1000000000
        timerfd_settime(self.timerfd, TFD_TIMER_ABSTIME, &spec, NULL)

    def on_timer(self):
        """loop.add_reader callback: sends what is due, then re-arms."""
        cdef uint64_t expirations
        read(self.timerfd, &expirations, 8)
        self.pump()
        self.check_done()
        self.arm_timer()

    def close_timer(self):
        if self.timerfd >= 0:
            close(self.timerfd)
            self.timerfd = -1

    @property
    def backlog_size(self):
        return self.bl_count

    cdef int pump(self) except -1:
        """Open loop: queues every send that is now due, then hands them to free connections."""
        cdef uint64_t now = fd_now_ns()
        cdef Connection c
        cdef Py_ssize_t i, n
        cdef uint64_t *grown
        while (not self.stopping and self.budget != 0
               and <uint64_t>self.arrivals.next_ns <= now):
            if self.bl_count >= BACKLOG_LIMIT:
                # hopelessly behind: count the arrival as dropped rather than grow forever
                arrivals_pop(&self.arrivals, &self.gen.rng)
                self.dropped += 1
            else:
                if self.bl_count == self.bl_cap:
                    grown = <uint64_t *>malloc(self.bl_cap * 2 * sizeof(uint64_t))
                    if grown == NULL:
                        raise MemoryError()
                    for i in range(self.bl_count):
                        grown[i] = self.backlog[(self.bl_head + i) % self.bl_cap]
                    free(self.backlog)
                    self.backlog = grown
                    self.bl_head = 0
                    self.bl_cap *= 2
                self.backlog[(self.bl_head + self.bl_count) % self.bl_cap] = arrivals_pop(
                    &self.arrivals, &self.gen.rng)
                self.bl_count += 1
            if self.budget > 0:
                self.budget -= 1
        n = len(self.conns)
        for i in range(n):
            if self.bl_count == 0:
                break
            c = self.conns[(self.rr + i) % n]
            if c.ready and not c.closed:
                c.refill(now)
                c.flush()
        if n:
            self.rr = (self.rr + 1) % n
        return 0

    cdef inline bint take_due(self, uint64_t *intended) noexcept:
        if self.bl_count == 0:
            return False
        intended[0] = self.backlog[self.bl_head]
        self.bl_head = (self.bl_head + 1) % self.bl_cap
        self.bl_count -= 1
        return True

    def check_done(self):
        """Calls on_done once nothing is left to send and nothing is in flight."""
        cdef Connection c
        if not self.started or not (self.stopping or self.budget == 0):
            return
        if self.open_loop and self.bl_count and not self.stopping:
            return
        for c in self.conns:
            if c.outstanding and not c.closed:
                return
        if self.on_done is not None:
            cb, self.on_done = self.on_done, None
            cb()

    def expire(self, double timeout):
        """Connections whose oldest request is older than timeout: their requests count as
        timeouts and the connections are aborted (a pipelined reply cannot be skipped)."""
        cdef uint64_t now = fd_now_ns()
        cdef uint64_t limit = <uint64_t>(timeout * 1e9)
        cdef Connection c
        cdef int expired = 0
        for c in list(self.conns):
            if c.outstanding and not c.closed and now - c.ring[c.head].sent > limit:
                c.abandon(f"no reply within {timeout:g} s", True)
                expired += 1
        return expired

    def abandon_all(self, str reason):
        """At the end of a run: whatever is still in flight counts as timed out."""
        cdef Connection c
        for c in list(self.conns):
            if c.outstanding and not c.closed:
                c.abandon(reason, True)
        if self.open_loop and self.bl_count:
            self.dropped += self.bl_count
            self.bl_count = 0

    def close(self):
        cdef Connection c
        for c in list(self.conns):
            c.closed = True
            if c.transport is not None:
                c.transport.abort()


@cython.final
cdef class Connection:
    """One TCP connection: an asyncio protocol whose callbacks do all their work in C."""
    cdef Worker w
    cdef readonly object transport
    cdef object write          # transport.write, looked up once
    cdef Rec *ring
    cdef Py_ssize_t mask, head
    cdef readonly Py_ssize_t outstanding
    cdef OutBuf out
    cdef OutBuf inbuf
    cdef int scan_resp
    cdef int setup_left
    cdef readonly bint ready, closed, paused

    def __cinit__(self, Worker w):
        cdef Py_ssize_t cap = 8
        while cap < 2 * (w.pipeline + 4):
            cap *= 2
        self.w = w
        self.ring = <Rec *>malloc(cap * sizeof(Rec))
        if self.ring == NULL:
            raise MemoryError()
        self.mask = cap - 1
        self.scan_resp = w.gen.protocol == PR_RESP

    def __dealloc__(self):
        free(self.ring)
        free(self.out.data)
        free(self.inbuf.data)

    cdef inline Rec *push(self) noexcept:
        cdef Rec *r = &self.ring[(self.head + self.outstanding) & self.mask]
        self.outstanding += 1
        return r

    def connection_made(self, transport):
        cdef Rec *r
        cdef int i
        self.transport = transport
        self.write = transport.write
        if self.w.setup_count:
            # AUTH / HELLO before any load: their replies are checked, not timed
            for i in range(self.w.setup_count):
                r = self.push()
                r.op = SETUP_OP
                r.phase = 0
            self.setup_left = self.w.setup_count
            transport.write(self.w.setup)
        else:
            self.become_ready()

    cdef void become_ready(self):
        self.ready = True
        if self.w.on_ready is not None:
            self.w.on_ready(self)
        if self.w.started:
            self.refill(fd_now_ns())
            self.flush()

    def data_received(self, bytes data):
        cdef const char *p
        cdef const char *end
        cdef const char *nxt
        cdef int kind = 0, bad = 0
        cdef uint64_t now = fd_now_ns()
        cdef Rec rec
        cdef bint buffered = self.inbuf.length > 0
        if self.closed:
            return
        if buffered:
            outbuf_reserve(&self.inbuf, PyBytes_GET_SIZE(data))
            memcpy(self.inbuf.data + self.inbuf.length, PyBytes_AS_STRING(data),
                   PyBytes_GET_SIZE(data))
            self.inbuf.length += PyBytes_GET_SIZE(data)
            p = self.inbuf.data
            end = p + self.inbuf.length
        else:
            p = PyBytes_AS_STRING(data)
            end = p + PyBytes_GET_SIZE(data)
        while p < end:
            if self.scan_resp:
                nxt = fd_resp_skip(p, end, 0, &kind, &bad)
            else:
                nxt = fd_mc_skip(p, end, &kind, &bad)
            if nxt == NULL:
                break
            if kind == FD_REPLY_PUSH:
                p = nxt
                continue
            if self.outstanding == 0:
                bad = 1
                break
            rec = self.ring[self.head]
            self.head = (self.head + 1) & self.mask
            self.outstanding -= 1
            if rec.op == SETUP_OP:
                if kind == FD_REPLY_ERROR:
                    self.setup_failed(p, nxt)
                    return
                self.setup_left -= 1
                if self.setup_left == 0:
                    self.become_ready()
            else:
                self.complete(&rec, kind, p, nxt, now)
            p = nxt
        if bad:
            self.abandon(f"invalid reply from the server near "
                         f"{PyBytes_FromStringAndSize(p, min(end - p, 40))!r}", False)
            return
        # keep an incomplete reply for the next read
        if buffered:
            if p < end:
                memmove(self.inbuf.data, p, end - p)
            self.inbuf.length = end - p
        elif p < end:
            outbuf_reserve(&self.inbuf, end - p)
            memcpy(self.inbuf.data, p, end - p)
            self.inbuf.length = end - p
        if self.ready:
            if self.w.open_loop:
                self.refill(now)
                self.w.pump()
            else:
                self.refill(now)
            self.flush()
            if self.w.stopping or self.w.budget == 0:
                self.w.check_done()

    cdef void setup_failed(self, const char *p, const char *end):
        message = PyBytes_FromStringAndSize(p, min(end - p, 300)).strip().lstrip(b"-")
        self.w.fatal = message.decode("utf-8", "replace")
        self.closed = True
        self.transport.abort()
        if self.w.on_fatal is not None:
            self.w.on_fatal(self.w.fatal)

    cdef int complete(self, Rec *rec, int kind, const char *p, const char *end,
                      uint64_t now) except -1:
        cdef const char *ctx = NULL
        cdef int64_t ctxlen = 0
        cdef Rec *r
        cdef int k = self.w.gen.kinds[rec.op]
        if kind == FD_REPLY_ERROR:
            self.w.stats.error(rec.op, p, end)
            return 0
        if rec.phase == 0 and (k == K_RMW or k == K_DYN_RMW):
            if k == K_DYN_RMW and not fd_resp_first_string(p, end, &ctx, &ctxlen):
                self.w.stats.fail(rec.op, 1, "DYN.GET reply is not [context, values]: "
                                  + PyBytes_FromStringAndSize(p, min(end - p, 60)).decode(
                                      "utf-8", "replace"))
                return 0
            # the write half follows the read's reply; the operation's clock keeps running
            self.w.gen.emit_write(&self.out, rec.op, rec.key, ctx, ctxlen)
            r = self.push()
            r[0] = rec[0]
            r.phase = 1
            return 0
        self.w.stats.record(rec.op, now - rec.intended, now - rec.sent)
        if kind == FD_REPLY_NIL:
            self.w.stats.c_nil[rec.op] += 1
        return 0

    cdef int refill(self, uint64_t now) except -1:
        """Fills free pipeline slots: new operations (closed loop) or due ones (open loop)."""
        cdef Worker w = self.w
        cdef Rec *r
        cdef uint64_t intended
        if self.paused or self.closed or not self.ready:
            return 0
        if w.open_loop:
            if w.stopping:
                return 0
            while self.outstanding < w.pipeline and w.take_due(&intended):
                r = self.push()
                r.op = w.gen.choose_op()
                r.phase = 0
                w.gen.emit(&self.out, r.op, &r.key)
                r.intended = intended
                r.sent = now
            return 0
        while self.outstanding < w.pipeline and not w.stopping and w.budget != 0:
            r = self.push()
            r.op = w.gen.choose_op()
            r.phase = 0
            w.gen.emit(&self.out, r.op, &r.key)
            r.intended = r.sent = now
            if w.budget > 0:
                w.budget -= 1
        return 0

    cdef void flush(self):
        if self.out.length and not self.closed:
            self.write(PyBytes_FromStringAndSize(self.out.data, self.out.length))
        self.out.length = 0

    cdef void abandon(self, str reason, bint timeout):
        """Counts every in-flight operation as failed and drops the connection."""
        cdef Rec *r
        while self.outstanding:
            r = &self.ring[self.head]
            self.head = (self.head + 1) & self.mask
            self.outstanding -= 1
            if r.op != SETUP_OP:
                self.w.stats.fail(r.op, 1, reason, timeout)
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
            if not self.ready and self.w.on_fatal is not None:
                self.w.on_fatal(reason)   # lost before its setup finished: the target refuses us
            elif self.w.on_lost is not None:
                self.w.on_lost(self, reason)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if not self.closed:
            self.abandon(f"connection lost ({exc or 'closed by the server'})", False)
        self.w.check_done()

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if self.ready and not self.closed:
            self.refill(fd_now_ns())
            if self.w.open_loop:
                self.w.pump()
            self.flush()
