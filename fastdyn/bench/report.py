"""Results out: the final table, summary.json, per-interval CSV, histogram CSV and PNG plots."""
import csv
import json
import math
import os

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))
INTERVAL_COLUMNS = ["second", "op", "ops", "ops_per_s", "errors", "timeouts", "p50_ms", "p90_ms",
                    "p99_ms", "p99.9_ms", "max_ms", "warmup"]


def _ms(ns: float) -> float | None:
    return None if ns is None or math.isnan(ns) else round(ns / 1e6, 4)


def op_summary(r, seconds: float) -> dict:
    """The numbers summary.json gives for one operation (latencies in milliseconds)."""
    d = {"count": r.ok, "throughput": round(r.ok / seconds, 1) if seconds else 0.0,
         "errors": r.errors, "timeouts": r.timeouts, "misses": r.nils}
    for label, p in PERCENTILES:
        d[f"{label}_ms"] = _ms(r.hist.percentile(p)) if r.ok else None
    d["max_ms"] = _ms(r.hist.max_ns) if r.ok else None
    d["mean_ms"] = _ms(r.hist.mean()) if r.ok else None
    if r.error_sample:
        d["error_sample"] = r.error_sample
    return d


def summary(result) -> dict:
    """{"throughput": ops/s, "ops": {name: {"p50_ms", "p99_ms", ...}}, ...}"""
    ops = {name: op_summary(r, result.seconds) for name, r in result.ops.items()}
    out = {
        "throughput": round(result.throughput, 1),
        "ops": ops,
        "all": op_summary(result.all(), result.seconds),
        "target": result.target,
        "seconds": round(result.seconds, 3),
        "errors": sum(r.errors for r in result.ops.values()),
        "timeouts": sum(r.timeouts for r in result.ops.values()),
        "dropped": result.dropped,
        "tool_cpu_s": round(result.cpu_seconds, 3),
        "tool_cpu_us_per_op": round(result.cpu_us_per_op, 3),
        "config": result.config,
    }
    if result.open_loop:
        # latency from the actual send, i.e. what a tool without the correction would report
        out["uncorrected"] = {name: {f"{label}_ms": _ms(r.service.percentile(p)) if r.ok else None
                                     for label, p in PERCENTILES}
                              for name, r in result.ops.items()}
    return out


def table(result) -> str:
    """The final human-readable table: one row per operation, then all of them."""
    head = (f"{'op':<10}{'ops':>11}{'ops/s':>13}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}"
            f"{'p99.9 ms':>10}{'max ms':>10}{'errors':>9}{'timeouts':>9}")
    c = result.config
    loop = (f"open loop {c['rate']:g} ops/s ({c['arrival']})" if result.open_loop
            else "closed loop")
    lines = [f"target {result.target}   {c['workload']}",
             f"clients={c['clients']} pipeline={c['pipeline']} processes={c['processes']}   "
             f"{loop}   {result.seconds:.2f} s measured", head, "-" * len(head)]
    rows = list(result.ops.items())
    if len(rows) > 1:
        rows.append(("all", result.all()))
    for name, r in rows:
        s = op_summary(r, result.seconds)

        def f(v):
            return f"{v:10.3f}" if v is not None else f"{'-':>10}"
        lines.append(f"{name:<10}{s['count']:>11,}{s['throughput']:>13,.0f}{f(s['p50_ms'])}"
                     f"{f(s['p90_ms'])}{f(s['p99_ms'])}{f(s['p99.9_ms'])}{f(s['max_ms'])}"
                     f"{s['errors']:>9,}{s['timeouts']:>9,}")
    for name, r in result.ops.items():
        if r.nils:
            lines.append(f"  {name}: {r.nils / max(r.ok, 1):.1%} of replies were nil "
                         f"(missing keys; --load fills the key space first)")
    for name, r in result.ops.items():
        if r.error_sample:
            lines.append(f"  {name}: {r.errors + r.timeouts:,} failed, e.g. {r.error_sample}")
    busy = result.cpu_seconds / (c["processes"] * result.seconds) if result.seconds else 0.0
    lines.append(f"  load generator CPU: {result.cpu_seconds:.2f} s in {c['processes']} "
                 f"process(es) ({busy:.0%} busy), {result.cpu_us_per_op:.2f} µs per operation")
    if busy > 0.9:
        lines.append("  warning: the load generator was CPU-bound; the target may be faster "
                     "than measured (try more --processes or another machine)")
    if result.dropped:
        lines.append(f"  {result.dropped:,} scheduled requests were never sent "
                     f"(the target or this machine could not keep up with --rate)")
    if result.open_loop:
        lines.append("  latencies are measured from each request's intended send time "
                     "(corrected for coordinated omission)")
    return "\n".join(lines)


