"""Bugs of the cluster that tests show, each kept visible as a strict xfail until it is fixed
(or, where running it would stall the tests after it, skipped with its reason).

A test marked `cluster_bug(REASON)` must fail while the bug is there; once a fix makes it pass,
pytest reports XPASS(strict) as a failure and the mark goes.
"""
import pytest


def cluster_bug(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


# replies unlike redis-server
EXPIRY_RANGE = ("a cluster node refuses PEXPIREAT k 9223372036854775807 ('ERR expiry ... out of "
                "range': object.py keeps expiries below 2**63 us), which redis-server accepts")

# ordering of several coordinator operations
COMPOUND_UNORDERED = (
    "MSETNX, RENAME, RENAMENX, COPY and RANDOMKEY are chains of several coordinator operations "
    "(a read, then writes): in a pipeline, the operations of the next command on the same keys "
    "can run between them, so that command misses their writes")
HOT_KEY_OVERLOAD = (
    "16 pipelines of read-modify-writes on three hot keys (9,600 operations) run one after "
    "another per key; under that load replica requests pass the 2 s peer deadline, the peers "
    "are marked unreachable and some commands answer quorum errors")
