"""Hybrid logical clock: one per node, 64-bit integer timestamps in microseconds.

LWW ordering needs stamps that never repeat and never go backwards on a node, and that move
past every stamp the node has seen from others: a client that writes a key, gets the
acknowledgement and writes it again through another node must see the second write win.
Millisecond wall-clock stamps are not enough (same-millisecond collisions lost acknowledged
writes in Cassandra). The clock here is the wall clock in microseconds, pushed forward by one
microsecond whenever it would not be greater than the last stamp issued or observed: it stays
within (observed skew + call rate x 1 µs) of real time and needs no separate logical field.

Stamps are plain ints in [0, 2**63), so they fit a signed or unsigned 64-bit field.
The class is C (ext/_hlc.pyx): every plain write takes a stamp and every replica write
observes one.
"""
from fastdyn._hlc import HybridClock, wall_clock_us

__all__ = ["HybridClock", "MAX_TIMESTAMP", "wall_clock_us"]

MAX_TIMESTAMP = (1 << 63) - 1
