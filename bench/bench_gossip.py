"""Gossip and failure detection at 100 and 1,000 nodes, simulated in one process.

The membership core (fastdyn/cluster/membership.py, gossip.py, failure_detector.py) is sans-IO,
so this drives the real code over a simulated network: every node starts a round every
second (±20% jitter, as a node does), each exchange's messages are the real encoded bytes, and
each message is lost with the given probability. Seeded and replayable.

Reported per cluster size:
- rounds until every node knows a node that joined through one seed;
- rounds until every node suspects (phi >= 8) a node that stopped;
- messages and bytes sent per node per round;
- false suspicions: checks in which a node suspected a live member, with 1% message loss.

    python bench/bench_gossip.py [--sizes 100,1000] [--loss 0.01] [--seed 1] [--json FILE]
"""
import argparse
import heapq
import json
import random
import sys
import time

from fastdyn.cluster.failure_detector import PhiAccrual
from fastdyn.cluster.gossip import Gossip
from fastdyn.cluster.membership import VALID, Member, Members

PARTITIONS = 256


class _Names:
    """Stands in for the ring: building a ring of 1,000 members at every node on every change
    is not what this measures."""

    def __init__(self, members):
        self.members = tuple(members)


class SimMembers(Members):
    def _make_ring(self, names):
        return _Names(sorted(names))


class Node:
    def __init__(self, name, seeds, rng, now):
        self.name = name
        self.members = SimMembers(None, name, name, PARTITIONS, now_s=lambda: 1)
        self.detector = PhiAccrual()
        self.gossip = Gossip(self.members, seeds, up=self.up, rng=rng)
        self.alive = True
        self.now = now

    def up(self, name):
        return not self.detector.suspects(name, self.now())

    def learned(self, beating, changed, now):
        for name in beating + changed:
            if name != self.name:
                self.detector.heartbeat(name, now)


class Simulation:
    def __init__(self, size, loss, seed):
        self.rng = random.Random(seed)
        self.loss = loss
        self.t = 0.0
        self.nodes = {}
        self.sent = self.bytes = 0
        names = [f"n{i:04d}" for i in range(size)]
        self.seeds = names[:3]
        everyone = [Member(n, n, 1, 0, VALID, 0) for n in names]
        for n in names:
            node = self._add(n)
            node.members.merge(everyone)       # a converged cluster to start from
            for m in names:
                if m != n:
                    node.detector.heartbeat(m, 0.0)
        self.timers = [(self.rng.uniform(0, 1), n) for n in names]
        heapq.heapify(self.timers)

    def _add(self, name):
        node = self.nodes[name] = Node(name, self.seeds, random.Random(self.rng.random()),
                                       lambda: self.t)
        return node

    def _deliver(self, payload):
        self.sent += 1
        self.bytes += len(payload)
        return self.rng.random() >= self.loss

    def _exchange(self, a, b):
        syn = a.gossip.syn()
        if not self._deliver(syn) or not b.alive:
            return
        ack = b.gossip.answer_syn(syn)
        if not self._deliver(ack):
            return
        _, push, beating, changed = a.gossip.on_ack(ack)
        a.learned(beating, changed, self.t)
        if push is not None and self._deliver(push):
            b.learned(*b.gossip.on_push(push), self.t)

    def run_until(self, t_end, on_round=None):
        while self.timers and self.timers[0][0] <= t_end:
            self.t, name = heapq.heappop(self.timers)
            node = self.nodes[name]
            if not node.alive:
                continue
            for address in node.gossip.targets():
                if address in self.nodes and address != name:
                    self._exchange(node, self.nodes[address])
            heapq.heappush(self.timers, (self.t + node.gossip.rng.uniform(0.8, 1.2), name))

    def join(self, name, seed):
        node = self._add(name)
        node.gossip.seeds = [seed]
        heapq.heappush(self.timers, (self.t, name))
        return node


def measure(size, loss, seed, max_rounds=60):
    out = {"nodes": size, "loss": loss}
    sim = Simulation(size, loss, seed)
    live_names = list(sim.nodes)

    # steady state: traffic and false suspicions over 20 rounds
    sim.run_until(5.0)
    sent0, bytes0, t0 = sim.sent, sim.bytes, sim.t
    rng = random.Random(seed)
    observers = live_names if size <= 100 else rng.sample(live_names, 100)
    checks = false = 0
    for second in range(6, 26):
        sim.run_until(float(second))
        for o in observers:
            node = sim.nodes[o]
            for m in live_names:
                if m != o:
                    checks += 1
                    false += node.detector.suspects(m, sim.t)
    rounds = sim.t - t0
    out["messages_per_node_round"] = round((sim.sent - sent0) / size / rounds, 2)
    out["bytes_per_node_round"] = round((sim.bytes - bytes0) / size / rounds)
    out["false_suspicion_checks"] = checks
    out["false_suspicions"] = false

    # a join through one seed
    start = sim.t
    sim.join("joiner", sim.seeds[0])
    for r in range(1, max_rounds + 1):
        sim.run_until(start + r)
        if all("joiner" in n.members.records for n in sim.nodes.values()):
            out["rounds_to_spread_a_join"] = r
            break
    else:
        out["rounds_to_spread_a_join"] = None

    # a failure: every other node suspects it
    victim = sim.nodes[live_names[-1]]
    victim.alive = False
    start = sim.t
    others = [n for n in sim.nodes.values() if n is not victim]
    for r in range(1, max_rounds + 1):
        sim.run_until(start + r)
        if all(n.detector.suspects(victim.name, sim.t) for n in others):
            out["rounds_until_all_suspect_a_failure"] = r
            break
    else:
        out["rounds_until_all_suspect_a_failure"] = None
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100,1000")
    p.add_argument("--loss", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args(argv)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        started = time.perf_counter()
        r = measure(size, args.loss, args.seed)
        r["wall_s"] = round(time.perf_counter() - started, 1)
        results.append(r)
        print(json.dumps(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
