"""Membership under failure and change on a local 3-node cluster (N=3, R=2, W=2).

1. Failure detection: a node is killed with SIGKILL (or stopped with SIGSTOP) while a client
   writes and reads through the two others; the time until each of them reports it
   unreachable (INFO cluster), and the client errors from the kill on. SIGSTOP is also run
   without any client traffic, where only gossip heartbeats and the failure detector tell.
2. Handoff: a 4th node joins a cluster loaded with --keys keys (DYN.JOIN); the time until the
   change is done (it includes the 1 s settle delay and gossip rounds), and the streams' MB/s
   and keys/s (INFO handoff_bytes_sent/keys_sent summed over the givers, over the longest
   stream's time): alone and unthrottled, then with the default throttle under a foreground
   `fastdyn bench --rate` load, whose p99 is compared with the same load on the same cluster
   before the join. `--admission on,off` runs the handoff under load once per setting of
   admission control (--admission-control yes|no), alternating, `--repeat` times.

    python bench/bench_membership.py [--keys 200000] [--value-size 100] [--rate 4000]
                                     [--only detect|handoff] [--under-load-only]
                                     [--handoff-bytes-per-s B] [--admission on,off]
                                     [--repeat K] [--json FILE]
"""
import argparse
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_server import HOST, free_port, start, stop  # noqa: E402

PEER = 10000


def ports(k):
    out = []
    while len(out) < k:
        p = free_port()
        taken = set(out) | {q + PEER for q in out}
        if p + PEER < 65536 and p not in taken and p + PEER not in taken:
            out.append(p)
    return out


class Resp:
    """A minimal blocking RESP client: one command at a time."""

    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.buf = b""

    def call(self, *args):
        out = b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a), a) for a in (x if isinstance(x, bytes) else
                                                      str(x).encode() for x in args))
        self.sock.sendall(out)
        return self._reply()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(1 << 16)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        return rest

    def info(self, section="cluster"):
        text = self.call(b"INFO", section).decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def close(self):
        self.sock.close()


class Cluster:
    def __init__(self, root, k, *extra):
        self.root = root
        self.ports = ports(k)
        seeds = ",".join(f"{HOST}:{p + PEER}" for p in self.ports)
        self.names = [f"{HOST}:{p}" for p in self.ports]
        self.procs = [self.serve(p, f"n{i}", "--seeds", seeds, *extra)
                      for i, p in enumerate(self.ports)]
        for p in self.ports:
            c = Resp(p)
            wait(lambda: c.info()["cluster_reachable"] == str(k), 30)

    def serve(self, port, name, *flags):
        data = os.path.join(self.root, name)
        os.makedirs(data, exist_ok=True)
        return start([sys.executable, "-m", "fastdyn", "serve", "--host", HOST, "--port",
                      str(port), "--data-dir", data, *flags], port, self.root)


