"""µs per operation of the replicated plain-SET path of the versioned object: decode the
stored register, decode the incoming one, sync, encode (100-byte values), plus its parts.

    .venv/bin/python bench/bench_object.py [--value-size 100] [--number 200000]
"""
import argparse
import timeit

from fastdyn.cluster.dvv import node_id
from fastdyn.cluster.hlc import HybridClock
from fastdyn.cluster.object import decode, encode, lww_object, lww_write, sync


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args()
    clock = HybridClock()
    a, b = node_id("node-a"), node_id("node-b")
    value = b"v" * args.value_size
    stored = encode(lww_object(a, value, clock.now()))
    incoming = encode(lww_object(b, value, clock.now()))
    stored_obj, incoming_obj = decode(stored), decode(incoming)
    cases = {
        "encode": lambda: encode(stored_obj),
        "decode": lambda: decode(stored),
        "sync (two registers)": lambda: sync(stored_obj, incoming_obj),
        "lww_write": lambda: lww_write(stored_obj, b, value, clock.now()),
        "replica apply = decode x2 + sync + encode":
            lambda: encode(sync(decode(stored), decode(incoming))),
    }
    print(f"value size {args.value_size} B, overhead of a plain SET "
          f"{len(stored) - len(value)} B")
    for name, fn in cases.items():
        best = min(timeit.repeat(fn, number=args.number, repeat=5))
        print(f"{name:45s} {best / args.number * 1e6:6.2f} µs")


if __name__ == "__main__":
    main()
