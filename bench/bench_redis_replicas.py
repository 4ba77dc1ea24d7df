"""CPU per SET of redis-server alone, of a redis-server master with two replicas, and of a
3-node fastdyn cluster, in one run.

    python bench/bench_redis_replicas.py [--requests 2000000] [--pipeline 16]

The reference for what replication costs a store written in C on this machine: Redis' own
replication is asynchronous (no acknowledgement before the client's reply, no comparison
before a write), the cheapest kind there is. The fastdyn cluster (N=3, W=2, --sync interval)
acknowledges each SET after two replicas hold it; the load goes to node 0, as it goes to the
Redis master. Each process's CPU time (user + system, from /proc) is summed over the processes
and divided by the requests; the Redis setups run `appendonly yes, appendfsync everysec`, as
in bench_server.py.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_server import HOST, cpu_seconds, free_port, start  # noqa: E402


def redis(port: int, directory: str, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", HOST, "--dir", directory, "--save", "",
         "--appendonly", "yes", "--appendfsync", "everysec",
         "--appenddirname", f"aof-{port}", *extra], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                         text=True).stdout.strip() != "PONG":
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server on {port} did not start")
        time.sleep(0.05)
    return proc


def fastdyn_cluster(directory: str, nodes: int = 3) -> list:
    """`nodes` fastdyn serve processes that know each other; node 0's client port first."""
    ports = []
    while len(ports) < nodes:
        port = free_port()
        if port not in ports:
            ports.append(port)
    seeds = ",".join(f"{HOST}:{p + 10000}" for p in ports)
    procs = [start([sys.executable, "-m", "fastdyn", "serve", "--host", HOST, "--port", str(p),
                    "--data-dir", os.path.join(directory, f"node{i}"), "--sync", "interval",
                    "--seeds", seeds, "--log-level", "warning"], p, directory)
             for i, p in enumerate(ports)]
    return ports[0], procs


def set_load(port: int, requests: int, pipeline: int) -> None:
    subprocess.run(["redis-benchmark", "-h", HOST, "-p", str(port), "-c", "48", "-n",
                    str(requests), "-d", "100", "-t", "set", "-P", str(pipeline),
                    "-r", "100000", "-q"], stdout=subprocess.DEVNULL, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2_000_000)
    ap.add_argument("--pipeline", type=int, default=16)
    args = ap.parse_args()
    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        print("redis-server and redis-benchmark are needed", file=sys.stderr)
        return 2
    print(f"redis-benchmark SET -c 48 -P {args.pipeline} -d 100 -r 100000, "
          f"{args.requests:,} requests")
    print()
    print("| setup | SET/s | CPU us per SET, summed | per process |")
    print("|---|---|---|---|")
    base = None
    for replicas in (0, 2, "fastdyn"):
        tmp = tempfile.mkdtemp(prefix="bench-redis-replicas-")
        procs = []
        try:
            if replicas == "fastdyn":
                master, procs = fastdyn_cluster(tmp)
            else:
                master = free_port()
                procs.append(redis(master, tmp))
                for _ in range(replicas):
                    procs.append(redis(free_port(), tmp, "--replicaof", HOST, str(master)))
            time.sleep(1.5)                       # first sync, or the nodes learn each other
            set_load(master, 200_000, args.pipeline)
            before = [cpu_seconds(p.pid) for p in procs]
            start = time.monotonic()
            set_load(master, args.requests, args.pipeline)
            elapsed = time.monotonic() - start
            time.sleep(0.5)                       # the replicas apply what is in flight
            used = [cpu_seconds(p.pid) - b for p, b in zip(procs, before)]
        finally:
            for p in procs:
                p.terminate()
                p.wait()
            shutil.rmtree(tmp, ignore_errors=True)
        per_op = sum(used) / args.requests * 1e6
        base = base or per_op
        name = ("fastdyn, 3 nodes, W=2, load on node 0" if replicas == "fastdyn" else
                "redis master alone" if not replicas else f"redis master + {replicas} replicas")
        print(f"| {name} | {args.requests / elapsed:,.0f} | {per_op:.2f} ({per_op / base:.1f}x) "
              f"| {', '.join(f'{u / args.requests * 1e6:.2f}' for u in used)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
