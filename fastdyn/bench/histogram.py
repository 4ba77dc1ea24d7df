"""Latency histograms: log-linear buckets (HdrHistogram's layout with ~2 significant digits).

Workers record nanoseconds into the same bucket layout in C (fastdyn._bench); here the
buckets are merged across processes and intervals and turned into percentiles. Merging is
adding counts, so a merged histogram equals one fed all the samples directly.
"""
import numpy as np

from fastdyn._bench import HIST_BUCKETS, hist_index

SUB_BITS = 7
SUB = 1 << SUB_BITS


def _bucket_bounds():
    """Lowest and highest nanosecond value of every bucket."""
    idx = np.arange(HIST_BUCKETS, dtype=np.int64)
    shift = np.maximum(idx // SUB - 1, 0)
    low = np.where(idx < 2 * SUB, idx, (idx % SUB + SUB) << shift)
    high = np.where(idx < 2 * SUB, idx, low + (1 << shift) - 1)
    return low.astype(np.float64), high.astype(np.float64)


BUCKET_LOW, BUCKET_HIGH = _bucket_bounds()
BUCKET_MID = (BUCKET_LOW + BUCKET_HIGH) / 2


class Histogram:
    """Counts of latencies (ns) per bucket, plus the exact maximum."""

    __slots__ = ("counts", "max_ns")

    def __init__(self, counts=None, max_ns: int = 0):
        self.counts = (np.zeros(HIST_BUCKETS, dtype=np.int64) if counts is None
                       else np.asarray(counts, dtype=np.int64).copy())
        self.max_ns = int(max_ns)

    @classmethod
    def from_samples(cls, samples_ns) -> "Histogram":
        samples = np.asarray(samples_ns, dtype=np.uint64)
        h = cls()
        np.add.at(h.counts, hist_index(samples), 1)
        h.max_ns = int(samples.max()) if samples.size else 0
        return h

    @classmethod
    def from_sparse(cls, sparse) -> "Histogram":
        index, counts, max_ns = sparse
        h = cls(max_ns=max_ns)
        h.counts[np.asarray(index, dtype=np.int64)] = counts
        return h

    def to_sparse(self):
        """(bucket indexes, counts, max): what a worker sends over its pipe."""
        index = np.flatnonzero(self.counts)
        return index.astype(np.int32), self.counts[index], self.max_ns

    def merge(self, other: "Histogram") -> "Histogram":
        self.counts += other.counts
        self.max_ns = max(self.max_ns, other.max_ns)
        return self

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def percentile(self, p: float) -> float:
        """The latency (ns) at or below which p percent of the samples fall.

        Like HdrHistogram, the answer is the highest value equivalent to the sample's bucket
        (never an under-estimate by more than the bucket width), capped by the exact maximum.
        """
        total = self.total
        if total == 0:
            return float("nan")
        rank = max(1, int(np.ceil(p / 100.0 * total)))
        bucket = int(np.searchsorted(np.cumsum(self.counts), rank))
        return float(min(BUCKET_HIGH[bucket], self.max_ns))

    def mean(self) -> float:
        total = self.total
        return float((self.counts * BUCKET_MID).sum() / total) if total else float("nan")

    def cdf(self):
        """(latency ns, cumulative fraction) at every non-empty bucket."""
        index = np.flatnonzero(self.counts)
        cumulative = np.cumsum(self.counts[index]) / max(self.total, 1)
        return np.minimum(BUCKET_HIGH[index], self.max_ns or BUCKET_HIGH[index]), cumulative
