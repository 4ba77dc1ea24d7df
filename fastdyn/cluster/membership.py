"""Who is in the cluster: one record per member, a merge rule gossip applies, and the ring.

A member's record has two parts, each owned by someone else and each merged by taking the
larger of two versions, so merging is commutative, associative and idempotent (a join
semilattice: gossip may deliver records in any order, any number of times):

- liveness — (generation, heartbeat, address), owned by the member itself. The generation is
  raised at every start (to the wall clock in seconds at least, so a node whose data directory
  was wiped still outranks what the others remember of it); the heartbeat counts gossip rounds
  within a generation; the address is what the member advertises now.
- status — (version, status), changed by an explicit membership change (join, leave, removal)
  on any node, which raises the version. Status ranks joining < valid < leaving < removed, so
  of two changes with the same version the later stage wins.

"Down" is not a status: whether a member answers is each node's own opinion (the failure
detector and the peer pool), never a membership change — as in Dynamo.

**The ring and its changes.** The ring is the ring function of the *owners*: members valid or
leaving. A membership change is pending while a member is joining or leaving; changes run one
at a time (the smallest (status version, name) first, so every node picks the same one), and
`next_ring` is the ring once it is done. `moves` maps each partition whose preference list
differs between the two rings to its (giver, receiver) pairs: each node entering the list gets
the partition from the node it replaces there, so a write acknowledged by W of the old replicas
is on W of the new ones after the handoff (fastdyn/cluster/handoff.py). A joining member turns
valid, and a leaving member removed, once every receiver of the change (a reshuffle of the ring
may move partitions between other members too) has acknowledged every partition it awaits. The view is persisted in
the data directory (`members.json`) on every change of membership or address, so a restarted
node routes every key as before — even while some members are down — and comes back under its
own name with a higher generation.
"""
import json
import os
import time
import zlib
from typing import NamedTuple

from fastdyn.cluster.statefile import StateFile
from fastdyn.ring import Ring

FILE = "members.json"

JOINING, VALID, LEAVING, REMOVED = "joining", "valid", "leaving", "removed"
STATUSES = (JOINING, VALID, LEAVING, REMOVED)
RANK = {status: rank for rank, status in enumerate(STATUSES)}


class Member(NamedTuple):
    name: str
    address: str
    generation: int
    heartbeat: int
    status: str
    version: int

    def liveness(self) -> tuple:
        return (self.generation, self.heartbeat, self.address)

    def standing(self) -> tuple:
        return (self.version, RANK[self.status])


def merge_member(a: Member, b: Member) -> Member:
    """The larger liveness and the larger status of two records of the same member."""
    live = a if a.liveness() >= b.liveness() else b
    stand = a if a.standing() >= b.standing() else b
    if live is stand:
        return live
    return live._replace(status=stand.status, version=stand.version)


def moves(ring: Ring, next_ring: Ring, n: int) -> dict[int, list[tuple[str, str]]]:
    """partition -> [(giver, receiver), ...] for every node that enters the partition's first
    n (clamped to the ring size) between ring and next_ring, given by the node it replaces
    (by the first old replica when none is replaced: the ring grew below n)."""
    out = {}
    n_now, n_next = min(n, len(ring)), min(n, len(next_ring))
    for p in range(ring.partition_count):
        now = ring.preference_list(p, n_now)
        later = next_ring.preference_list(p, n_next)
        entering = [x for x in later if x not in now]
        if entering:
            exiting = [x for x in now if x not in later]
            out[p] = [(exiting[i] if i < len(exiting) else now[0], x)
                      for i, x in enumerate(entering)]
    return out


