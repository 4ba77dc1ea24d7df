"""Gossip: how membership records spread, as a sans-IO core (bytes in, bytes and decisions out).

Every round (a second by default) a node raises its own heartbeat and starts one exchange
with a random member it believes up, sometimes with one it believes down (so it notices the
member is back) and sometimes with a seed (so two groups started from different seeds heal
into one ring). An exchange is three messages, so only differences travel:

    SYN   A -> B: the cluster's partition count, A's name, A's digest — per known member
                  (name, generation, heartbeat, status version, status rank)
    ACK   B -> A: B's name, the records B holds newer than A's digest (or that A lacks),
                  and the names of which A's digest shows a newer record than B's
    PUSH  A -> B: A's records for those names

A digest entry is about 30 bytes, a record about 50: a round costs each node a digest of the
whole membership plus the records that changed (bench/bench_gossip.py measures it).

Layouts (little-endian; a blob is u32 length + bytes; strict decoding, ProtocolError on
anything short, long or unknown):

    SYN   u32 partitions, blob name, u32 count, count x (blob name, u64 generation,
          u64 heartbeat, u32 version, u8 status)
    ACK   blob name, u32 count, count x record, u32 count, count x blob name
    PUSH  u32 count, count x record
    record: blob name, blob address, u64 generation, u64 heartbeat, u32 version, u8 status
"""
from __future__ import annotations

import random
import struct

from fastdyn.cluster.membership import RANK, REMOVED, STATUSES, Member, Members
from fastdyn.errors import ProtocolError

__all__ = ["Gossip", "PartitionMismatch", "pack_syn", "unpack_syn", "pack_ack", "unpack_ack",
           "pack_push", "unpack_push"]

_U32 = struct.Struct("<I")
_DIGEST = struct.Struct("<QQIB")
_MAX_NAME = 1 << 16


class PartitionMismatch(ValueError):
    """A node of a cluster with another partition count: it cannot join this one."""


# -- encoding ----------------------------------------------------------------------------------
def _blob(raw: bytes) -> bytes:
    return _U32.pack(len(raw)) + raw


class _Reader:
    __slots__ = ("view", "at")

    def __init__(self, payload):
        self.view = memoryview(payload)
        self.at = 0

    def take(self, n: int, what: str):
        if n > len(self.view) - self.at:
            raise ProtocolError(f"gossip message truncated in {what}")
        part = self.view[self.at:self.at + n]
        self.at += n
        return part

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def text(self, what: str) -> str:
        n = self.u32(what)
        if n > _MAX_NAME:
            raise ProtocolError(f"gossip {what} of {n} bytes is too long")
        try:
            return bytes(self.take(n, what)).decode()
        except UnicodeDecodeError:
            raise ProtocolError(f"gossip {what} is not UTF-8") from None

    def count(self, what: str, least_bytes: int) -> int:
        n = self.u32(what)
        if n * least_bytes > len(self.view) - self.at:
            raise ProtocolError(f"gossip message truncated in {what}")
        return n

    def status(self, rank: int) -> str:
        if rank >= len(STATUSES):
            raise ProtocolError(f"gossip member status {rank} is unknown")
        return STATUSES[rank]

    def record(self) -> Member:
        name = self.text("member name")
        address = self.text("member address")
        generation, heartbeat, version, rank = _DIGEST.unpack(self.take(_DIGEST.size, "record"))
        return Member(name, address, generation, heartbeat, self.status(rank), version)

    def end(self) -> None:
        if self.at != len(self.view):
            raise ProtocolError(f"gossip message has {len(self.view) - self.at} trailing bytes")


def _pack_record(r: Member) -> bytes:
    return (_blob(r.name.encode()) + _blob(r.address.encode())
            + _DIGEST.pack(r.generation, r.heartbeat, r.version, RANK[r.status]))


def _pack_records(records) -> bytes:
    return _U32.pack(len(records)) + b"".join(_pack_record(r) for r in records)


def pack_syn(partitions: int, name: str, records) -> bytes:
    parts = [_U32.pack(partitions), _blob(name.encode()), _U32.pack(len(records))]
    parts += [_blob(r.name.encode()) + _DIGEST.pack(r.generation, r.heartbeat, r.version,
                                                    RANK[r.status]) for r in records]
    return b"".join(parts)


