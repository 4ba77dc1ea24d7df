"""A 3-node cluster (N=3, R=2, W=2) against a single node, with redis-benchmark, in one run.

    python bench/bench_cluster.py [--requests 100000] [--clients 48] [--rounds 3]
                                  [--keyspace 100000] [--tests set,get,incr]

Both run `--sync interval`. The single node gets all the clients on its port; the cluster the
same total, split evenly over its three ports (one redis-benchmark per port, run at once, their
req/s summed). Keys are drawn from `--keyspace` random keys (redis-benchmark -r); 0 sends every
request to redis-benchmark's one default key: with `--tests incr`, a hot key's
read-modify-writes through three coordinators. The rounds interleave the two, and the medians
and the cluster/single ratio per pipeline depth and command are printed. Every node runs on
this machine, so the cluster's three
processes share its cores with each other and with the load generators.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_server import HOST, free_port, start, stop  # noqa: E402


def benchmark(ports, clients, requests, pipeline, value_size, tests, keyspace):
    """Run one redis-benchmark per port at once; req/s of each test summed over them."""
    each = max(1, clients // len(ports))
    keys = ["-r", str(keyspace)] if keyspace else []
    procs = [subprocess.Popen(
        ["redis-benchmark", "-h", HOST, "-p", str(p), "-c", str(each),
         "-n", str(requests // len(ports)), "-d", str(value_size), "-t", tests,
         "-P", str(pipeline), "--csv", *keys], stdout=subprocess.PIPE, text=True)
        for p in ports]
    totals = {}
    for proc in procs:
        out, _ = proc.communicate()
        for line in out.splitlines()[1:]:
            fields = [f.strip('"') for f in line.split(",")]
            totals[fields[0]] = totals.get(fields[0], 0.0) + float(fields[1])
    return totals


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=100000)
    ap.add_argument("--clients", type=int, default=48)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pipelines", default="1,16")
    ap.add_argument("--keyspace", type=int, default=100000)
    ap.add_argument("--tests", default="set,get", help="redis-benchmark tests (-t)")
    args = ap.parse_args()
    if shutil.which("redis-benchmark") is None:
        print("redis-benchmark is not installed", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="bench-cluster-")
    procs = []
    try:
        serve = [sys.executable, "-m", "fastdyn", "serve", "--host", HOST, "--sync", "interval",
                 "--log-level", "warning"]
        single = free_port()
        procs.append(start(serve + ["--port", str(single), "--data-dir",
                                    os.path.join(tmp, "single")], single, tmp))
        ports = []
        while len(ports) < 3:
            p = free_port()
            if p not in ports and p != single:
                ports.append(p)
        seeds = ",".join(f"{HOST}:{p + 10000}" for p in ports)
        for i, p in enumerate(ports):
            procs.append(start(serve + ["--port", str(p), "--data-dir",
                                        os.path.join(tmp, f"node{i}"), "--seeds", seeds],
                               p, tmp))
        time.sleep(2)   # every node asks every seed for its name
        results = {}
        pipelines = [int(p) for p in args.pipelines.split(",")]
        for pipeline in pipelines:
            for _ in range(args.rounds):
                for name, target in (("single", [single]), ("cluster", ports)):
                    for test, rps in benchmark(target, args.clients, args.requests, pipeline,
                                               args.value_size, args.tests,
                                               args.keyspace).items():
                        results.setdefault((name, pipeline, test), []).append(rps)
        print(f"redis-benchmark, {args.clients} clients in all, -n {args.requests} -d "
              f"{args.value_size} -r {args.keyspace}, median of {args.rounds} interleaved "
              f"rounds")
        print()
        print("| pipeline | test | single node req/s | 3-node cluster req/s | cluster / single |")
        print("|---|---|---|---|---|")
        for pipeline in pipelines:
            for test in args.tests.upper().split(","):
                s = statistics.median(results[("single", pipeline, test)])
                c = statistics.median(results[("cluster", pipeline, test)])
                print(f"| {pipeline} | {test} | {s:,.0f} | {c:,.0f} | {c / s:.2f}x |")
        return 0
    finally:
        stop(procs, tmp)


if __name__ == "__main__":
    sys.exit(main())
