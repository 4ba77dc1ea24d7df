"""Anti-entropy: how fast the Merkle trees rebuild, how fast a wiped replica is restored, what
the repair costs in traffic, and what it does to a client's tail latency.

1. rebuild: a store of --rebuild-keys keys (100-byte values) is reopened and its trees are
   rebuilt from a fold (`StoreTrees.rebuild`, what a node does at start-up), against the
   same fold written plainly in Python (items(), a digest and a tree insert per key), in the
   same run.
2. wipe: a 3-node cluster (N=3) is loaded with --keys keys; node 2 is killed, its data
   directory deleted, and it is restarted; nobody reads. The time until it holds every key
   again and the three nodes' Merkle roots agree, and the exchange traffic.
3. differences: on the loaded cluster, node 2 is cut off (fault injection, hints off) while 10
   keys are overwritten, then healed: the exchange traffic until the roots agree, against the
   size of the data.
4. load: a steady `fastdyn bench --rate` load through node 0 in three windows: steady; while
   node 2 is killed and restarted on its data; while node 2 is killed, wiped and restored by
   anti-entropy (step 2 under load). The third against the second is the repair's cost to the
   clients. With admission control on and off (alternating, on fresh clusters).
5. idle: the same steady load on fresh clusters with a round every second that finds nothing
   to repair, against anti-entropy off: what idle rounds cost the clients.

    python bench/bench_anti_entropy.py [--keys 100000] [--rebuild-keys 1000000] [--rate 4000]
                                       [--only rebuild|wipe|differences|load|idle]
                                       [--json FILE]
                                       [--admission on,off] [--repeat N]
                                       [--extra "--flag value ..."]
"""
import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_membership import Cluster, Resp, bench_load, p99, per_second_p99, wait  # noqa: E402
from bench_server import HOST, stop  # noqa: E402

AE = ("--anti-entropy-interval-ms", "1000", "--gossip-interval-ms", "500")


def rebuild(keys, root):
    from fastdyn._logstore import Store
    from fastdyn.cluster.merkle import MerkleTree, StoreTrees, value_digest
    from fastdyn.ring import Ring

    path = os.path.join(root, "rebuild")
    with Store(path, sync="never") as store:
        value = b"v" * 100
        for i in range(keys):
            store.put(b"key:%09d" % i, value)
    out = {"keys": keys}
    with Store(path, sync="never") as store:
        t0 = time.perf_counter()
        trees = StoreTrees(store, 256)
        while not trees.rebuild(16384):
            pass
        took = time.perf_counter() - t0
        out["fastdyn_keys_per_s"] = round(keys / took)
        out["fastdyn_seconds"] = round(took, 3)
        ring = Ring(["a"])
        plain = [MerkleTree(trees.depth, trees.FANOUT) for _ in range(256)]
        t0 = time.perf_counter()
        for key, value, _ in store.items():
            plain[ring.partition(key)].insert(key, value_digest(key, value))
        took = time.perf_counter() - t0
        out["python_fold_keys_per_s"] = round(keys / took)
        assert all(plain[p] == trees.tree(p) for p in range(256)), "the trees differ"
    out["ratio"] = round(out["fastdyn_keys_per_s"] / out["python_fold_keys_per_s"], 2)
    shutil.rmtree(path)
    return out


def load_keys(port, keys, value_size=100):
    """Distinct keys key:0 .. key:keys-1, pipelined 1000 at a time."""
    c = Resp(port)
    value = b"x" * value_size
    for start in range(0, keys, 1000):
        batch = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                         % (len(k), k, len(value), value)
                         for k in (b"key:%d" % i for i in range(start, min(start + 1000, keys))))
        c.sock.sendall(batch)
        for _ in range(min(1000, keys - start)):
            assert c._reply() == b"OK"
    c.close()


def roots(port):
    reply = Resp(port).call(b"DYN.ANTIENTROPY")
    return None if isinstance(reply, RuntimeError) else [row[1] for row in reply]


