"""ns per operation that per-key order (fastdyn/cluster/ordering.py) adds on idle keys: SETs
and GETs through an OrderedCoordinator over an inner coordinator that only makes a Pending,
`--window` of them in flight at a time (a pipelined client's batch), against the inner alone
in the same run.

    .venv/bin/python bench/bench_ordering.py [--window 256] [--rounds 400]
"""
import argparse
import time

from fastdyn.cluster.ordering import OrderedCoordinator
from fastdyn.pending import Pending


class PendingOnly:
    """An inner coordinator whose every operation is in flight until the caller completes it."""

    def put(self, key, value, expiry_ms=0):
        return Pending()

    def get(self, key):
        return Pending()


def ns_per_op(operation, keys, window):
    """Time of each operation over keys, `window` started before any of them completes."""
    start = time.perf_counter()
    for i in range(0, len(keys), window):
        results = [operation(key) for key in keys[i:i + window]]
        for result in results:
            result.complete(None)
    return (time.perf_counter() - start) / len(keys) * 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    keys = [b"key:%d" % i for i in range(args.window * args.rounds)]
    inner = PendingOnly()
    ordered = OrderedCoordinator(inner)
    cases = {
        "SET": (lambda k: inner.put(k, b"v", 0), lambda k: ordered.put(k, b"v", 0)),
        "GET": (inner.get, ordered.get),
    }
    for name, (direct, through) in cases.items():
        alone = min(ns_per_op(direct, keys, args.window) for _ in range(7))
        ordered_ns = min(ns_per_op(through, keys, args.window) for _ in range(7))
        print(f"{name}: inner alone {alone:5.0f} ns/op, ordered {ordered_ns:5.0f} ns/op, "
              f"order adds {ordered_ns - alone:5.0f} ns/op")


if __name__ == "__main__":
    main()
