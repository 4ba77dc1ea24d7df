"""Phi accrual failure detection (Hayashibara et al. 2004), fed by gossip heartbeats.

For each member the detector keeps the intervals between the arrivals of its newer heartbeats
(a sliding window) and answers phi = -log10(P(the next heartbeat is still to come after this
long)), with the intervals taken as normally distributed, as Akka does. A member is suspected
when phi reaches the threshold (8, Cassandra's default: a wrong suspicion about once in 10^8
checks if the model holds).

Why normal and not Cassandra's exponential: with gossip every second, the exponential model
reaches phi 8 only after ~18 s of silence, so a dead node would be used for that long. Heartbeat
intervals here are ~1 s with a spread of a few hundred ms; with the spread floored at
`min_std_s` (250 ms) a member goes suspect ~2.5–3.5 s after its last heartbeat, and stays
robust to one or two lost rounds (bench/bench_gossip.py counts false suspicions under loss).

Suspicion is this node's opinion only. It never changes membership, and only a direct answer
from the member clears it (`alive`), so a member cut off from this node but heard of through
others stays suspected here.
"""
from __future__ import annotations

import math
from collections import deque

__all__ = ["PhiAccrual"]


class _History:
    __slots__ = ("intervals", "total", "squares", "last")

    def __init__(self, now: float, first_interval: float, window: int):
        self.intervals = deque(maxlen=window)
        self.total = 0.0
        self.squares = 0.0
        self.last = now
        # a first estimate, as if one heartbeat had come before: mean first_interval, spread
        # a quarter of it
        for dt in (first_interval * 0.75, first_interval * 1.25):
            self.add(dt)

    def add(self, dt: float) -> None:
        if len(self.intervals) == self.intervals.maxlen:
            old = self.intervals[0]
            self.total -= old
            self.squares -= old * old
        self.intervals.append(dt)
        self.total += dt
        self.squares += dt * dt


class PhiAccrual:
    def __init__(self, threshold: float = 8.0, window: int = 100, min_std_s: float = 0.25,
                 first_interval_s: float = 1.0):
        self.threshold = threshold
        self.window = window
        self.min_std_s = min_std_s
        self.first_interval_s = first_interval_s
        self._members: dict[str, _History] = {}

    def heartbeat(self, name: str, now: float) -> None:
        """A newer heartbeat of `name` arrived at `now` (seconds, monotonic)."""
        h = self._members.get(name)
        if h is None:
            self._members[name] = _History(now, self.first_interval_s, self.window)
            return
        h.add(now - h.last)
        h.last = now

    def alive(self, name: str, now: float) -> None:
        """`name` answered this node directly: silence is measured from now."""
        h = self._members.get(name)
        if h is None:
            self._members[name] = _History(now, self.first_interval_s, self.window)
        else:
            h.last = max(h.last, now)

    def phi(self, name: str, now: float) -> float:
        h = self._members.get(name)
        if h is None:
            return 0.0
        n = len(h.intervals)
        mean = h.total / n
        variance = max(h.squares / n - mean * mean, 0.0)
        std = max(math.sqrt(variance), self.min_std_s)
        y = max((now - h.last - mean) / std, -10.0)     # phi is ~0 well before that
        # logistic approximation of the normal tail (Bowling et al. 2009), as Akka's
        e = math.exp(-y * (1.5976 + 0.070566 * y * y))
        if y > 0:
            return -math.log10(e / (1.0 + e)) if e > 1e-300 else 300.0
        return -math.log10(1.0 - 1.0 / (1.0 + e))

    def silence(self, name: str, now: float) -> float:
        """Seconds since `name` was last heard of (0 for a member never heard of)."""
        h = self._members.get(name)
        return 0.0 if h is None else now - h.last

    def suspects(self, name: str, now: float) -> bool:
        return self.phi(name, now) >= self.threshold

    def forget(self, name: str) -> None:
        self._members.pop(name, None)