def agree(ports):
    views = [roots(p) for p in ports]
    return views[0] is not None and all(v == views[0] for v in views)


def local_keys(port):
    line = Resp(port).call(b"INFO", b"keyspace").decode()
    return int(line.split("keys=")[1].split(",")[0]) if "keys=" in line else 0


def traffic(ports):
    """Exchange bytes, requests and answers, as the exchanging nodes count them."""
    return sum(int(i["anti_entropy_bytes_sent"]) + int(i["anti_entropy_bytes_received"])
               for i in (Resp(p).info() for p in ports))


def wipe_and_restore(cluster, keys, extra, wipe=True, quiet=False):
    """Kill node 2, delete its data (unless not `wipe`), restart it; (seconds until it has
    pulled the keys and its trees agree with the others', exchange bytes). INFO keyspace and
    DBSIZE read every key: never while a latency is measured. `quiet`: while clients are
    measured, ask only node 2, and only for its pulled keys."""
    proc = cluster.procs[2]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if wipe:
        shutil.rmtree(os.path.join(cluster.root, "n2"))
    before = traffic(cluster.ports[:2])     # node 2 starts again from 0
    t0 = time.monotonic()
    seeds = ",".join(f"{HOST}:{p + 10000}" for p in cluster.ports)
    cluster.procs[2] = cluster.serve(cluster.ports[2], "n2", "--seeds", seeds, *AE, *extra)
    wait(lambda: int(Resp(cluster.ports[2]).info()["anti_entropy_keys_repaired"])
         >= (keys if wipe else 0) and (quiet or agree(cluster.ports)), 600, 0.2)
    took = time.monotonic() - t0
    return took, 0 if quiet else traffic(cluster.ports) - before


def wipe(keys, root, extra):
    cluster = Cluster(os.path.join(root, "wipe"), 3, *AE, *extra)
    load_keys(cluster.ports[0], keys)
    wait(lambda: agree(cluster.ports), 120, 0.1)
    took, sent = wipe_and_restore(cluster, keys, extra)
    assert local_keys(cluster.ports[2]) == local_keys(cluster.ports[0]) == keys
    stop(cluster.procs, None)
    return {"keys": keys, "seconds_to_restore": round(took, 2),
            "keys_per_s": round(keys / took), "exchange_bytes": sent}


def differences(keys, root, extra):
    cluster = Cluster(os.path.join(root, "diff"), 3, *AE, "--hint-max-bytes", "0",
                      "--fault-injection", "yes", *extra)
    load_keys(cluster.ports[0], keys)
    wait(lambda: agree(cluster.ports), 120, 0.1)
    peers = [f"{HOST}:{p + 10000}" for p in cluster.ports]
    for j in (0, 1):
        Resp(cluster.ports[2]).call(b"DYN.FAULT", b"PARTITION", peers[j])
        Resp(cluster.ports[j]).call(b"DYN.FAULT", b"PARTITION", peers[2])
    c = Resp(cluster.ports[0])
    for i in range(10):
        assert c.call(b"SET", b"key:%d" % (i * 9973), b"changed") == b"OK"
    before = traffic(cluster.ports)
    t0 = time.monotonic()
    for p in cluster.ports:
        Resp(p).call(b"DYN.FAULT", b"HEAL")
        Resp(p).call(b"DYN.ANTIENTROPY", b"NOW")
    wait(lambda: agree(cluster.ports), 120, 0.05)
    took = time.monotonic() - t0
    sent = traffic(cluster.ports) - before
    stop(cluster.procs, None)
    data = keys * (len(b"key:99999") + 100 + 17)
    return {"keys": keys, "differing": 10, "seconds_to_agree": round(took, 2),
            "exchange_bytes": sent, "data_bytes_per_replica": data,
            "exchange_per_data": round(sent / data, 5)}


