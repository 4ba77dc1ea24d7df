"""Fault injection on a node's outgoing peer traffic (tc netem is not available here).

One `Faults` object belongs to one node and is shared by its pool and its peer server; a rule
names the peer the frames go to (its node name), so each rule is a (this node, peer) pair. A
two-way partition sets a rule on both nodes. Rules change at runtime and apply from the next
write; with no rule set the transport pays one truthiness test per write.
"""
from __future__ import annotations

import random

from fastdyn.errors import FaultRuleError
from fastdyn.peer.codec import frame_spans

__all__ = ["Faults", "FaultRule"]


class FaultRule:
    """What happens to frames sent to one peer: all dropped (partitioned), each dropped with
    `drop` probability, and those kept held back `delay_s` seconds."""

    __slots__ = ("partitioned", "drop", "delay_s")

    def __init__(self):
        self.partitioned = False
        self.drop = 0.0
        self.delay_s = 0.0

    def as_dict(self) -> dict:
        return {"partitioned": self.partitioned, "drop": self.drop,
                "delay_ms": self.delay_s * 1000.0}


class Faults:
    __slots__ = ("rules", "random", "dropped")

    def __init__(self, seed=None):
        self.rules: dict[str, FaultRule] = {}
        self.random = random.Random(seed)
        self.dropped = 0          # frames dropped so far, for tests and INFO

    def _rule(self, peer: str) -> FaultRule:
        rule = self.rules.get(peer)
        if rule is None:
            rule = self.rules[peer] = FaultRule()
        return rule

    def partition(self, peer: str) -> None:
        """Drop every frame to `peer`."""
        self._rule(peer).partitioned = True

    def drop(self, peer: str, probability: float) -> None:
        """Drop each frame to `peer` with this probability (0 stops dropping)."""
        if not 0.0 <= probability <= 1.0:
            raise FaultRuleError(f"drop probability must be within 0..1, got {probability!r}")
        self._rule(peer).drop = float(probability)

    def delay(self, peer: str, ms: float) -> None:
        """Hold frames to `peer` back this many milliseconds (0 stops delaying)."""
        if not ms >= 0:
            raise FaultRuleError(f"delay must be a non-negative number of ms, got {ms!r}")
        self._rule(peer).delay_s = ms / 1000.0

    def heal(self, peer: str | None = None) -> None:
        """Remove the rules for `peer`, or every rule."""
        if peer is None:
            self.rules.clear()
        else:
            self.rules.pop(peer, None)

    def describe(self) -> dict:
        return {peer: rule.as_dict() for peer, rule in self.rules.items()}

    def apply(self, peer, data):
        """(bytes to send, delay in seconds) for a batch of frames to `peer`; the bytes may be
        empty when every frame was dropped."""
        rule = self.rules.get(peer)
        if rule is None:
            return data, 0.0
        if rule.partitioned:
            self.dropped += len(frame_spans(data))
            return b"", 0.0
        if rule.drop:
            kept = []
            chance = self.random.random
            for start, stop in frame_spans(data):
                if chance() < rule.drop:
                    self.dropped += 1
                else:
                    kept.append(data[start:stop])
            data = b"".join(kept)
        return data, rule.delay_s
