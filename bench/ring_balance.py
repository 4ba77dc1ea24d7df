"""Dynamo paper §6.2, reproduced: partitioning strategy 1 against strategy 3.

Strategy 1: every node takes T random tokens; a key belongs to the first token clockwise and
its replicas are the next N distinct nodes clockwise. Strategy 3: Q equal partitions assigned
by fastdyn.ring. For S=30 nodes and N=3 replicas, over a zipfian request stream on a fixed key
set, it measures load-balancing efficiency (mean node load / max node load, load = requests a
node serves as one of the N replicas) against the size of the membership state (S*T tokens or
Q partitions), and the fraction of keys whose primary / replica set moves when a 31st node
joins. Prints a table and writes docs/ring_balance.png.

With --movement it instead measures fastdyn's ring alone at Q=256 (or --partitions): over
random member sets of S=1..64 nodes, the partitions (primaries) and replica slots (first k
positions) that change holder on one join or leave, beyond the ideal 1/(S+1) (join) or 1/S
(leave) of them.

    python bench/ring_balance.py [--keys 1000000] [--zipf 0.8] [--trials 5]
    python bench/ring_balance.py --movement [--trials 20] [--partitions 1024]
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fastdyn._hash import hash64_batch  # noqa: E402
from fastdyn.ring import Ring  # noqa: E402


def zipf_weights(n_keys, s, rng):
    """Request share of each key under a zipfian law; popularity ranks shuffled over keys."""
    w = 1.0 / np.arange(1, n_keys + 1, dtype=np.float64) ** s
    rng.shuffle(w)
    return w / w.sum()


class TokenRing:
    """Strategy 1: T random 64-bit tokens per node, replicas clockwise."""

    def __init__(self, members, tokens_per_node, n, seed):
        names = [f"{m}#{seed}#{i}".encode() for m in members for i in range(tokens_per_node)]
        owner = np.repeat(np.arange(len(members)), tokens_per_node)
        tokens = hash64_batch(names)
        order = np.argsort(tokens)
        self.tokens = tokens[order]
        owner = owner[order].tolist()
        k = min(n, len(members))
        count = len(owner)
        lists = []
        for t in range(count):
            seen = []
            j = t
            while len(seen) < k:
                if owner[j % count] not in seen:
                    seen.append(owner[j % count])
                j += 1
            lists.append(seen)
        self.lists = np.array(lists, dtype=np.int64)

    def route(self, hashes):
        idx = np.searchsorted(self.tokens, hashes, side="left") % len(self.tokens)
        return self.lists[idx]


class PartitionRing:
    """Strategy 3 through fastdyn.ring (members indexed in the caller's order)."""

    def __init__(self, members, partitions, n):
        self.ring = Ring(members, partitions)
        remap = np.array([members.index(m) for m in self.ring.members])
        self.lists = remap[self.ring.table[:, :n].astype(np.int64)]
        self.bits = partitions.bit_length() - 1

    def route(self, hashes):
        return self.lists[(hashes >> np.uint64(64 - self.bits)).astype(np.int64)]


def efficiency(replicas, weights, s):
    load = np.zeros(s)
    for col in range(replicas.shape[1]):
        load += np.bincount(replicas[:, col], weights=weights, minlength=s)
    return load.mean() / load.max()


def moved(before, after, s_before):
    """Fractions of keys whose primary changes and whose replica set changes."""
    primary = np.mean(before[:, 0] != after[:, 0])
    b = np.sort(before, axis=1)
    a = np.sort(after, axis=1)
    replica = np.mean(np.any(a != b, axis=1))
    return primary, replica


def slot_moves(before, after, k):
    """Replica slots (partition, position < k) whose holder is new after the change."""
    return sum(len(set(after.preference_list(p, k)) - set(before.preference_list(p, k)))
               for p in range(before.partition_count))


def movement(trials, q=256, max_nodes=64):
    """Excess movement of single joins and leaves, as a fraction of k*Q per position."""
    rng = np.random.default_rng(11)
    excess = {(kind, k): [] for kind in ("join", "leave") for k in (1, 2, 3)}
    for s in range(1, max_nodes + 1):
        for trial in range(trials):
            members = [f"n{x}" for x in rng.choice(10**9, size=s, replace=False)]
            ring = Ring(members, q)
            grown = Ring(members + [f"new{trial}"], q)
            shrunk = Ring(members[1:], q) if s > 1 else None
            for k in (1, 2, 3):
                kk = min(k, s + 1)
                excess["join", k].append(slot_moves(ring, grown, kk) / (kk * q) - 1 / (s + 1))
                if shrunk is not None:
                    kk = min(k, s - 1)
                    excess["leave", k].append(slot_moves(ring, shrunk, kk) / (kk * q) - 1 / s)
    print(f"Q={q}, S=1..{max_nodes}, {trials} random member sets per S; excess movement beyond "
          "the ideal, as a fraction of k*Q")
    print("| change | positions k | mean excess | p99 excess | max excess "
          "| mean / max in partitions per position |")
    print("|---|---:|---:|---:|---:|---:|")
    for (kind, k), values in excess.items():
        v = np.array(values)
        print(f"| {kind} | {k} | {v.mean():.3f} | {np.percentile(v, 99):.3f} | {v.max():.3f} "
              f"| {v.mean() * q:.1f} / {v.max() * q:.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--movement", action="store_true",
                    help="measure join/leave movement of the ring for S=1..64 instead")
    ap.add_argument("--partitions", type=int, default=256, help="Q for --movement")
    ap.add_argument("--nodes", type=int, default=30)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--zipf", type=float, default=0.8)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--png", default=os.path.join(os.path.dirname(__file__), "..", "docs",
                                                  "ring_balance.png"))
    args = ap.parse_args()
    if args.movement:
        movement(args.trials, q=args.partitions)
        return
    rng = np.random.default_rng(7)
    s, n = args.nodes, args.n
    hashes = hash64_batch([b"key:%d" % i for i in range(args.keys)])
    weights = zipf_weights(args.keys, args.zipf, rng)
    uniform = np.full(args.keys, 1.0 / args.keys)

    results = {1: [], 3: []}
    for t in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        rows = []
        for trial in range(args.trials):
            members = [f"node{trial}-{i}" for i in range(s)]
            before = TokenRing(members, t, n, trial)
            after = TokenRing(members + [f"node{trial}-new"], t, n, trial)
            rb, ra = before.route(hashes), after.route(hashes)
            rows.append((efficiency(rb, weights, s), efficiency(rb, uniform, s),
                         *moved(rb, ra, s)))
        results[1].append((s * t, f"T={t}", *np.mean(rows, axis=0)))
    for q in (64, 128, 256, 512, 1024, 2048, 4096):
        rows = []
        for trial in range(args.trials):
            members = [f"node{trial}-{i}" for i in range(s)]
            before = PartitionRing(members, q, n)
            after = PartitionRing(members + [f"node{trial}-new"], q, n)
            rb, ra = before.route(hashes), after.route(hashes)
            rows.append((efficiency(rb, weights, s), efficiency(rb, uniform, s),
                         *moved(rb, ra, s)))
        results[3].append((q, f"Q={q}", *np.mean(rows, axis=0)))

    print(f"S={s}, N={n}, {args.keys:,} keys, zipf {args.zipf}, mean of {args.trials} trials; "
          f"ideal move on a join: primaries {1 / (s + 1):.3f}, replica sets "
          f"{min(1.0, n / (s + 1)):.3f}")
    print("| strategy | setting | state size | efficiency (zipf) | efficiency (uniform) "
          "| keys moved: primary | keys moved: replica set |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for strategy, label in ((1, "1: T random tokens/node"), (3, "3: Q/S equal partitions")):
        for size, setting, eff_z, eff_u, mp, mr in results[strategy]:
            print(f"| {label} | {setting} | {size} | {eff_z:.3f} | {eff_u:.3f} | {mp:.3f} "
                  f"| {mr:.3f} |")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for strategy, style in ((1, "o-"), (3, "s-")):
        data = np.array([r[:1] + r[2:] for r in results[strategy]], dtype=float)
        label = {1: "strategy 1 (T tokens/node)", 3: "strategy 3 (Q equal partitions)"}
        ax1.plot(data[:, 0], data[:, 1], style, label=label[strategy] + ", zipf")
        ax1.plot(data[:, 0], data[:, 2], style, alpha=0.4, label=label[strategy] + ", uniform")
        ax2.plot(data[:, 0], data[:, 3], style, label=label[strategy] + ", primary")
        ax2.plot(data[:, 0], data[:, 4], style, alpha=0.4,
                 label=label[strategy] + ", replica set")
    ax2.axhline(1 / (s + 1), color="grey", ls=":", label="ideal primary move 1/(S+1)")
    ax2.axhline(min(1.0, n / (s + 1)), color="grey", ls="--",
                label="ideal replica-set move N/(S+1)")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("membership state size (tokens S*T, or partitions Q)")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("load-balancing efficiency (mean/max load)")
    ax1.set_ylim(0, 1.02)
    ax2.set_ylabel("fraction of keys moved on a join")
    ax1.set_title(f"Balance, S={s}, N={n}")
    ax2.set_title("Movement when node S+1 joins")
    ax1.legend(fontsize=7, loc="lower right")
    ax2.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print(f"wrote {os.path.normpath(args.png)}")


if __name__ == "__main__":
    main()
