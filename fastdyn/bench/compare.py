"""`fastdyn bench compare DIR DIR ...`: several saved runs in one table and one plot."""
import csv
import json
import os

import numpy as np

from fastdyn.bench.report import percentile_axes


class SavedRun:
    """A run read back from the directory `fastdyn bench --out` wrote."""

    def __init__(self, directory: str):
        self.directory = directory
        try:
            with open(os.path.join(directory, "summary.json")) as f:
                self.summary = json.load(f)
        except FileNotFoundError:
            raise ValueError(f"{directory}: no summary.json (not a `fastdyn bench --out` "
                             f"directory)") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{directory}/summary.json is not valid JSON: {exc}") from None
        if not isinstance(self.summary.get("ops"), dict) or "throughput" not in self.summary:
            raise ValueError(f"{directory}/summary.json lacks 'throughput' or 'ops'")
        self.label = os.path.basename(os.path.normpath(directory))
        self.throughput_series = []
        path = os.path.join(directory, "intervals.csv")
        if os.path.exists(path):
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    if row["op"] == "all":
                        self.throughput_series.append((int(row["second"]), float(row["ops_per_s"])))
        self.cdf = {}
        path = os.path.join(directory, "histogram.csv")
        if os.path.exists(path):
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    xs, ys = self.cdf.setdefault(row["op"], ([], []))
                    xs.append(float(row["latency_ms"]))
                    ys.append(float(row["cumulative"]))


def table(runs) -> str:
    """runs: (label, summary dict) pairs; ratios are throughput relative to the first."""
    base = runs[0][1]["throughput"] or float("nan")
    head = (f"{'run':<28}{'op':<10}{'ops/s':>13}{'ratio':>8}{'p50 ms':>10}{'p90 ms':>10}"
            f"{'p99 ms':>10}{'p99.9 ms':>10}{'max ms':>10}{'errors':>9}")
    lines = [head, "-" * len(head)]
    for label, s in runs:
        ops = dict(s["ops"])
        if "all" in s and len(ops) > 1:
            ops["all"] = s["all"]
        for name, o in ops.items():
            def f(key):
                v = o.get(key)
                return f"{v:10.3f}" if isinstance(v, (int, float)) else f"{'-':>10}"
            ratio = s["throughput"] / base if name == "all" or len(ops) == 1 else None
            r = f"{ratio:7.2f}x" if ratio is not None else f"{'':>8}"
            lines.append(f"{label[:27]:<28}{name:<10}{o.get('throughput', 0):>13,.0f}{r}"
                         f"{f('p50_ms')}{f('p90_ms')}{f('p99_ms')}{f('p99.9_ms')}{f('max_ms')}"
                         f"{o.get('errors', 0):>9,}")
    lines.append(f"ratio: total throughput relative to {runs[0][0]}")
    return "\n".join(lines)


def plot(runs, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        if run.throughput_series:
            xs, ys = zip(*run.throughput_series)
            left.plot(xs, ys, marker=".", label=run.label)
        if "all" in run.cdf:
            lat, cum = map(np.asarray, run.cdf["all"])
            right.plot(1.0 / np.maximum(1.0 - cum, 1e-6), lat, drawstyle="steps-post",
                       label=run.label)
    left.set(xlabel="time (s)", ylabel="ops/s", title="Throughput")
    left.grid(alpha=0.3)
    left.legend()
    percentile_axes(right)
    right.set(title="Latency (all operations)")
    right.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

