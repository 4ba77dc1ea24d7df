"""Runs a load test: starts the worker processes, merges their per-second results, prints progress.

Workers are forked before any event loop or thread exists in the parent. Every second each
sends its interval's histograms; the parent merges interval k once every worker has sent it,
so the progress line and the CSV rows are whole-fleet numbers.
"""
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from fastdyn import _bench
from fastdyn._client import encode_pipeline
from fastdyn.bench import worker as worker_module
from fastdyn.bench.histogram import Histogram
from fastdyn.client import Target, connect, setup_commands
from fastdyn.errors import FastdynError, ReplyError, TargetUnavailable


@dataclass
class OpResult:
    """One operation's numbers over a span of time."""
    hist: Histogram = field(default_factory=Histogram)
    service: Histogram = field(default_factory=Histogram)
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    nils: int = 0
    error_sample: str | None = None

    def merge(self, other: "OpResult") -> None:
        self.hist.merge(other.hist)
        self.service.merge(other.service)
        self.ok += other.ok
        self.errors += other.errors
        self.timeouts += other.timeouts
        self.nils += other.nils
        self.error_sample = self.error_sample or other.error_sample


def merged(results) -> OpResult:
    """One OpResult holding all of the given ones (e.g. every operation of a run)."""
    total = OpResult()
    for r in results:
        total.merge(r)
    return total


@dataclass
class Interval:
    index: int
    seconds: float                 # its length (the last one is usually partial)
    ops: dict                      # name -> OpResult
    warmup: bool = False

    def all(self) -> OpResult:
        return merged(self.ops.values())


@dataclass
class RunResult:
    target: str
    config: dict
    ops: dict                      # name -> OpResult over the measured (post-warm-up) time
    intervals: list
    seconds: float                 # measured time
    open_loop: bool
    dropped: int = 0
    cpu_seconds: float = 0.0       # CPU time the load-generating processes used

    @property
    def cpu_us_per_op(self) -> float:
        """The tool's own CPU cost per operation answered (errors included), in µs."""
        total = self.all()
        done = total.ok + total.errors
        return self.cpu_seconds / done * 1e6 if done else float("nan")

    @property
    def throughput(self) -> float:
        return sum(r.ok for r in self.ops.values()) / self.seconds if self.seconds else 0.0

    def all(self) -> OpResult:
        return merged(self.ops.values())


@dataclass
class RunSpec:
    target: Target
    workload: object               # fastdyn.bench.workload.Workload
    clients: int = 50
    pipeline: int = 1
    processes: int = 1
    duration: float | None = 10
    requests: int | None = None
    rate: float | None = None
    arrival: str = "exp"
    warmup: int = 0
    timeout: float = 5.0
    seed: int = 1
    resp3: bool = False
    progress: bool = True


def preflight(target: Target, resp3: bool = False) -> None:
    """Raises TargetUnavailable with a one-line reason if the target cannot serve the run."""
    with connect(target, timeout=3.0, resp3=resp3) as client:
        if target.protocol == "memcache":
            client.raw(b"version\r\n")
            return
        try:
            client.execute("PING")
        except ReplyError as exc:
            raise TargetUnavailable(f"{target} answered PING with: {exc}") from None


def _split(total: int, parts: int, i: int) -> int:
    return total // parts + (1 if i < total % parts else 0)


def _decode(snap: dict, names) -> dict:
    ops = {}
    for i, name in enumerate(names):
        r = OpResult(hist=Histogram.from_sparse(snap["hist"][i]), ok=int(snap["ok"][i]),
                     errors=int(snap["errors"][i]), timeouts=int(snap["timeouts"][i]),
                     nils=int(snap["nils"][i]), error_sample=snap["error_samples"][i])
        if "service" in snap:
            r.service = Histogram.from_sparse(snap["service"][i])
        ops[name] = r
    return ops


def run(spec: RunSpec, out=sys.stderr) -> RunResult:
    """Runs the load; raises FastdynError with a readable message when it cannot."""
    wl = spec.workload
    processes = max(1, min(spec.processes, spec.clients))
    setup = setup_commands(spec.target, spec.resp3)
    duration = None
    if spec.requests is None:
        duration = int(math.ceil((spec.duration or 10) + spec.warmup))
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for wid in range(processes):
        parent_end, child_end = ctx.Pipe()
        wspec = {
            "generator": wl.generator_args(spec.target.protocol, wid, processes, spec.seed),
            "pipeline": spec.pipeline,
            "budget": -1 if spec.requests is None else _split(spec.requests, processes, wid),
            "setup": encode_pipeline(setup) if setup else b"",
            "setup_count": len(setup),
            "rate": (spec.rate / processes) if spec.rate else 0.0,
            "arrival": _bench.ARRIVAL_CONST if spec.arrival == "const" else _bench.ARRIVAL_EXP,
            "host": spec.target.host, "port": spec.target.port, "label": str(spec.target),
            "connections": _split(spec.clients, processes, wid),
            "duration": duration, "timeout": spec.timeout,
        }
        proc = ctx.Process(target=worker_module.main, args=(child_end, wspec), daemon=True,
                           name=f"fastdyn-bench-{wid}")
        proc.start()
        child_end.close()
        pipes.append(parent_end)
        procs.append(proc)
    try:
        return _collect(spec, wl, pipes, procs, out)
    finally:
        for p in pipes:
            p.close()  # a worker still running sees its pipe break and stops
        deadline = time.monotonic() + 5
        for proc in procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()