class Members:
    """This node's view of the membership. `merge(records)` folds in what gossip brought and
    says what changed; the rest of the node asks `ring`, `names()`, `peers()`, `address()`."""

    def __init__(self, data_dir: str | None, name: str, address: str, partitions: int,
                 now_s=time.time, replicas: int = 3, background: bool = False,
                 first_status: str = VALID):
        """data_dir None keeps the view in memory only (a simulation); background: saves
        are written by a thread (statefile.py), as a serving node needs; first_status: this
        node's status when the data directory knows no membership yet."""
        self.path = None if data_dir is None else os.path.join(data_dir, FILE)
        self._file = None if data_dir is None else StateFile(self.path, background)
        self.name = name
        self.partitions = partitions
        self.replicas = replicas
        self.records: dict[str, Member] = {}
        self._listeners = []
        self.load()
        own = self.records.get(name)
        generation = max(int(now_s()), own.generation + 1 if own else 0)
        self.records[name] = Member(name, address, generation, 0,
                                    own.status if own else first_status,
                                    own.version if own else 0)
        self.ring = self._make_ring(self._owners())
        self.change = None          # (name, status, version, ring crc) of the pending change
        self.next_ring = None
        self.moves = {}             # partition -> [(giver, receiver), ...] while it is pending
        self._planned = None
        self._plan()
        if self._file is not None:
            self._file.background, background = False, self._file.background
            self.save()                 # the new generation is on disk before the node serves
            self._file.background = background

    # -- persistence -----------------------------------------------------------------------
    def load(self) -> None:
        if self.path is None:
            return
        try:
            with open(self.path) as f:
                saved = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: unreadable member list: {exc}") from None
        if saved.get("partitions", self.partitions) != self.partitions:
            raise ValueError(f"{self.path}: this data directory belongs to a cluster of "
                             f"{saved['partitions']} partitions, not {self.partitions}")
        try:
            for name, entry in saved.get("members", {}).items():
                if isinstance(entry, str):      # a static member list of an earlier release
                    entry = {"address": entry}
                self.records[name] = Member(name, entry["address"],
                                            int(entry.get("generation", 0)), 0,
                                            entry.get("status", VALID),
                                            int(entry.get("version", 0)))
                if self.records[name].status not in RANK:
                    raise ValueError(f"status {self.records[name].status!r}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{self.path}: unreadable member list: bad entry ({exc!r})") \
                from None

    def save(self) -> None:
        if self._file is None:
            return
        members = {r.name: {"address": r.address, "generation": r.generation,
                            "status": r.status, "version": r.version}
                   for r in self.records.values()}
        self._file.save(json.dumps({"partitions": self.partitions, "members": members},
                                   indent=1).encode())

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    # -- changes ---------------------------------------------------------------------------
    def on_change(self, fn) -> None:
        """fn(ring) after every change of the ring's member set."""
        self._listeners.append(fn)

    def merge(self, records) -> tuple[list[str], list[str]]:
        """Fold in records of any members. Returns (names whose heartbeat or generation
        advanced — evidence that they live —, names whose record changed otherwise: new,
        moved, or of another status)."""
        beating, changed = [], []
        for theirs in records:
            mine = self.records.get(theirs.name)
            if mine is None:
                merged = theirs
            else:
                merged = merge_member(mine, theirs)
                if merged == mine:
                    continue
            if theirs.name == self.name:
                merged = self._reassert(merged)
            self.records[theirs.name] = merged
            if mine is None or (merged.address, merged.standing()) != (mine.address,
                                                                      mine.standing()):
                changed.append(theirs.name)
            if (mine is not None and theirs.name != self.name
                    and merged.liveness()[:2] > mine.liveness()[:2]):
                beating.append(theirs.name)
        if changed:
            self._changed()
        return beating, changed

    def _reassert(self, merged: Member) -> Member:
        """A record of this node from elsewhere: its status is taken (someone ran a
        membership change on it), but liveness is this node's own: a generation or address
        somebody remembers from before is outranked."""
        own = self.records[self.name]
        if merged.liveness() > own.liveness():
            own = own._replace(generation=merged.generation + 1, heartbeat=0)
        if own.status == JOINING and merged.status == REMOVED:
            # asked to join again under a name the cluster knows as removed: the join is the
            # later change
            return own._replace(version=max(own.version, merged.version + 1))
        return own._replace(status=merged.status, version=merged.version)

    def set_status(self, name: str, status: str) -> Member:
        """An explicit membership change of `name` (known), decided on this node."""
        if status not in RANK:
            raise ValueError(f"unknown member status {status!r}")
        record = self.records[name]
        record = self.records[name] = record._replace(status=status,
                                                      version=record.version + 1)
        self._changed()
        return record

    def beat(self) -> Member:
        """This node's next heartbeat (once per gossip round)."""
        own = self.records[self.name]
        own = self.records[self.name] = own._replace(heartbeat=own.heartbeat + 1)
        return own

    def _changed(self) -> None:
        self.save()
        ring = self._make_ring(self._owners())
        if ring.members != self.ring.members:
            self.ring = ring
            self._plan()
            for fn in self._listeners:
                fn(ring)
        else:
            self._plan()

    def _owners(self) -> list[str]:
        owners = [n for n, r in self.records.items() if r.status in (VALID, LEAVING)]
        # a node that only knows itself joining still routes through itself
        return owners or [n for n, r in self.records.items() if r.status != REMOVED]

    def _make_ring(self, names) -> Ring:
        return Ring(sorted(names), self.partitions)

    def _plan(self) -> None:
        """The pending change, the ring after it and the partitions it moves."""
        pending = sorted((r.version, n) for n, r in self.records.items()
                         if r.status in (JOINING, LEAVING))
        change = None
        if pending:
            record = self.records[pending[0][1]]
            change = (record.name, record.status, record.version)
        if (change, self.ring) == self._planned:
            return
        self._planned = (change, self.ring)
        if change is not None:
            # the owners it starts from are part of the change: nodes that see it from
            # different rings must not take each other's handoffs for theirs
            change += (zlib.crc32("\n".join(self.ring.members).encode()),)
        self.change = change
        if change is None:
            self.next_ring, self.moves = None, {}
            return
        owners = set(self.ring.members)
        if change[1] == JOINING:
            owners.add(change[0])
        else:
            owners.discard(change[0])
        self.next_ring = self._make_ring(owners) if owners else self.ring
        self.moves = moves(self.ring, self.next_ring, self.replicas)

    # -- questions -------------------------------------------------------------------------
    def names(self) -> tuple[str, ...]:
        """The ring's members."""
        return self.ring.members

    def peers(self) -> list[str]:
        return [n for n in self.ring.members if n != self.name]

    def address(self, name: str) -> str:
        return self.records[name].address

    def status(self, name: str) -> str:
        return self.records[name].status

    def own(self) -> Member:
        return self.records[self.name]

    def __len__(self) -> int:
        return len(self.ring.members)
