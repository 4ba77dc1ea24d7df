"""The decision half of a replicated read (riak_kv's get_core): pure, no I/O.

Replies are canonical object encodings (bytes; None when a replica holds nothing), so two
replicas agree exactly when their bytes are equal. The read answers as soon as R replicas have
replied, with the merge of what they sent; replies that arrive afterwards still count for read
repair: once every asked replica has answered (or the deadline passed), every replica whose
object differs from the merge of all replies is sent that merge.
"""
from fastdyn.cluster.put_core import FAILED, OK, PENDING


class GetCore:
    __slots__ = ("asked", "r", "merge", "replies", "failed", "outcome", "result")

    def __init__(self, asked: int, r: int, merge):
        """merge(list of bytes or None) -> bytes or None: the sync of every reply."""
        self.asked = asked
        self.r = r
        self.merge = merge
        self.replies = {}
        self.failed = 0
        self.outcome = PENDING
        self.result = None
        self._decide()

    def reply(self, node: str, obj) -> int:
        self.replies[node] = obj
        return self._decide()

    def fail(self, node: str) -> int:
        self.failed += 1
        return self._decide()

    @property
    def finished(self) -> bool:
        """Every asked replica has answered or failed: read repair can run."""
        return len(self.replies) + self.failed >= self.asked

    def _decide(self) -> int:
        if self.outcome == PENDING:
            if len(self.replies) >= self.r:
                self.outcome = OK
                self.result = self.merge(list(self.replies.values()))
            elif self.asked - self.failed < self.r:
                self.outcome = FAILED
        return self.outcome

    def repairs(self):
        """(merged, [nodes whose reply differs]) over every reply received so far."""
        merged = self.merge(list(self.replies.values()))
        if merged is None:
            return None, []
        return merged, [node for node, obj in self.replies.items() if obj != merged]

    def error(self) -> str:
        return (f"ERR quorum not reached: {len(self.replies)} of {self.r} required replicas "
                f"answered the read ({self.asked} reachable)")
