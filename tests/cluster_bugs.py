"""Bugs of the cluster that tests show, each kept visible as a strict xfail until it is fixed
(or, where running it would stall the tests after it, skipped with its reason).

A test marked `cluster_bug(REASON)` must fail while the bug is there; once a fix makes it pass,
pytest reports XPASS(strict) as a failure and the mark goes.
"""
import pytest


def cluster_bug(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


# replies unlike redis-server
NO_EXPIRES = ("INFO keyspace reports expires=0 on a cluster node (QuorumCoordinator.expires "
              "returns 0)")