def unpack_syn(payload) -> tuple[int, str, dict]:
    """(partitions, sender name, {name: (liveness[:2], standing)})."""
    r = _Reader(payload)
    partitions = r.u32("partition count")
    sender = r.text("sender name")
    digest = {}
    for _ in range(r.count("digest", 4 + _DIGEST.size)):
        name = r.text("member name")
        generation, heartbeat, version, rank = _DIGEST.unpack(r.take(_DIGEST.size, "digest"))
        r.status(rank)
        digest[name] = ((generation, heartbeat), (version, rank))
    r.end()
    return partitions, sender, digest


def pack_ack(name: str, records, wanted) -> bytes:
    return (_blob(name.encode()) + _pack_records(records) + _U32.pack(len(wanted))
            + b"".join(_blob(n.encode()) for n in wanted))


def unpack_ack(payload) -> tuple[str, list, list]:
    r = _Reader(payload)
    name = r.text("responder name")
    records = [r.record() for _ in range(r.count("records", 8 + _DIGEST.size))]
    wanted = [r.text("wanted name") for _ in range(r.count("wanted names", 4))]
    r.end()
    return name, records, wanted


def pack_push(records) -> bytes:
    return _pack_records(records)


def unpack_push(payload) -> list:
    r = _Reader(payload)
    records = [r.record() for _ in range(r.count("records", 8 + _DIGEST.size))]
    r.end()
    return records


# -- decisions ---------------------------------------------------------------------------------
class Gossip:
    """One node's side of gossip. `up(name)` says whether this node believes a member up
    (its failure detector and its peer links); `seeds` are peer addresses."""

    def __init__(self, members: Members, seeds=(), up=lambda name: True, rng=None):
        self.members = members
        self.seeds = list(seeds)
        self.up = up
        self.rng = rng or random.Random()

    def forget_seed(self, address: str) -> None:
        """A seed that turned out to be this node itself."""
        if address in self.seeds:
            self.seeds.remove(address)

    def targets(self) -> list[str]:
        """Beat, then the peer addresses to send a SYN to this round."""
        members = self.members
        members.beat()
        live, down = [], []
        for name, record in members.records.items():
            if name != members.name and record.status != REMOVED:
                (live if self.up(name) else down).append(record.address)
        rng = self.rng
        out = []
        if live:
            out.append(rng.choice(live))
        if down and rng.random() < len(down) / (len(live) + 1):
            out.append(rng.choice(down))
        seeds = [s for s in self.seeds if s not in out]
        if seeds and (not live or (out[0] not in self.seeds
                                   and rng.random() < len(self.seeds) / (len(live) + len(down) + 1))):
            out.append(rng.choice(seeds))
        return out

    def syn(self) -> bytes:
        return pack_syn(self.members.partitions, self.members.name,
                        list(self.members.records.values()))

    def answer_syn(self, payload) -> bytes:
        """The ACK to a SYN received. A SYN from a node configured with another partition
        count raises PartitionMismatch."""
        partitions, sender, digest = unpack_syn(payload)
        if partitions != self.members.partitions:
            raise PartitionMismatch(
                f"node {sender} is configured with {partitions} partitions and this cluster "
                f"has {self.members.partitions}: it cannot join (start it with --partitions "
                f"{self.members.partitions} and an empty data directory)")
        newer, wanted = [], []
        for name, record in self.members.records.items():
            theirs = digest.get(name)
            if theirs is None:
                newer.append(record)
                continue
            mine = (record.liveness()[:2], record.standing())
            if mine[0] > theirs[0] or mine[1] > theirs[1]:
                newer.append(record)
            if theirs[0] > mine[0] or theirs[1] > mine[1]:
                wanted.append(name)
        wanted += [name for name in digest if name not in self.members.records]
        return pack_ack(self.members.name, newer, wanted)

    def on_ack(self, payload) -> tuple[str, bytes | None, list, list]:
        """An ACK to our SYN: (responder name, the PUSH to send or None, beating, changed)."""
        responder, records, wanted = unpack_ack(payload)
        beating, changed = self.members.merge(records)
        have = self.members.records
        push = [have[n] for n in wanted if n in have]
        return responder, (pack_push(push) if push else None), beating, changed

    def on_push(self, payload) -> tuple[list, list]:
        return self.members.merge(unpack_push(payload))
