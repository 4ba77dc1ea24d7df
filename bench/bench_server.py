"""redis-benchmark against `fastdyn serve` and redis-server, in the same run.

    python bench/bench_server.py [--requests 200000] [--clients 50] [--rounds 3]

Targets: fastdyn (--sync interval), redis-server with persistence off, and redis-server with
`appendonly yes appendfsync everysec` (the closest Redis setting to fastdyn's interval sync).
For each pipeline depth (-P 1 and -P 16) the targets run interleaved, `--rounds` times, and the
median req/s, p99 and the server's CPU time per request (from /proc, user + system) are reported
with fastdyn's ratios against both Redis setups.
"""
import argparse
import csv
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"


def free_port() -> int:
    """A free port whose peer port (port + 10000, fastdyn's default) is a valid port too."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port + 10000 <= 65535:
            return port


def wait_port(port, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start(argv, port, cwd):
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc


def cpu_seconds(pid) -> float:
    """User + system CPU time a process has used, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_benchmark(port, pid, clients, requests, pipeline, value_size):
    """{test: (req/s, p99 ms, the server's CPU us per request)} for SET then GET."""
    rows = {}
    for test in ("set", "get"):
        before = cpu_seconds(pid)
        out = subprocess.run(
            ["redis-benchmark", "-h", HOST, "-p", str(port), "-c", str(clients), "-n",
             str(requests), "-d", str(value_size), "-t", test, "-P", str(pipeline), "--csv"],
            capture_output=True, text=True, check=True).stdout
        cpu_us = (cpu_seconds(pid) - before) / requests * 1e6
        for row in csv.DictReader(io.StringIO(out)):
            rows[row["test"]] = (float(row["rps"]), float(row["p99_latency_ms"]), cpu_us)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pipelines", default="1,16")
    args = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2

    tmp = tempfile.mkdtemp(prefix="bench-server-")
    procs = []
    try:
        targets = {}
        port = free_port()
        procs.append(start([sys.executable, "-m", "fastdyn", "serve", "--host", HOST, "--port",
                            str(port), "--data-dir", os.path.join(tmp, "fastdyn"), "--sync",
                            "interval", "--log-level", "warning"], port, tmp))
        targets["fastdyn (sync interval)"] = (port, procs[-1].pid)
        for name, extra in (("redis (no persistence)", ["--appendonly", "no"]),
                            ("redis (aof everysec)", ["--appendonly", "yes", "--appendfsync",
                                                      "everysec"])):
            port = free_port()
            d = os.path.join(tmp, name.split()[1].strip("(")) + str(port)
            os.makedirs(d)
            procs.append(start(["redis-server", "--port", str(port), "--bind", HOST, "--save",
                                "", "--dir", d, *extra], port, d))
            targets[name] = (port, procs[-1].pid)

        results = {}  # (target, pipeline, test) -> [(rps, p99)]
        pipelines = [int(p) for p in args.pipelines.split(",")]
        for pipeline in pipelines:
            for _ in range(args.rounds):
                for name, (port, pid) in targets.items():
                    rows = run_benchmark(port, pid, args.clients, args.requests, pipeline,
                                         args.value_size)
                    for test, value in rows.items():
                        results.setdefault((name, pipeline, test), []).append(value)

        print(f"redis-benchmark -c {args.clients} -n {args.requests} -d {args.value_size} "
              f"-t set,get -P {{{args.pipelines}}}, median of {args.rounds} interleaved rounds")
        print()
        print("| pipeline | test | target | req/s | p99 ms | server CPU us/req | fastdyn / redis "
              "| fastdyn / redis aof |")
        print("|---|---|---|---|---|---|---|---|")
        fd, plain, aof = list(targets)
        for pipeline in pipelines:
            for test in ("SET", "GET"):
                med = {}
                for name in targets:
                    values = results[(name, pipeline, test)]
                    med[name] = tuple(statistics.median(v[i] for v in values)
                                      for i in range(3))
                for name in targets:
                    rps, p99, cpu_us = med[name]
                    ratio = ratio_aof = ""
                    if name == fd:
                        ratio = "%.2fx rps, %.2fx p99" % (rps / med[plain][0],
                                                          p99 / max(med[plain][1], 1e-9))
                        ratio_aof = "%.2fx rps, %.2fx p99" % (rps / med[aof][0],
                                                              p99 / max(med[aof][1], 1e-9))
                    print(f"| {pipeline} | {test} | {name} | {rps:,.0f} | {p99:.3f} | "
                          f"{cpu_us:.2f} | {ratio} | {ratio_aof} |")
        return 0
    finally:
        stop(procs, tmp)


def stop(procs, tmp) -> None:
    """SIGTERM every server, SIGKILL one that does not exit in 20 s, remove the directory."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
