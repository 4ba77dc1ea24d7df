"""Active preference list: the ring's preference list seen through what this node can reach.

Dynamo §4.6 (sloppy quorum): an operation goes to the first N *reachable* nodes of the key's
preference list. A reachable primary (one of the first N) is used as itself; for each
unreachable primary the next reachable node beyond the first N stands in for it and keeps the
write with a hint naming that primary, to be handed back when it is reachable again.

With fewer members than N the cluster keeps min(N, S) replicas, and R and W are clamped to that
(a single node is a cluster of one).
"""
from typing import NamedTuple


class Target(NamedTuple):
    node: str
    hint_for: str | None   # the unreachable primary this fallback stands in for, or None


class Quorum(NamedTuple):
    n: int
    r: int
    w: int


def effective(n: int, r: int, w: int, members: int) -> Quorum:
    """N, R and W clamped to the number of members (never below 1)."""
    n_eff = max(1, min(n, members))
    return Quorum(n_eff, max(1, min(r, n_eff)), max(1, min(w, n_eff)))


def active_targets(full_list, n: int, reachable) -> list[Target]:
    """The nodes an operation on a key goes to.

    full_list: the key's whole preference list (every member, in ring order); n: replicas;
    reachable(node) -> bool. Returns at most n targets: the reachable primaries in order, then
    one fallback per unreachable primary, each with the primary it holds a hint for. Fewer
    than n come back when too few members are reachable.
    """
    primaries = full_list[:n]
    targets = []
    missing = []
    for node in primaries:
        if reachable(node):
            targets.append(Target(node, None))
        else:
            missing.append(node)
    if missing:
        fallbacks = (node for node in full_list[n:] if reachable(node))
        for primary, node in zip(missing, fallbacks):
            targets.append(Target(node, primary))
    return targets
