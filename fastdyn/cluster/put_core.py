"""The decision half of a replicated write (riak_kv's put_core): pure, no I/O.

The coordinator sends the write to its targets and feeds each outcome here; the core says when
the write has succeeded (W acknowledgements, DW of them durable) or can no longer succeed.
"""
PENDING, OK, FAILED = 0, 1, 2


class PutCore:
    """Acknowledgements of one write until W (and DW durable ones) are met or out of reach."""

    __slots__ = ("asked", "w", "dw", "acks", "durable", "failed", "outcome")

    def __init__(self, asked: int, w: int, dw: int = 0):
        self.asked = asked
        self.w = w
        self.dw = dw
        self.acks = 0
        self.durable = 0
        self.failed = 0
        self.outcome = PENDING
        self._decide()

    def ack(self, durable: bool = False) -> int:
        self.acks += 1
        self.durable += durable
        return self._decide()

    def fail(self) -> int:
        self.failed += 1
        return self._decide()

    def _decide(self) -> int:
        if self.outcome == PENDING:
            if self.acks >= self.w and self.durable >= self.dw:
                self.outcome = OK
            else:
                left = self.asked - self.acks - self.failed
                if self.acks + left < self.w or self.durable + left < self.dw:
                    self.outcome = FAILED
        return self.outcome

    def error(self) -> str:
        """The client's error line for a failed write: who answered out of how many needed."""
        if self.acks < self.w:
            return (f"ERR quorum not reached: {self.acks} of {self.w} required replicas "
                    f"acknowledged the write ({self.asked} reachable)")
        return (f"ERR quorum not reached: {self.durable} of {self.dw} required replicas "
                f"made the write durable ({self.asked} reachable)")
