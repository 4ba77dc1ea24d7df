"""Who is in the cluster: member names, their peer addresses, and the ring they make.

The coordinator asks only this object, so the source of the member set can change (a static
list learned from --seeds today, gossip later) without touching it. The set is persisted in the
data directory (`members.json`), so a restarted node knows every member — and so routes every
key as before — even while some of them are down.

A node learns a member's name by dialling a seed's peer address and exchanging HELLOs; every
node may be given the same seed list, itself included: a HELLO that answers with the node's own
name is the node itself and never makes a second member.
"""
import json
import os

from fastdyn.ring import Ring

FILE = "members.json"


class Members:
    def __init__(self, data_dir: str, name: str, address: str, partitions: int):
        self.path = os.path.join(data_dir, FILE)
        self.name = name
        self.partitions = partitions
        self._addresses = {name: address}
        self._listeners = []
        self.load()
        self._addresses[name] = address
        self.ring = Ring(sorted(self._addresses), partitions)

    def load(self) -> None:
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
        self._addresses.update(saved.get("members", {}))

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"partitions": self.partitions, "members": self._addresses}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def on_change(self, fn) -> None:
        """fn(ring) after every change of the member set."""
        self._listeners.append(fn)

    def add(self, name: str, address: str) -> bool:
        """Learn a member (or a member's new address); True when the ring changed."""
        known = self._addresses.get(name)
        if known == address:
            return False
        self._addresses[name] = address
        self.save()
        if known is not None:
            return False
        self.ring = Ring(sorted(self._addresses), self.partitions)
        for fn in self._listeners:
            fn(self.ring)
        return True

    def names(self) -> tuple[str, ...]:
        return self.ring.members

    def peers(self) -> list[str]:
        return [n for n in self.ring.members if n != self.name]

    def address(self, name: str) -> str:
        return self._addresses[name]

    def __len__(self) -> int:
        return len(self._addresses)