def write(result, directory: str) -> list:
    """Writes summary.json, intervals.csv, histogram.csv and the PNG plots; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    path = os.path.join(directory, "summary.json")
    with open(path, "w") as f:
        json.dump(summary(result), f, indent=2)
    paths.append(path)

    path = os.path.join(directory, "intervals.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(INTERVAL_COLUMNS)
        for iv in result.intervals:
            for name, r in list(iv.ops.items()) + [("all", iv.all())]:
                row = [iv.index + 1, name, r.ok, round(r.ok / iv.seconds, 1), r.errors,
                       r.timeouts]
                row += [_ms(r.hist.percentile(p)) if r.ok else "" for _, p in PERCENTILES]
                row += [_ms(r.hist.max_ns) if r.ok else "", int(iv.warmup)]
                w.writerow(row)
    paths.append(path)

    path = os.path.join(directory, "histogram.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["op", "latency_ms", "count", "cumulative"])
        for name, r in list(result.ops.items()) + [("all", result.all())]:
            values, cumulative = r.hist.cdf()
            counts = r.hist.counts[r.hist.counts > 0]
            for v, n, c in zip(values, counts, cumulative):
                w.writerow([name, round(v / 1e6, 6), int(n), round(float(c), 8)])
    paths.append(path)
    paths += plot(result, directory)
    return paths


def plot(result, directory: str) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = result.intervals
    xs = [iv.index + iv.seconds for iv in measured]
    paths = []

    fig, ax = plt.subplots(figsize=(8, 4))
    for name in list(result.ops) + (["all"] if len(result.ops) > 1 else []):
        ys = [(iv.all() if name == "all" else iv.ops[name]).ok / iv.seconds for iv in measured]
        ax.plot(xs, ys, marker=".", label=name)
    _warmup_band(ax, result)
    ax.set(xlabel="time (s)", ylabel="ops/s", title=f"Throughput — {result.target}")
    ax.legend()
    ax.grid(alpha=0.3)
    paths.append(_save(fig, directory, "throughput.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    for label, p in PERCENTILES + (("max", None),):
        ys = []
        for iv in measured:
            r = iv.all()
            v = (r.hist.max_ns if p is None else r.hist.percentile(p)) if r.ok else float("nan")
            ys.append(v / 1e6)
        ax.plot(xs, ys, marker=".", label=label)
    _warmup_band(ax, result)
    ax.set(xlabel="time (s)", ylabel="latency (ms)", yscale="log",
           title=f"Latency percentiles — {result.target}")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    paths.append(_save(fig, directory, "latency.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, r in list(result.ops.items()):
        cdf_axes(ax, r.hist, name)
        if result.open_loop:
            # what a tool that ignores the schedule would have reported
            cdf_axes(ax, r.service, f"{name} (from actual send)", linestyle="--")
    ax.set(title=f"Latency distribution — {result.target}")
    paths.append(_save(fig, directory, "cdf.png"))
    return paths


def cdf_axes(ax, hist, label, **style) -> None:
    """Plots a latency CDF with the tail stretched (x: latency, y: percentile, log-scaled)."""
    import numpy as np

    if not hist.total:
        return
    values, cumulative = hist.cdf()
    # 1 / (1 - F) spreads 90, 99, 99.9, 99.99 evenly, as HdrHistogram's plots do
    tail = 1.0 / np.maximum(1.0 - cumulative, 1e-6)
    ax.plot(tail, values / 1e6, label=label, drawstyle="steps-post", **style)
    percentile_axes(ax)
    ax.legend()


def percentile_axes(ax) -> None:
    """x: percentile on a 1 / (1 - p) scale; y: latency in ms on a log scale."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    # 1 - cumulative is floored at 1e-6, so the last bucket (the maximum) sits at 1e6
    ax.set_xticks([1, 10, 100, 1000, 10000, 1e6], ["0%", "90%", "99%", "99.9%", "99.99%", "max"])
    ax.set(xlabel="percentile", ylabel="latency (ms)")
    ax.grid(alpha=0.3, which="both")


def _warmup_band(ax, result) -> None:
    warm = result.config.get("warmup") or 0
    if warm:
        ax.axvspan(0, warm, color="grey", alpha=0.15, label="warm-up")


def _save(fig, directory, name) -> str:
    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