def wait(cond, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return True
        except (OSError, ConnectionError, KeyError):
            pass
        time.sleep(step)
    raise TimeoutError("condition not met")


class Load(threading.Thread):
    """SET then GET of random keys through one node, as fast as one connection goes; errors
    counted after `mark` is set."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.client = Resp(port)
        self.stop = threading.Event()
        self.mark = None
        self.ops = self.errors = 0
        self.first_error = None

    def run(self):
        i = 0
        while not self.stop.is_set():
            key = b"load:%d" % (i % 5000)
            for cmd in ((b"SET", key, b"x" * 100), (b"GET", key)):
                reply = self.client.call(*cmd)
                self.ops += 1
                if isinstance(reply, RuntimeError) and self.mark is not None:
                    self.errors += 1
                    self.first_error = self.first_error or str(reply)
            i += 1


def detection(how, with_load, root):
    cluster = Cluster(os.path.join(root, f"detect-{how}-{with_load}"), 3)
    victim = cluster.procs[2]
    loads = [Load(p) for p in cluster.ports[:2]] if with_load else []
    for load in loads:
        load.start()
    time.sleep(2.0)
    for load in loads:
        load.mark = True
    t0 = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
    seen = []
    for c in [Resp(p) for p in cluster.ports[:2]]:
        wait(lambda: cluster.names[2] in c.info()["cluster_unreachable"], 60)
        seen.append(round(time.monotonic() - t0, 3))
    time.sleep(2.0)
    for load in loads:
        load.stop.set()
        load.join()
    if how == "stop":
        os.kill(victim.pid, signal.SIGCONT)
    stop(cluster.procs, None)
    return {"signal": "SIGKILL" if how == "kill" else "SIGSTOP",
            "client_load": with_load, "seconds_to_down": seen,
            "client_ops": sum(load.ops for load in loads),
            "client_errors": sum(load.errors for load in loads),
            "first_error": next((load.first_error for load in loads if load.first_error), None)}


def fill(port, keys, value_size):
    subprocess.run(["redis-benchmark", "-h", HOST, "-p", str(port), "-c", "16", "-P", "16",
                    "-t", "set", "-n", str(keys), "-r", str(keys), "-d", str(value_size), "-q"],
                   check=True, stdout=subprocess.DEVNULL)


def bench_load(port, rate, seconds, keys, out):
    return subprocess.Popen([sys.executable, "-m", "fastdyn", "bench", "--target",
                             f"redis://{HOST}:{port}", "--rate", str(rate), "--duration",
                             str(seconds), "--mix", "get=0.5,set=0.5", "--keys", str(keys),
                             "--clients", "8", "--out", out], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def p99(out):
    with open(os.path.join(out, "summary.json")) as f:
        ops = json.load(f)["ops"]
    return {name: round(v["p99_ms"], 3) for name, v in ops.items()}


def per_second_p99(out):
    """The p99 (ms) of every operation, second by second, of a `fastdyn bench --out` run."""
    with open(os.path.join(out, "intervals.csv")) as f:
        return [round(float(r["p99_ms"]), 2) for r in csv.DictReader(f)
                if r["op"] == "all" and r["warmup"] == "0" and r["p99_ms"]]


def worst_second_p99(out):
    """The highest p99 of one second (all operations) in a run: what admission control,
    which watches the last second, bounds."""
    return max(per_second_p99(out))


def handoff(keys, value_size, rate, root, foreground, throttle=None, admission=None):
    base = os.path.join(root, f"handoff-{foreground}-{admission}")
    shutil.rmtree(base, ignore_errors=True)
    # alone: as fast as it goes; under load: the node's default throttle unless given
    flags = ("--handoff-settle-ms", "1000") + (
        ("--handoff-bytes-per-s", "0") if not foreground else
        () if throttle is None else ("--handoff-bytes-per-s", str(throttle))) + (
        () if admission is None else ("--admission-control",
                                      "yes" if admission == "on" else "no"))
    cluster = Cluster(base, 3, *flags)
    fill(cluster.ports[0], keys, value_size)
    # DBSIZE has every member count its keys: never while a latency is measured
    out = {"foreground": foreground, "admission": admission,
           "keys_loaded": int(Resp(cluster.ports[0]).call(b"DBSIZE"))}
    if foreground:
        before = os.path.join(base, "before")
        bench_load(cluster.ports[0], rate, 10, 100000, before).wait()
        out["p99_ms_without_handoff"] = p99(before)
        out["worst_second_p99_ms_without_handoff"] = worst_second_p99(before)
    (port,) = ports(1)
    joiner = cluster.serve(port, "joiner", "--seeds", f"{HOST}:{port + PEER}", *flags)
    during = os.path.join(base, "during")
    load = bench_load(cluster.ports[0], rate, 12, 100000, during) if foreground else None
    if load is not None:
        time.sleep(1.0)
    t0 = time.monotonic()
    reply = Resp(port).call(b"DYN.JOIN", f"{HOST}:{cluster.ports[0] + PEER}")
    assert reply == b"OK", reply
    every = [Resp(p) for p in cluster.ports + [port]]      # one connection each: polling
    lowest = [1.0]

    def done():
        infos = [c.info() for c in every]
        lowest[0] = min([lowest[0]] + [float(i.get("admission_factor", 1)) for i in infos])
        return all(i["handoff_change"] == "" and i["cluster_members"] == "4" for i in infos)
    wait(done, 600, 0.25)      # INFO on the clients' coordinator too: not too often
    out["admission_factor_lowest"] = lowest[0]
    seconds = time.monotonic() - t0
    infos = [c.info() for c in every]
    sent = sum(int(i["handoff_bytes_sent"]) for i in infos)
    moved = sum(int(i["handoff_keys_sent"]) for i in infos)
    # the streams run side by side: the longest one bounds the transfer
    streaming = max(int(i["handoff_stream_ms"]) for i in infos) / 1000
    out.update({"seconds_to_join": round(seconds, 2), "keys_handed_off": moved,
                "bytes_handed_off": sent,
                "seconds_streaming": streaming,
                "stream_mb_per_s": round(sent / 1e6 / max(streaming, 1e-3), 1),
                "stream_keys_per_s": round(moved / max(streaming, 1e-3))})
    if load is not None:
        load.wait()
        out["p99_ms_during_handoff"] = p99(during)
        out["worst_second_p99_ms_during_handoff"] = worst_second_p99(during)
        out["p99_ms_per_second_during_handoff"] = per_second_p99(during)
        out["p99_ratio"] = {op: round(v / max(out["p99_ms_without_handoff"][op], 1e-3), 2)
                            for op, v in out["p99_ms_during_handoff"].items()}
        admitted = [c.info() for c in every[:len(cluster.ports)]]
        out["admission_decreases"] = sum(int(i.get("admission_decreases", 0))
                                         for i in admitted)
        out["admission_handoff_wait_ms"] = sum(int(i.get("admission_handoff_wait_ms", 0))
                                               for i in admitted)
    stop(cluster.procs + [joiner], None)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=200000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--rate", type=int, default=4000)
    p.add_argument("--only", choices=("detect", "handoff"))
    p.add_argument("--under-load-only", action="store_true",
                   help="run only the handoff under a foreground load")
    p.add_argument("--handoff-bytes-per-s", type=int,
                   help="the nodes' handoff throttle under load (default: theirs)")
    p.add_argument("--admission", help="on,off: the handoff under load with admission "
                   "control on and off, alternating")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="fastdyn-membership-")
    results = []
    try:
        if args.only != "handoff":
            for how, with_load in (("kill", True), ("stop", True), ("stop", False)):
                results.append(detection(how, with_load, root))
                print(json.dumps(results[-1]), flush=True)
        if args.only != "detect":
            settings = args.admission.split(",") if args.admission else [None]
            runs = [(foreground, admission) for _ in range(args.repeat)
                    for foreground in ((True,) if args.under_load_only or args.admission
                                       else (False, True))
                    for admission in settings]
            for foreground, admission in runs:
                results.append(handoff(args.keys, args.value_size, args.rate, root,
                                       foreground, args.handoff_bytes_per_s, admission))
                print(json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
