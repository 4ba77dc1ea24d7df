"""Anti-entropy cost: Merkle exchange against shipping the full key list, in one run.

Two replicas hold the same N keys except for D of them (a third updated, a third deleted on
one side, a third added on that side only). The Merkle path exchanges tree levels top-down
(MerkleDiff requests/replies as bytes), then both sides list (key, digest) for the differing
segments; the baseline ships every (key, digest) and compares dictionaries.

    python bench/bench_merkle.py [--keys 1000000] [--differ 100] [--depth 4] [--fanout 16]
"""
import argparse
import random
import time

import numpy as np

from fastdyn.cluster.merkle import MerkleDiff, MerkleTree, diff_keys, digests


def segment_index(tree, keys):
    """Per-segment key lists as a store would keep them: keys sorted by segment."""
    seg = tree.segments_of(keys)
    order = np.argsort(seg, kind="stable")
    bounds = np.searchsorted(seg[order], np.arange(tree.segment_count + 1))
    return order, bounds


def listing(keys, dig, index, segments):
    order, bounds = index
    out = {}
    for s in segments:
        for i in order[bounds[s]:bounds[s + 1]].tolist():
            out[keys[i]] = int(dig[i])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--differ", type=int, default=100)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--fanout", type=int, default=16)
    args = ap.parse_args()
    rnd = random.Random(42)

    keys_a = [b"user:%08d" % i for i in range(args.keys)]
    values_a = [b"v1-%d" % rnd.getrandbits(32) for _ in range(args.keys)]

    t0 = time.perf_counter()
    dig_a = digests(keys_a, values_a)
    t_digest = time.perf_counter() - t0
    t0 = time.perf_counter()
    tree_a = MerkleTree(args.depth, args.fanout)
    tree_a.fold(keys_a, dig_a)
    t_fold = time.perf_counter() - t0

    # Replica B: the same data with `differ` keys changed, and its tree kept incrementally.
    tree_b = MerkleTree.from_bytes(tree_a.to_bytes())
    keys_b, dig_b = list(keys_a), dig_a.copy()
    chosen = rnd.sample(range(args.keys), args.differ)
    expected = set()
    deleted = set()
    added = []
    t0 = time.perf_counter()
    for j, i in enumerate(chosen):
        k = keys_a[i]
        if j % 3 == 0:      # updated on B
            new = int(digests([k], [b"v2"])[0])
            tree_b.update(k, int(dig_b[i]), new)
            dig_b[i] = new
        elif j % 3 == 1:    # deleted on B
            tree_b.remove(k, int(dig_b[i]))
            deleted.add(i)
        else:               # a key only B has
            k = b"extra:%08d" % i
            new = int(digests([k], [b"v2"])[0])
            tree_b.insert(k, new)
            added.append((k, new))
        expected.add(k)
    t_updates = (time.perf_counter() - t0) / args.differ
    keep = np.array([i not in deleted for i in range(args.keys)])
    keys_b = [k for k, ok in zip(keys_b, keep) if ok] + [k for k, _ in added]
    dig_b = np.concatenate([dig_b[keep], np.array([d for _, d in added], dtype=np.uint64)])
    index_a = segment_index(tree_a, keys_a)
    index_b = segment_index(tree_b, keys_b)

    # Merkle path: the exchange over bytes, then the segment listings.
    t0 = time.perf_counter()
    walk = MerkleDiff(tree_a)
    sent = received = rounds = 0
    request = walk.next_request()
    while request is not None:
        reply = tree_b.answer(request)
        sent += len(request)
        received += len(reply)
        rounds += 1
        walk.feed(reply)
        request = walk.next_request()
    segs = walk.segments
    t_exchange = time.perf_counter() - t0
    t0 = time.perf_counter()
    list_a = listing(keys_a, dig_a, index_a, segs)
    list_b = listing(keys_b, dig_b, index_b, segs)
    found = diff_keys(list_a, list_b)
    t_listing = time.perf_counter() - t0
    listing_bytes = sum(len(k) + 8 for k in list_a) + sum(len(k) + 8 for k in list_b)
    assert set(found) == expected, "Merkle diff missed or invented keys"

    # Baseline: ship B's full (key, digest) list to A and compare dictionaries.
    t0 = time.perf_counter()
    full_b = dict(zip(keys_b, dig_b.tolist()))
    full_a = dict(zip(keys_a, dig_a.tolist()))
    found_full = diff_keys(full_a, full_b)
    t_full = time.perf_counter() - t0
    full_bytes = sum(len(k) + 8 for k in keys_b)
    assert set(found_full) == expected

    merkle_bytes = sent + received + listing_bytes
    merkle_time = t_exchange + t_listing
    print(f"{args.keys:,} keys, {args.differ} differ, tree depth {args.depth} "
          f"fanout {args.fanout} ({tree_a.segment_count:,} segments)")
    print(f"build: digests {t_digest:.3f} s + fold {t_fold:.3f} s = "
          f"{t_digest + t_fold:.3f} s ({args.keys / (t_digest + t_fold):,.0f} keys/s); "
          f"digest + tree update {t_updates * 1e6:.2f} us per changed key")
    print(f"| {'method':34s} | {'bytes shipped':>13s} | {'time (ms)':>9s} |")
    print(f"|{'-' * 36}|{'-' * 15}|{'-' * 11}|")
    print(f"| {'Merkle exchange (%d rounds)' % rounds:34s} | {sent + received:13,d} | "
          f"{t_exchange * 1e3:9.1f} |")
    print(f"| {'  + listings of %d segments' % len(segs):34s} | {listing_bytes:13,d} | "
          f"{t_listing * 1e3:9.1f} |")
    print(f"| {'Merkle total':34s} | {merkle_bytes:13,d} | {merkle_time * 1e3:9.1f} |")
    print(f"| {'full key list':34s} | {full_bytes:13,d} | {t_full * 1e3:9.1f} |")
    print(f"Merkle ships {full_bytes / merkle_bytes:,.0f}x fewer bytes and is "
          f"{t_full / merkle_time:,.0f}x faster; found {len(found)} of {len(expected)} keys")


if __name__ == "__main__":
    main()