def _receive(conn):
    try:
        return conn.recv()
    except (EOFError, OSError):
        return ("fatal", "a load-generating process exited unexpectedly", "")


def _collect(spec, wl, pipes, procs, out) -> RunResult:
    # 1. every worker connects and sets up its connections
    pending = set(range(len(pipes)))
    deadline = time.monotonic() + spec.timeout + 10
    while pending:
        ready = wait([pipes[i] for i in pending], timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TargetUnavailable(f"{spec.target}: workers did not connect in time")
        for conn in ready:
            i = pipes.index(conn)
            message = _receive(conn)
            if message[0] == "fatal":
                raise TargetUnavailable(message[1])
            pending.discard(i)

    # 2. a common start a little in the future, so all processes begin together
    start_ns = _bench.now_ns() + 100_000_000
    for conn in pipes:
        conn.send(("go", start_ns))

    by_index: dict[int, list] = {}
    lengths: dict[int, float] = {}
    intervals: list[Interval] = []
    dropped = 0
    cpu = 0.0
    live = set(range(len(pipes)))
    last_end = start_ns
    while live:
        ready = wait([pipes[i] for i in live], timeout=spec.timeout + 5)
        if not ready:
            raise FastdynError("the load-generating processes stopped reporting")
        for conn in ready:
            i = pipes.index(conn)
            message = _receive(conn)
            kind = message[0]
            if kind == "fatal":
                raise FastdynError(message[1])
            if kind == "done":
                dropped += message[1]
                cpu += message[2]
                live.discard(i)
                continue
            _, index, end_ns, snap = message
            by_index.setdefault(index, []).append(_decode(snap, wl.ops))
            lengths[index] = max(lengths.get(index, 0.0),
                                 (end_ns - start_ns) / 1e9 - index)
            last_end = max(last_end, end_ns)
        # an interval is complete when every worker has sent it
        for index in sorted(by_index):
            if len(by_index[index]) < len(pipes):
                break
            intervals.append(_merge_interval(index, by_index.pop(index), lengths, spec, wl))
            if spec.progress:
                _progress(intervals[-1], out)
    for index in sorted(by_index):  # the final partial interval of workers that ended early
        intervals.append(_merge_interval(index, by_index.pop(index), lengths, spec, wl))

    totals = {name: OpResult() for name in wl.ops}
    for iv in intervals:
        if not iv.warmup:
            for name, r in iv.ops.items():
                totals[name].merge(r)
    measured = (last_end - start_ns) / 1e9 - spec.warmup
    config = {
        "workload": wl.describe(), "clients": spec.clients, "pipeline": spec.pipeline,
        "processes": len(pipes), "duration": spec.duration if spec.requests is None else None,
        "requests": spec.requests, "rate": spec.rate,
        "arrival": spec.arrival if spec.rate else None, "warmup": spec.warmup,
        "keys": wl.keys, "key_dist": wl.key_dist, "value_size": [wl.value_min, wl.value_max],
    }
    return RunResult(str(spec.target), config, totals, intervals, max(measured, 1e-9),
                     bool(spec.rate), dropped, cpu)


def _merge_interval(index, parts, lengths, spec, wl) -> Interval:
    ops = {name: OpResult() for name in wl.ops}
    for part in parts:
        for name, r in part.items():
            ops[name].merge(r)
    seconds = min(1.0, max(lengths.get(index, 1.0), 1e-6))
    return Interval(index, seconds, ops, warmup=index < spec.warmup)


def _progress(iv: Interval, out) -> None:
    total = iv.all()
    p99 = total.hist.percentile(99) / 1e6 if total.ok else float("nan")
    tag = " (warm-up)" if iv.warmup else ""
    print(f"[{iv.index + 1:4d}s] {total.ok / iv.seconds:12,.0f} ops/s   p99 {p99:8.3f} ms   "
          f"errors {total.errors}   timeouts {total.timeouts}{tag}", file=out, flush=True)


def default_processes() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
