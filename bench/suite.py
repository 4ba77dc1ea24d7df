"""The benchmark suite: the same `fastdyn bench` workloads against fastdyn, Redis and memcached.

    python bench/suite.py [--quick] [--seconds 5] [--rounds 1]
                          [--targets fastdyn,redis,redis-aof,memcached] [--no-docs]

Every target runs on 127.0.0.1 with a free port and its own temporary directory, started and
stopped here. Each workload is run against every target back to back (so machine noise hits
all of them alike), after one load phase per target fills the key space. The results go to
bench/results/suite-<time>/ and, unless --no-docs, into docs/benchmarks.md between the
`<!-- suite:begin -->` and `<!-- suite:end -->` lines, with plots under docs/img/.

`fastdyn-cluster` is three nodes on this machine, driven through node 0.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
SECTION = "## Load generator and suite"

# (label, fastdyn bench arguments)
WORKLOADS = [
    ("A", ["--workload", "A"]),
    ("B", ["--workload", "B"]),
    ("C", ["--workload", "C"]),
    ("SET 90%", ["--mix", "set=0.9,get=0.1"]),
]
PIPELINES = (1, 16)


def free_port() -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port + 10000 <= 65535:
            with socket.socket() as s:
                try:
                    s.bind((HOST, port + 10000))  # fastdyn's peer port must be free too
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


class Target:
    """A server process this suite starts; `binary` missing means the target is skipped."""

    def __init__(self, name, label, binary, argv, scheme="redis"):
        self.name, self.label, self.binary = name, label, binary
        self.make_argv, self.scheme = argv, scheme
        self.proc = None
        self.port = None
        self.dir = None

    def available(self) -> bool:
        return shutil.which(self.binary) is not None

    def start(self, workdir: str) -> str:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix=f"{self.name}-", dir=workdir)
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(self.make_argv(self.port, self.dir), cwd=self.dir,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; "
                                   f"see {self.dir}/server.log")
            try:
                socket.create_connection((HOST, self.port), timeout=0.2).close()
                return f"{self.scheme}://{HOST}:{self.port}"
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.label} did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()


def cluster_reachable(port: int) -> int:
    """How many members the node on port reaches (INFO cluster), 0 if it cannot say yet."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as s:
            s.sendall(b"*2\r\n$4\r\nINFO\r\n$7\r\ncluster\r\n")
            data = b""
            while b"\r\n" not in data or len(data) < int(data[1:data.index(b"\r\n")]):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (OSError, ValueError):
        return 0
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("cluster_reachable:"):
            return int(line.split(":", 1)[1])
    return 0


class ClusterTarget(Target):
    """Three `fastdyn serve` nodes on this machine (N=3, R=2, W=2, sync interval); the load
    goes to node 0, which coordinates every operation, as for a client given one address."""

    NODES = 3

    def __init__(self):
        super().__init__("fastdyn-cluster", "fastdyn (3 nodes, N=3 R=2 W=2)", sys.executable,
                         None)
        self.nodes = []

    def start(self, workdir: str) -> str:
        ports = []
        while len(ports) < self.NODES:
            p = free_port()
            if p not in ports:
                ports.append(p)
        seeds = ",".join(f"{HOST}:{p + 10000}" for p in ports)
        self.dir = tempfile.mkdtemp(prefix=f"{self.name}-", dir=workdir)
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.nodes = [subprocess.Popen(
            [sys.executable, "-m", "fastdyn", "serve", "--host", HOST, "--port", str(p),
             "--data-dir", os.path.join(self.dir, f"node{i}"), "--sync", "interval",
             "--seeds", seeds], cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT)
            for i, p in enumerate(ports)]
        self.proc, self.port = self.nodes[0], ports[0]
        deadline = time.monotonic() + 30
        while not all(cluster_reachable(p) == self.NODES for p in ports):
            if any(n.poll() is not None for n in self.nodes) or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.label} did not form; see {self.dir}/server.log")
            time.sleep(0.1)
        return f"redis://{HOST}:{self.port}"

    def stop(self) -> None:
        for node in self.nodes:
            self.proc = node
            super().stop()
        self.nodes = []


TARGETS = [
    Target("fastdyn", "fastdyn (1 node, sync interval)", sys.executable,
           lambda port, d: [sys.executable, "-m", "fastdyn", "serve", "--host", HOST,
                            "--port", str(port), "--data-dir", d, "--sync", "interval"]),
    Target("redis", "Redis (no persistence)", "redis-server",
           lambda port, d: ["redis-server", "--port", str(port), "--bind", HOST, "--save", "",
                            "--appendonly", "no", "--dir", d]),
    Target("redis-aof", "Redis (AOF everysec)", "redis-server",
           lambda port, d: ["redis-server", "--port", str(port), "--bind", HOST, "--save", "",
                            "--appendonly", "yes", "--appendfsync", "everysec", "--dir", d]),
    Target("memcached", "memcached", "memcached",
           lambda port, d: ["memcached", "-l", HOST, "-p", str(port), "-U", "0"]
           + (["-u", "root"] if os.geteuid() == 0 else []), scheme="memcache"),
    ClusterTarget(),
]