def under_load(keys, rate, root, extra):
    """Three 12 s windows of the same open-loop load through node 0 on one cluster: steady;
    node 2 killed and restarted on its data (hints only); node 2 killed, wiped and restarted
    (a full repair by anti-entropy). The third against the second is what the repair costs
    the clients; against the first, what losing a replica's disk costs them."""
    cluster = Cluster(tempfile.mkdtemp(prefix="load-", dir=root), 3, *AE, *extra)
    load_keys(cluster.ports[0], keys)
    wait(lambda: agree(cluster.ports), 120, 0.1)
    out = {"keys": keys, "rate": rate}
    for window, action in (("steady", None), ("restart", False), ("wipe", True)):
        path = os.path.join(cluster.root, window)
        load = bench_load(cluster.ports[0], rate, 12, keys, path)
        if action is not None:
            time.sleep(3.0)
            took, _ = wipe_and_restore(cluster, keys, extra, wipe=action, quiet=True)
            if action:
                out["seconds_to_pull_every_key"] = round(took, 2)
        load.wait()
        out[f"{window}_p99_ms"] = p99(path)
        out[f"{window}_p99_ms_per_second"] = per_second_p99(path)
        wait(lambda: agree(cluster.ports), 120, 0.1)
    out["admission_per_node"] = [
        {k: i[k] for k in ("admission_decreases", "anti_entropy_yield_ms",
                           "admission_hints_wait_ms")}
        for i in (Resp(p).info() for p in cluster.ports)]
    stop(cluster.procs, None)
    for name, base in (("repair", "restart"), ("wipe_vs_steady", "steady")):
        out[f"p99_ratio_{name}"] = {op: round(out["wipe_p99_ms"][op] / v, 2)
                                    for op, v in out[f"{base}_p99_ms"].items()}
    return out


def idle_rounds(keys, rate, root, extra, seconds=30):
    """What rounds that find nothing cost the clients: a steady load (as in `under_load`) on a
    fresh loaded cluster with rounds every second, against anti-entropy off."""
    out = {}
    for name, flags in (("rounds_every_1s", ()), ("off", ("--anti-entropy-interval-ms", "0"))):
        cluster = Cluster(tempfile.mkdtemp(prefix="idle-", dir=root), 3, *AE, *extra, *flags)
        load_keys(cluster.ports[0], keys)
        if not flags:
            wait(lambda: agree(cluster.ports), 120, 0.1)
        time.sleep(3.0)
        path = os.path.join(cluster.root, "steady")
        bench_load(cluster.ports[0], rate, seconds, keys, path).wait()
        seconds_p99 = sorted(per_second_p99(path))
        out[name] = {"p99_ms": p99(path),
                     "median_second_p99_ms": seconds_p99[len(seconds_p99) // 2]}
        stop(cluster.procs, None)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--rebuild-keys", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=4000)
    ap.add_argument("--only", choices=("rebuild", "wipe", "differences", "load", "idle"))
    ap.add_argument("--extra", default="", help="more `fastdyn serve` flags for every node")
    ap.add_argument("--admission", default="on,off",
                    help="load: admission control settings to run, alternating (on,off)")
    ap.add_argument("--repeat", type=int, default=1, help="load, idle: runs of each setting")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    extra = args.extra.split()
    root = tempfile.mkdtemp(prefix="fastdyn-ae-")
    results = {}
    try:
        for name, fn in (("rebuild", lambda: rebuild(args.rebuild_keys, root)),
                         ("wipe", lambda: wipe(args.keys, root, extra)),
                         ("differences", lambda: differences(args.keys, root, extra)),
                         ("load", lambda: [
                             dict(under_load(args.keys, args.rate, root, extra + [
                                 "--admission-control", "yes" if how == "on" else "no"]),
                                  admission=how)
                             for _ in range(args.repeat)
                             for how in args.admission.split(",")]),
                         ("idle", lambda: [idle_rounds(args.keys, args.rate, root, extra)
                                           for _ in range(args.repeat)])):
            if args.only in (None, name):
                results[name] = fn()
                print(name, json.dumps(results[name]), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
