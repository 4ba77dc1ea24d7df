"""The C path of a plain GET and SET (PlainPath, ext/_quorum.pyx) takes the targets and
quorum the coordinator's Python path takes, follows ring changes, and leaves the uncommon
cases (a peer down) to the Python path."""
from fastdyn.cluster.hlc import HybridClock
from fastdyn.cluster.membership import VALID, Member, Members
from fastdyn.cluster.quorum import QuorumCoordinator

KEYS = [b"k%d" % i for i in range(500)]


class Pool:
    down = 0

    def __init__(self):
        self.unreachable = set()

    def reachable(self, address):
        return address not in self.unreachable


class Replica:
    store = None


def coordinator(tmp_path, n=3, r=2, w=2):
    members = Members(str(tmp_path), "a", "h:1", 64)
    coord = QuorumCoordinator("a", Replica(), None, members, Pool(), HybridClock(), n=n, r=r,
                              w=w)
    return coord, members


def add(members, name):
    members.merge([Member(name, name + ":1", 1, 0, VALID, 0)])


def python_path(coord, key):
    q = coord.quorum()
    primaries, targets = coord._targets(key, q.n)
    return primaries, targets, q.r, q.w


def test_targets_and_quorum_match_the_python_path(tmp_path):
    coord, members = coordinator(tmp_path)
    plain = coord._plain
    for added in ["b", "c", "d", "e"]:
        for key in KEYS:
            assert plain.targets_of(key) == python_path(coord, key)
        add(members, added)         # a new ring: derived again at the next key
    assert plain.targets_of(KEYS[0])[2:] == (2, 2)


def test_one_member_clamps_the_quorum(tmp_path):
    coord, _ = coordinator(tmp_path, n=3, r=3, w=3)
    assert coord._plain.targets_of(b"key") == (("a",), [("a", None)], 1, 1)


def test_a_peer_down_or_an_unusual_key_takes_the_python_path(tmp_path):
    coord, members = coordinator(tmp_path)
    add(members, "b")
    plain = coord._plain
    assert plain.targets_of(b"key") is not None
    coord.pool.down = 1
    assert plain.targets_of(b"key") is None
    coord.pool.down = 0
    assert plain.targets_of(b"") is None
    assert plain.targets_of(b"x" * 65537) is None
    assert plain.targets_of("key") is None
    assert plain.targets_of(b"x" * 65536) is not None


def test_before_the_pool_is_there(tmp_path):
    coord, _ = coordinator(tmp_path)
    coord.pool = None
    assert coord._plain.targets_of(b"key") is None


def test_merge_of_agreeing_and_differing_replies():
    from fastdyn.cluster import object as vo
    from fastdyn.cluster.quorum import merge_encoded
    old = vo.encode_lww(1, b"old", 10, 0)
    new = vo.encode_lww(2, b"new", 20, 0)
    assert merge_encoded([None, b""]) is None
    assert merge_encoded([None, old, old]) == old
    assert merge_encoded([old, None, new]) == vo.encode(vo.sync(vo.decode(old), vo.decode(new)))
    assert merge_encoded(iter([new])) == new


def test_get_answer_reads_a_register_above_the_flush_epoch(tmp_path):
    from fastdyn.cluster import object as vo
    coord, _ = coordinator(tmp_path)
    coord.replica.flush_epoch = 15
    answer = coord._plain
    assert answer(None) is None
    assert answer(vo.encode_lww(1, b"v", 20, 0)) == b"v"
    assert answer(vo.encode_lww(1, b"v", 10, 0)) is None          # flushed
    with_expiry = vo.encode_lww(1, b"v", 20, (1 << 62))
    assert answer(with_expiry) == coord._value(with_expiry) == b"v"
