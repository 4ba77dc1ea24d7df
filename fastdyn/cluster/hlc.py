"""Hybrid logical clock: one per node, 64-bit integer timestamps in microseconds.

LWW ordering needs stamps that never repeat and never go backwards on a node, and that move
past every stamp the node has seen from others: a client that writes a key, gets the
acknowledgement and writes it again through another node must see the second write win.
Millisecond wall-clock stamps are not enough (same-millisecond collisions lost acknowledged
writes in Cassandra). The clock here is the wall clock in microseconds, pushed forward by one
microsecond whenever it would not be greater than the last stamp issued or observed: it stays
within (observed skew + call rate x 1 µs) of real time and needs no separate logical field.

Stamps are plain ints in [0, 2**63), so they fit a signed or unsigned 64-bit field.
"""
from __future__ import annotations

import time

from fastdyn.errors import ClockSkewTooLarge

__all__ = ["HybridClock", "MAX_TIMESTAMP", "wall_clock_us"]

MAX_TIMESTAMP = (1 << 63) - 1


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class HybridClock:
    """now() is strictly greater than every stamp it returned or observe()d before.

    wall: a function returning the wall clock in µs (tests inject their own).
    max_skew_us: when set, observe() refuses a stamp further than this ahead of the wall
    clock (ClockSkewTooLarge) instead of dragging the node's clock into the future.
    """

    __slots__ = ("_wall", "_last", "max_skew_us")

    def __init__(self, wall=wall_clock_us, max_skew_us: int | None = None):
        self._wall = wall
        self._last = 0
        self.max_skew_us = max_skew_us

    def now(self) -> int:
        wall = self._wall()
        last = self._last
        ts = wall if wall > last else last + 1
        if ts > MAX_TIMESTAMP:
            raise ClockSkewTooLarge(f"timestamp {ts} exceeds the 63-bit range")
        self._last = ts
        return ts

    def observe(self, ts: int) -> None:
        """Take in a stamp received from a peer or read from stored data."""
        if not 0 <= ts <= MAX_TIMESTAMP:
            raise ClockSkewTooLarge(f"timestamp {ts} is outside [0, 2**63)")
        if ts <= self._last:
            return
        if self.max_skew_us is not None:
            ahead = ts - self._wall()
            if ahead > self.max_skew_us:
                raise ClockSkewTooLarge(
                    f"timestamp {ts} is {ahead} µs ahead of the local clock "
                    f"(at most {self.max_skew_us} accepted)")
        self._last = ts

    def accept_limit(self) -> int:
        """The greatest stamp observe() takes now."""
        if self.max_skew_us is None:
            return MAX_TIMESTAMP
        return min(MAX_TIMESTAMP, self._wall() + self.max_skew_us)

    @property
    def last(self) -> int:
        """The greatest stamp issued or observed so far (0 before any)."""
        return self._last
