"""Admission control of background work (Dynamo, SOSP 2007, section 6.5).

Background tasks (handoff, hint delivery, anti-entropy, compaction) share the node with its
clients. The controller watches the foreground latency and gives background work a *budget
factor* in [floor, 1]: AIMD, as TCP does with its window. Every `period_s` it takes the p99 of
the samples of the last `window_s`: above the bound the factor halves (at most once per
`hold_s`, so one burst is not punished again while it is still in the window), far above it
(`far` times the bound) it drops to the floor at once; at or below the bound it grows by
`increase`. Disabled, the factor is always 1.

`AdmissionController` is the pure core: fed samples and times, it decides. `Admission` is its
shell on the event loop: the latency signal and the pacing of background transfers.

The signal is the event loop's lag: a probe scheduled every PROBE_S measures how late it runs.
A client's request waits in the same queue for the same loop, and the lag includes whatever
holds the GIL (the store's merge thread) or the CPU; it costs nothing per request (about 100
callbacks a second in all).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque

KINDS = ("hints", "handoff", "compaction")   # anti-entropy yields by its answers' delay
PROBE_S = 0.010
# a kind that worked this long since its last pace was idle meanwhile, not busy
BUSY_MAX_S = 0.1
# the longest single wait of the time-slice rule, so a recovered budget is soon used
SLICE_WAIT_MAX_S = 1.0
# the CPU time of one merge step (ext/_logstore.pyx: up to 256 KiB of output), about (0.8 ms
# measured merging 200,000 keys of 100 bytes): the pause after each step that leaves the merge
# `factor` of the time is MERGE_STEP_US * (1/factor - 1)
MERGE_STEP_US = 1000
MAX_MERGE_PAUSE_US = 100_000


class AdmissionController:
    """AIMD budget of background work from foreground latency samples (sans-IO)."""

    def __init__(self, bound_ms: float = 2.0, enabled: bool = True, *, floor: float = 0.01,
                 window_s: float = 1.0, period_s: float = 0.1, hold_s: float = 0.5,
                 decrease: float = 0.5, increase: float = 0.05, far: float = 4.0):
        if bound_ms <= 0 or not 0 < floor <= 1 or not 0 < decrease < 1 or increase <= 0:
            raise ValueError("admission: bound, floor, decrease or increase out of range")
        self.bound_ms = bound_ms
        self.enabled = enabled
        self.floor = floor
        self.window_s = window_s
        self.period_s = period_s
        self.hold_s = hold_s
        self.decrease = decrease
        self.increase = increase
        self.far = far
        self.factor = 1.0
        self.p99_ms = 0.0
        self.decreases = 0
        self._samples: deque = deque()     # (time, latency ms)
        self._decided_at = None
        self._decreased_at = None

    def observe(self, latency_ms: float, now: float) -> None:
        self._samples.append((now, latency_ms))

    def update(self, now: float) -> float:
        """Decide if a period has passed since the last decision; returns the factor."""
        if self._decided_at is not None and now - self._decided_at < self.period_s:
            return self.factor
        self._decided_at = now
        samples = self._samples
        while samples and samples[0][0] < now - self.window_s:
            samples.popleft()
        if not samples:
            return self.factor
        ordered = sorted(latency for _, latency in samples)
        self.p99_ms = ordered[int(0.99 * (len(ordered) - 1))]
        if not self.enabled:
            self.factor = 1.0
        elif self.p99_ms > self.bound_ms:
            if self.p99_ms > self.far * self.bound_ms:
                self._lower(self.floor, now)
            elif self._decreased_at is None or now - self._decreased_at >= self.hold_s:
                self._lower(self.factor * self.decrease, now)
        else:
            self.factor = min(1.0, self.factor + self.increase)
        return self.factor

    def _lower(self, factor, now) -> None:
        factor = max(self.floor, factor)
        if factor < self.factor:
            self.decreases += 1
        self.factor = factor
        self._decreased_at = now


class Admission:
    """The controller on the event loop: probes the loop's lag, slows the merges of `stores`,
    and paces background transfers (`pace`, `delay`).

    A kind is paced two ways, whichever waits longer: its rate bound (0: none) times the
    factor, and time slices, as Dynamo allots them: after working `busy` seconds since it last
    went on, it waits busy * (1/factor - 1), so it runs about `factor` of the time (the bound
    alone would not slow a stream running below it)."""

    def __init__(self, controller: AdmissionController, rates: dict, stores=()):
        self.controller = controller
        self.rates = {kind: rates.get(kind, 0) for kind in KINDS}
        self.stores = list(stores)
        self.loop = None
        self._next = dict.fromkeys(KINDS, 0.0)       # when each kind's bucket lets bytes go
        self._resumed = dict.fromkeys(KINDS, 0.0)    # when each kind last went on
        self._timer = None
        self._due = 0.0
        self.stats = {kind: {"bytes": 0, "waits": 0, "wait_s": 0.0} for kind in KINDS}

    @property
    def factor(self) -> float:
        return self.controller.factor

    def set_rate(self, kind: str, bytes_per_s: int) -> None:
        self.rates[kind] = bytes_per_s

    # -- the latency signal ------------------------------------------------------------------
    def start(self, loop) -> None:
        self.loop = loop
        self._schedule()

    def _schedule(self) -> None:
        self._due = time.perf_counter() + PROBE_S
        self._timer = self.loop.call_later(PROBE_S, self._probe)

    def _probe(self) -> None:
        now = time.perf_counter()
        controller = self.controller
        controller.observe(max(0.0, now - self._due) * 1000, now)
        before = controller.factor
        if controller.update(now) != before:
            self._slow_merges()
        self._schedule()

    def _slow_merges(self) -> None:
        factor = self.controller.factor
        pause = 0 if factor >= 1 else min(MAX_MERGE_PAUSE_US,
                                          int(MERGE_STEP_US * (1 / factor - 1)))
        for store in self.stores:
            store.merge_pause_us = pause

    # -- pacing --------------------------------------------------------------------------------
    def delay(self, kind: str, nbytes: int) -> float:
        """Reserve `nbytes` of `kind`'s budget; returns how long to wait before sending them
        (for callers that are not coroutines; `pace` awaits it)."""
        rate = self.rates[kind]
        factor = self.controller.factor
        stats = self.stats[kind]
        stats["bytes"] += nbytes
        now = time.monotonic()
        wait = 0.0
        if rate:
            # one bucket per kind for the whole node: the bound is the node's
            start = max(now, self._next[kind])
            self._next[kind] = start + nbytes / (rate * factor)
            wait = start - now
        if factor < 1:
            busy = now - self._resumed[kind]
            if busy <= BUSY_MAX_S:
                wait = max(wait, min(SLICE_WAIT_MAX_S, busy * (1 / factor - 1)))
        self._resumed[kind] = now + wait
        if wait > 0:
            stats["waits"] += 1
            stats["wait_s"] += wait
        return wait

    async def pace(self, kind: str, nbytes: int) -> None:
        """Wait as the budget of `kind` asks before sending `nbytes` more."""
        wait = self.delay(kind, nbytes)
        if wait > 0:
            await asyncio.sleep(wait)

    # -- introspection -------------------------------------------------------------------------
    def info(self) -> dict:
        c = self.controller
        out = {"admission_enabled": int(c.enabled), "admission_factor": round(c.factor, 3),
               "admission_p99_ms": round(c.p99_ms, 3), "admission_bound_ms": c.bound_ms,
               "admission_decreases": c.decreases}
        for kind in KINDS:
            if kind == "compaction":    # slowed inside the stores, not paced from here
                out["admission_compaction_bytes"] = sum(s.merge_written for s in self.stores)
                out["admission_compaction_wait_ms"] = sum(
                    s.merge_paused_us for s in self.stores) // 1000
                continue
            stats = self.stats[kind]
            out[f"admission_{kind}_bytes"] = stats["bytes"]
            out[f"admission_{kind}_waits"] = stats["waits"]
            out[f"admission_{kind}_wait_ms"] = int(stats["wait_s"] * 1000)
        return out

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
