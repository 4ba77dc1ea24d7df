"""Bugs of the cluster that tests show, each kept visible as a strict xfail until it is fixed.

A test marked `cluster_bug(REASON)` must fail while the bug is there; once a fix makes it pass,
pytest reports XPASS(strict) as a failure and the mark goes.
"""
import pytest


def cluster_bug(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


# durability against kill -9
HINTS_NOT_DURABLE = (
    "hints a coordinator keeps are lost by its kill -9: HintStore.add only fills the hint "
    "store's buffer and nothing writes it out before the client gets its acknowledgement, so "
    "the replica the hints were for never receives those writes")
REPLICA_ACK_NOT_DURABLE = (
    "a replica acknowledges a REPLICA_PUT before the write reaches the OS: ReplicaHandler "
    "replies right after Store.put, which only fills the store's buffer, and the peer "
    "listener has no group commit; a kill -9 of the replica then loses writes it acknowledged, "
    "and no hint was kept for them")

# read-modify-write through one coordinator
INCR_RACE = (
    "concurrent INCRs through one coordinator lose increments: QuorumCoordinator.incr reads "
    "the object, adds the delta to this node's P/N total and writes it back; two INCRs in "
    "flight at once read the same total, and the per-node max merge keeps only one of them")
SAME_COORDINATOR = (
    "an acknowledged DYN.PUT is lost when another DYN.PUT of the same key runs through the "
    "same coordinator at the same time: QuorumCoordinator.dyn_put reads a quorum, then "
    "writes causal_write(read object) whose clock takes the coordinator's new dot into "
    "vv[node]; the other put's dot from that node, written after the read, is then covered "
    "without having been seen and sync drops it")
NX_RACE = (
    "SET NX from several connections at once through one node has several winners (300 "
    "winners for 100 keys from 8 connections): read quorum, decide, write, with nothing "
    "ordering two commands on one key even inside one coordinator; docs/cluster.md states "
    "this non-atomicity only for clients on different nodes")
UNORDERED = ("a cluster node does not apply one connection's commands in order: a "
             "read-modify-write command (INCR, SET NX/GET, APPEND, EXPIRE, GETDEL, RENAME, ...) "
             "reads a quorum and writes when the replies arrive, while the next pipelined "
             "command, or the next command of an EXEC, already runs and misses its effect; and "
             "a pipelined read (TTL after SET EX 100) merges remote replies that already hold "
             "the writes of later commands in the pipeline")
# replies unlike redis-server
DEL_TWICE = ("DEL/UNLINK naming one key twice count it twice on a cluster node "
             "(QuorumCoordinator.delete does not deduplicate its keys)")
NO_EXPIRES = ("INFO keyspace reports expires=0 on a cluster node (QuorumCoordinator.expires "
              "returns 0)")
EXPIRY_RANGE = ("a cluster node refuses PEXPIREAT k 9223372036854775807 ('ERR expiry ... out of "
                "range': object.py keeps expiries below 2**63 us), which redis-server accepts")

# whole-keyspace commands
LOCAL_KEYSPACE = ("DBSIZE, KEYS and SCAN on a cluster node cover only the keys that node holds a "
                  "replica of (QuorumCoordinator.size/keys/scan read the local store): with five "
                  "nodes and N=3 each node answers about three fifths of the keys")
