"""Routing throughput: fastdyn.ring against a naive pure-Python Dynamo port, in one run.

The baseline hashes each key with MD5 and bisects a sorted token list of the same Q
partitions, then reads that partition's precomputed preference list: what a direct port of
the paper's ring to Python does. It has no batch path, so its batch figure is its loop.

    python bench/bench_ring.py [--keys 200000] [--members 30] [--n 3] [--repeat 3]
"""
import argparse
import bisect
import hashlib
import time

from fastdyn.ring import Ring


class Md5Ring:
    """The naive port: MD5 tokens, bisect, one key at a time."""

    def __init__(self, ring: Ring):
        q = ring.partition_count
        self.tokens = [(p + 1) * (1 << 128) // q for p in range(q)]
        self.lists = [ring.preference_list(p, len(ring)) for p in range(q)]

    def preference_list(self, key: bytes, n: int):
        point = int.from_bytes(hashlib.md5(key).digest(), "big")
        p = bisect.bisect_right(self.tokens, point) % len(self.tokens)
        return self.lists[p][:n]


def best_of(repeat, fn):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--members", type=int, default=30)
    ap.add_argument("--partitions", type=int, default=256)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    members = [f"node{i}.example:{17379 + i}" for i in range(args.members)]
    t0 = time.perf_counter()
    ring = Ring(members, args.partitions)
    build = time.perf_counter() - t0
    naive = Md5Ring(ring)
    keys = [b"user:%d" % i for i in range(args.keys)]
    n = args.n

    rows = [
        ("baseline md5+bisect, per key",
         best_of(args.repeat, lambda: [naive.preference_list(k, n) for k in keys])),
        ("fastdyn preference_list, per key",
         best_of(args.repeat, lambda: [ring.preference_list(k, n) for k in keys])),
        ("fastdyn partitions (batch)",
         best_of(args.repeat, lambda: ring.partitions(keys))),
        ("fastdyn route (batch, index array)",
         best_of(args.repeat, lambda: ring.route(keys, n))),
        ("fastdyn preference_lists (batch, names)",
         best_of(args.repeat, lambda: ring.preference_lists(keys, n))),
    ]
    base = rows[0][1]
    print(f"{args.keys} keys, S={args.members}, Q={args.partitions}, N={n}; "
          f"ring build {build * 1e3:.1f} ms")
    print(f"| {'routing':42s} | {'keys/s':>12s} | {'x baseline':>10s} |")
    print(f"|{'-' * 44}|{'-' * 14}|{'-' * 12}|")
    for name, seconds in rows:
        print(f"| {name:42s} | {args.keys / seconds:12,.0f} | {base / seconds:10.1f} |")


if __name__ == "__main__":
    main()
