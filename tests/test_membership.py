"""The member set: learned names make the ring, persist, and a restart keeps them."""
import pytest

from fastdyn.cluster.membership import Members
from fastdyn.ring import Ring


def test_members_persist_and_make_the_ring(tmp_path):
    m = Members(str(tmp_path), "a", "127.0.0.1:1", 64)
    seen = []
    m.on_change(seen.append)
    assert m.names() == ("a",)
    assert m.add("b", "127.0.0.1:2")
    assert not m.add("b", "127.0.0.1:2")
    assert not m.add("b", "127.0.0.1:3")          # a new address is not a new member
    assert m.add("c", "127.0.0.1:4")
    assert m.ring == Ring(["a", "b", "c"], 64) and seen[-1] == m.ring
    assert m.peers() == ["b", "c"] and m.address("b") == "127.0.0.1:3"

    again = Members(str(tmp_path), "a", "127.0.0.1:9", 64)
    assert again.names() == ("a", "b", "c")
    assert again.address("a") == "127.0.0.1:9"   # its own address is what it is told now


def test_other_partition_count_is_refused(tmp_path):
    Members(str(tmp_path), "a", "x:1", 64).add("b", "x:2")
    with pytest.raises(ValueError, match="64 partitions, not 256"):
        Members(str(tmp_path), "a", "x:1", 256)


def test_damaged_member_file_is_a_clear_error(tmp_path):
    (tmp_path / "members.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable member list"):
        Members(str(tmp_path), "a", "x:1", 64)
