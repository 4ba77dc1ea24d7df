"""Per-key order in front of the quorum coordinator.

A quorum operation completes later, and a read-modify-write (INCR, SETNX, APPEND, EXPIRE ...)
is a read followed by a write. Run as they arrive, two operations on one key could interleave:
an INCR pipelined behind a SET could read before the SET's replicas have it, two INCRs through
one node could read the same total and one increment would be lost, and a read could merge
replies that already hold a later command's write. Redis runs one command after another; this
keeps the order that matters per key on each coordinator:

- a read starts once every earlier write of the key has finished (it sees them); a GET
  queued behind plain writes answers with the latest of them once it is acknowledged (that
  write won over every earlier one), without a read quorum, and reads when it failed;
- a plain write (SET, MSET: last-writer-wins, stamped by this node's clock, so a later one
  always wins over an earlier one whatever their delivery) starts once every earlier read and
  read-modify-write has finished (none of them sees it), without waiting for earlier plain
  writes;
- a read-modify-write starts once everything earlier on the key has finished;
- a compound command (MSETNX, RENAME, COPY ...: a read, a decision, then writes, each a
  quorum operation) holds all its keys for its whole chain, as one read-modify-write of each;
  RANDOMKEY, like FLUSHDB, SCAN, KEYS and DBSIZE, holds the whole keyspace.

The operations of a key form a queue of groups, each waiting for the one before it: a group of
reads, a group of plain writes, or one read-modify-write. Reads of a key run in parallel with
each other, plain writes too, and operations on different keys always do; an operation on an
idle key starts at once. Read-modify-writes of one kind queued behind the same group (a hot
key's INCRs, its SET NX or GETSETs) run as one: one read, each command's decision in arrival
order, one write, so a key's throughput does not fall to one command per two round trips.
Multi-key commands without a decision (MGET, MSET, DEL) run per key, each in its key's order;
all their per-key operations are queued at once, so no later command comes between them.

`OrderedCoordinator` is a C class (ext/_ordering.pyx): every client operation of a cluster node
passes through it.
"""
from fastdyn._ordering import OrderedCoordinator  # noqa: F401