def bench(url, args, out, seconds, keys, warmup, extra=()):
    argv = [sys.executable, "-P", "-m", "fastdyn", "bench", "--target", url, *args,
            "--clients", "50", "--keys", str(keys), "--value-size", "100",
            "--duration", str(seconds), "--warmup", str(warmup), "--quiet", "--out", out, *extra]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.strip()[-400:]}")
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


def machine() -> str:
    model, cores = "unknown CPU", 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    cores += 1
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{model}, {cores or os.cpu_count()} cores{mem}, Linux {platform.release()}"


def versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for argv in (["redis-server", "--version"], ["memcached", "-V"]):
        if shutil.which(argv[0]):
            out = subprocess.run(argv, capture_output=True, text=True).stdout.split()
            v = next((w.split("=")[1] for w in out if w.startswith("v=")),
                     out[1] if len(out) > 1 else "?")
            parts.append(f"{argv[0]} {v}")
    return ", ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s runs, no warm-up")
    parser.add_argument("--seconds", type=int, default=5, help="measured seconds per run (5)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every cell; the table shows each cell's median (1)")
    parser.add_argument("--keys", type=int, default=100000)
    parser.add_argument("--targets", default=",".join(t.name for t in TARGETS))
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    seconds, warmup = (2, 0) if args.quick else (args.seconds, 1)
    wanted = args.targets.split(",")
    unknown = set(wanted) - {t.name for t in TARGETS}
    if unknown:
        parser.error(f"unknown targets {', '.join(sorted(unknown))}")
    targets = []
    for t in TARGETS:
        if t.name not in wanted:
            continue
        if not t.available():
            print(f"skipping {t.label}: `{t.binary}` is not installed", file=sys.stderr)
            continue
        targets.append(t)
    if not targets:
        print("no target to run", file=sys.stderr)
        return 1
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    results_dir = os.path.join(ROOT, "bench", "results", f"suite-{stamp}")
    os.makedirs(results_dir)
    workdir = tempfile.mkdtemp(prefix="fastdyn-suite-")
    runs = {}  # (workload, pipeline, target) -> [(summary, directory), ...], one per round
    started = time.monotonic()
    try:
        urls = {}
        for t in targets:
            urls[t.name] = t.start(workdir)
            # one load phase per target so reads hit existing keys
            out = os.path.join(results_dir, t.name, "load")
            bench(urls[t.name], ["--mix", "get=1"], out, 1, args.keys, 0, ["--load"])
            print(f"started and loaded {t.label} at {urls[t.name]}", file=sys.stderr)
        # rounds go over every cell before repeating, so slow spells of a shared machine are
        # spread over all targets instead of hitting one
        for rnd in range(args.rounds):
            for label, wl_args in WORKLOADS:
                for pipeline in PIPELINES:
                    for t in targets:
                        out = os.path.join(results_dir, t.name,
                                           f"{_slug(label)}-P{pipeline}-r{rnd + 1}")
                        s = bench(urls[t.name], wl_args + ["--pipeline", str(pipeline)], out,
                                  seconds, args.keys, warmup)
                        runs.setdefault((label, pipeline, t.name), []).append((s, out))
                        print(f"{label:<8} -P {pipeline:<3} {t.label:<34} "
                              f"{s['throughput']:>12,.0f} ops/s  p99 {s['all']['p99_ms']} ms  "
                              f"errors {s['errors']}", file=sys.stderr)
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    # each cell shows its median round (by throughput), latencies and plots from that run
    median = {key: sorted(r, key=lambda sr: sr[0]["throughput"])[(len(r) - 1) // 2]
              for key, r in runs.items()}
    results = {key: s for key, (s, _) in median.items()}
    dirs = {key: d for key, (_, d) in median.items()}
    command = "python bench/suite.py" + (" --quick" if args.quick else
                                         f" --seconds {seconds} --rounds {args.rounds}")
    block = render(results, targets, seconds, warmup, args.keys, args.rounds, command, elapsed)
    print(block)
    with open(os.path.join(results_dir, "suite.md"), "w") as f:
        f.write(block + "\n")
    if not args.no_docs:
        plots(results, targets, os.path.join(ROOT, "docs", "img"), dirs)
        write_docs(block)
        print(f"updated docs/benchmarks.md and docs/img/suite_*.png", file=sys.stderr)
    print(f"raw results: {results_dir}", file=sys.stderr)
    return 0


def _slug(label: str) -> str:
    return label.lower().replace(" ", "").replace("%", "")


def render(results, targets, seconds, warmup, keys, rounds, command, elapsed) -> str:
    names = [t.name for t in targets]
    labels = {t.name: t.label for t in targets}
    lines = [
        f"Generated by `{command}` on {datetime.date.today().isoformat()} in {elapsed:.0f} s.",
        f"Machine: {machine()}; {versions()}. Every target ran on this machine with the load "
        f"generator (`fastdyn bench`, one worker process per core) — client and server share "
        f"the cores.",
        f"Each cell: the median of {rounds} round(s) (rounds interleaved over all cells), "
        f"{seconds} s measured after {warmup} s warm-up, 50 connections, "
        f"{keys:,} keys loaded first, 100-byte values, YCSB zipfian key choice (θ = 0.99). "
        f"Workloads: A = 50% GET / 50% SET, B = 95/5, C = GET only, SET 90% = 90% SET / 10% GET.",
        "",
    ]
    for pipeline in PIPELINES:
        lines.append(f"**Pipeline {pipeline}** — throughput (ops/s) and p99 latency (ms)")
        lines.append("")
        head = ["workload"] + [f"{labels[n]}" for n in names]
        ratios = [n for n in names if not n.startswith("fastdyn")] if "fastdyn" in names else []
        head += [f"fastdyn / {n}" for n in ratios]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for label, _ in WORKLOADS:
            row = [label]
            for n in names:
                s = results.get((label, pipeline, n))
                row.append(f"{s['throughput']:,.0f} (p99 {s['all']['p99_ms']:.2f})" if s else "—")
            fd = results.get((label, pipeline, "fastdyn"))
            for n in ratios:
                s = results.get((label, pipeline, n))
                row.append(f"**{fd['throughput'] / s['throughput']:.2f}x**"
                           if fd and s and s["throughput"] else "—")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    failures = [(k, s["errors"] + s["timeouts"]) for k, s in results.items()
                if s["errors"] + s["timeouts"]]
    if failures:
        lines.append("Failed requests: " + ", ".join(f"{k[2]} {k[0]} -P {k[1]}: {n}"
                                                    for k, n in failures))
    else:
        lines.append("No request failed or timed out in any run.")
    lines.append("")
    lines.append("![throughput](img/suite_throughput.png)")
    lines.append("")
    lines.append("![latency CDF, workload A](img/suite_cdf_A.png)")
    return "\n".join(lines)


def plots(results, targets, img_dir, dirs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    os.makedirs(img_dir, exist_ok=True)
    fig, axes = plt.subplots(1, len(PIPELINES), figsize=(12, 4.5))
    width = 0.8 / len(targets)
    x = np.arange(len(WORKLOADS))
    for ax, pipeline in zip(axes, PIPELINES):
        for i, t in enumerate(targets):
            ys = [results.get((label, pipeline, t.name), {}).get("throughput", 0)
                  for label, _ in WORKLOADS]
            ax.bar(x + i * width - 0.4 + width / 2, ys, width, label=t.label)
        ax.set_xticks(x, [label for label, _ in WORKLOADS])
        ax.set(title=f"pipeline {pipeline}", ylabel="ops/s")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("fastdyn bench: throughput by workload and target (same run, same machine)")
    fig.tight_layout()
    fig.savefig(os.path.join(img_dir, "suite_throughput.png"), dpi=90)
    plt.close(fig)

    from fastdyn.bench.compare import SavedRun
    from fastdyn.bench.report import percentile_axes

    fig, axes = plt.subplots(1, len(PIPELINES), figsize=(12, 4.5))
    for ax, pipeline in zip(axes, PIPELINES):
        for t in targets:
            run = SavedRun(dirs[("A", pipeline, t.name)])
            if "all" in run.cdf:
                lat, cum = map(np.asarray, run.cdf["all"])
                ax.plot(1.0 / np.maximum(1.0 - cum, 1e-6), lat, drawstyle="steps-post",
                        label=t.label)
        percentile_axes(ax)
        ax.set(title=f"workload A, pipeline {pipeline}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(img_dir, "suite_cdf_A.png"), dpi=90)
    plt.close(fig)


def write_docs(block: str, path: str = os.path.join(ROOT, "docs", "benchmarks.md")) -> None:
    """Replaces only the text between the suite markers (adding them to the section if new)."""
    with open(path) as f:
        text = f.read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = f"{head}{BEGIN}\n{block}\n{END}{tail}"
    else:
        if SECTION not in text:
            text = text.rstrip("\n") + f"\n\n{SECTION}\n"
        head, tail = text.split(SECTION, 1)
        # put the block at the end of the section, before the next "## " heading
        nxt = tail.find("\n## ")
        body, after = (tail, "") if nxt < 0 else (tail[:nxt], tail[nxt:])
        text = f"{head}{SECTION}{body.rstrip()}\n\n{BEGIN}\n{block}\n{END}\n{after}"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
