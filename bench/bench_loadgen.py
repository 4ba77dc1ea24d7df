"""Is `fastdyn bench` fast enough not to be the bottleneck? Compared with redis-benchmark.

Both tools drive the same redis-server (persistence off) in the same run, at the same
concurrency and pipelining: -c 50, -P 1 and -P 16, SET then GET, 100-byte values, 100000
random keys. Runs alternate between the tools and repeat; the table shows each tool's median
and the ratio fastdyn bench / redis-benchmark (>= 1.0 means the tool keeps up).

    python bench/bench_loadgen.py [--rounds 3] [--seconds 4] [--processes 2,1] [--quick]
"""
import argparse
import csv
import io
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def redis_benchmark(port, test, pipeline, requests, clients=50):
    """(requests/s, p99 ms, CPU µs per request) as redis-benchmark reports and uses them."""
    cpu = _children_cpu()
    out = subprocess.run(
        ["redis-benchmark", "-h", HOST, "-p", str(port), "-c", str(clients), "-P", str(pipeline),
         "-d", "100", "-r", "100000", "-n", str(requests), "-t", test, "--csv"],
        capture_output=True, text=True, check=True).stdout
    cpu = _children_cpu() - cpu
    row = next(csv.DictReader(io.StringIO(out)))
    return float(row["rps"]), float(row["p99_latency_ms"]), cpu / requests * 1e6


def fastdyn_bench(port, test, pipeline, seconds, clients=50, processes=None):
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-P", "-m", "fastdyn", "bench",
                "--target", f"redis://{HOST}:{port}", "--mix", f"{test}=1", "--clients", str(clients), "--pipeline", str(pipeline),
                "--keys", "100000", "--key-dist", "uniform", "--value-size", "100",
                "--duration", str(seconds), "--quiet", "--out", out]
        if processes:
            argv += ["--processes", str(processes)]
        subprocess.run(argv, capture_output=True, text=True, check=True)
        with open(os.path.join(out, "summary.json")) as f:
            s = json.load(f)
    return s["throughput"], s["ops"][test]["p99_ms"], s["tool_cpu_us_per_op"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4, help="length of each fastdyn bench run")
    parser.add_argument("--processes", default=f"{os.cpu_count()},1",
                        help="fastdyn bench --processes values to try, comma-separated "
                             "(default: one per core, then 1 like redis-benchmark's one thread)")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 2
    if not shutil.which("redis-server") or not shutil.which("redis-benchmark"):
        print("redis-server and redis-benchmark are needed (apt-get install redis-server "
              "redis-tools)", file=sys.stderr)
        return 1
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", HOST,
                                   "--save", "", "--appendonly", "no", "--dir", tmp],
                                  stdout=subprocess.DEVNULL)
        try:
            wait_port(port)
            rows = []
            procs = [int(p) for p in args.processes.split(",")]
            for pipeline in (1, 16):
                # redis-benchmark is told a request count that takes about as long as our run
                requests = (100_000 if pipeline == 1 else 1_000_000) * args.seconds
                for test in ("set", "get"):
                    theirs, ours = [], {p: [] for p in procs}
                    for _ in range(args.rounds):
                        theirs.append(redis_benchmark(port, test, pipeline, requests))
                        for p in procs:
                            ours[p].append(fastdyn_bench(port, test, pipeline, args.seconds,
                                                         processes=p))
                    rb, rb99, rbcpu = (statistics.median(x) for x in zip(*theirs))
                    for p in procs:
                        fd, fd99, fdcpu = (statistics.median(x) for x in zip(*ours[p]))
                        rows.append((test.upper(), pipeline, p, rb, fd, rb99, fd99, rbcpu, fdcpu))
                        print(f"{test.upper()} -P {pipeline}: redis-benchmark {rb:,.0f}/s, "
                              f"fastdyn bench ({p} proc) {fd:,.0f}/s ({fd / rb:.2f}x)",
                              file=sys.stderr)
        finally:
            server.terminate()
            server.wait()
    print(f"\n`python bench/bench_loadgen.py --rounds {args.rounds} --seconds {args.seconds}`: "
          f"-c 50, 100-byte values, 100000 random keys, median of {args.rounds} alternating "
          f"runs against one redis-server\n")
    print("| test | pipeline | fastdyn bench processes | redis-benchmark req/s | "
          "fastdyn bench ops/s | ratio | p99 ms redis-benchmark / fastdyn bench | "
          "client CPU µs per request redis-benchmark / fastdyn bench |")
    print("|---|---|---|---|---|---|---|---|")
    for test, pipeline, p, rb, fd, rb99, fd99, rbcpu, fdcpu in rows:
        print(f"| {test} | {pipeline} | {p} | {rb:,.0f} | {fd:,.0f} | **{fd / rb:.2f}x** | "
              f"{rb99:.3f} / {fd99:.3f} | {rbcpu:.2f} / {fdcpu:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
