# cython: language_level=3
"""The hybrid logical clock's class (fastdyn/cluster/hlc.py): every plain write takes a stamp
and every replica write observes one, so both are C-level calls here."""
from libc.stdint cimport int64_t

from fastdyn.errors import ClockSkewTooLarge

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec *tp)
    int CLOCK_REALTIME

cdef int64_t MAX_TS = 0x7FFFFFFFFFFFFFFF


cdef inline int64_t _wall_us() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_REALTIME, &t)
    return <int64_t>t.tv_sec * 1000000 + t.tv_nsec // 1000


def wall_clock_us() -> int:
    """The wall clock in microseconds since the Unix epoch."""
    return _wall_us()


cdef class HybridClock:
    """now() is strictly greater than every stamp it returned or observe()d before.

    wall: a function returning the wall clock in µs (tests inject their own); None reads the
    system clock directly, shifted by `skew_us` (DYN.FAULT CLOCK moves a node's clock so).
    max_skew_us: when set, observe() refuses a stamp further than this ahead of the wall
    clock (ClockSkewTooLarge) instead of dragging the node's clock into the future.
    """
    cdef object _wall
    cdef int64_t _last
    cdef public object max_skew_us
    cdef public int64_t skew_us

    def __init__(self, wall=None, max_skew_us=None):
        self._wall = wall
        self._last = 0
        self.max_skew_us = max_skew_us
        self.skew_us = 0

    cdef inline int64_t _read_wall(self) except? -1:
        if self._wall is None:
            return _wall_us() + self.skew_us
        wall = self._wall()
        if not 0 <= wall <= MAX_TS:
            raise ClockSkewTooLarge(f"timestamp {wall} exceeds the 63-bit range")
        return wall

    cpdef int64_t now(self) except? -1:
        cdef int64_t wall = self._read_wall()
        if wall > self._last:
            self._last = wall
        elif self._last == MAX_TS:
            raise ClockSkewTooLarge(f"timestamp {(<object>MAX_TS) + 1} exceeds the 63-bit range")
        else:
            self._last += 1
        return self._last

    cpdef observe(self, ts):
        """Take in a stamp received from a peer or read from stored data."""
        if not 0 <= ts <= MAX_TS:
            raise ClockSkewTooLarge(f"timestamp {ts} is outside [0, 2**63)")
        cdef int64_t t = ts
        if t <= self._last:
            return
        if self.max_skew_us is not None:
            ahead = t - self._read_wall()
            if ahead > self.max_skew_us:
                raise ClockSkewTooLarge(
                    f"timestamp {t} is {ahead} µs ahead of the local clock "
                    f"(at most {self.max_skew_us} accepted)")
        self._last = t

    def accept_limit(self) -> int:
        """The greatest stamp observe() takes now."""
        if self.max_skew_us is None:
            return MAX_TS
        return min(MAX_TS, self._read_wall() + self.max_skew_us)

    @property
    def last(self) -> int:
        """The greatest stamp issued or observed so far (0 before any)."""
        return self._last
