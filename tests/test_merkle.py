"""Merkle trees: incremental == rebuilt, diff finds exactly the differing keys, wire formats."""
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from fastdyn.cluster.merkle import (FORMAT_VERSION, MerkleDiff, MerkleTree, diff_keys, digest,
                                    digests)
from fastdyn.errors import MerkleFormatError, ProtocolError

keys = st.binary(min_size=1, max_size=12)
stores = st.dictionaries(keys, st.binary(max_size=8), max_size=200)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def tree_of(store, depth=2, fanout=8):
    tree = MerkleTree(depth=depth, fanout=fanout)
    tree.fold(list(store), digests(list(store), list(store.values())))
    return tree


def listing(store, tree, segments):
    wanted = set(segments)
    return {k: digest(k, v) for k, v in store.items() if tree.segment_of(k) in wanted}


@given(stores, stores)
@SETTINGS
def test_incremental_updates_equal_a_rebuild(start, end):
    tree = tree_of(start)
    for k in set(start) | set(end):
        old = digest(k, start[k]) if k in start else 0
        new = digest(k, end[k]) if k in end else 0
        tree.update(k, old, new)
    assert tree == tree_of(end)
    assert tree.root == tree_of(end).root


@given(stores, st.data())
@SETTINGS
def test_diff_finds_exactly_the_differing_keys(base, data):
    ours = dict(base)
    theirs = dict(base)
    changes = data.draw(st.lists(st.tuples(st.sampled_from(["put", "del", "add"]), keys,
                                           st.binary(max_size=8)), max_size=20))
    for op, k, v in changes:
        side = data.draw(st.sampled_from([ours, theirs]))
        if op == "del":
            side.pop(k, None)
        else:
            side[k] = v
    a, b = tree_of(ours), tree_of(theirs)
    # Over the wire, sans-IO: only requests and replies as bytes.
    walk = MerkleDiff(a)
    request = walk.next_request()
    while request is not None:
        walk.feed(b.answer(request))
        request = walk.next_request()
    assert walk.done
    segments = walk.segments
    assert segments == a.diff(b) == sorted(b.diff(a))
    expected = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    assert diff_keys(listing(ours, a, segments), listing(theirs, b, segments)) == expected
    if not expected:
        assert a.root == b.root and segments == []


def test_descends_only_where_hashes_differ():
    store = {b"key%d" % i: b"v" for i in range(5000)}
    a = tree_of(store, depth=3, fanout=16)
    changed = dict(store)
    changed[b"key17"] = b"w"
    b = tree_of(changed, depth=3, fanout=16)
    walk = MerkleDiff(a)
    request = walk.next_request()
    while request is not None:
        walk.feed(b.answer(request))
        request = walk.next_request()
    assert walk.segments == [a.segment_of(b"key17")]
    assert walk.requested_nodes == 1 + 16 + 16 + 16   # root, then one fan per level


@given(stores, st.sampled_from([(1, 2), (2, 8), (3, 16), (1, 256)]))
@settings(max_examples=30, deadline=None)
def test_serialisation_round_trips(store, shape):
    depth, fanout = shape
    tree = tree_of(store, depth, fanout)
    data = tree.to_bytes()
    assert data[0] == FORMAT_VERSION
    again = MerkleTree.from_bytes(data)
    assert again == tree and again.root == tree.root
    for i in range(depth + 1):
        assert again.level(i) == tree.level(i)
    assert len(tree.level(depth)) == 8 * fanout ** depth


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_garbage_never_crashes(data):
    tree = tree_of({b"a": b"1"})
    for parse in (MerkleTree.from_bytes, tree.answer, MerkleDiff(tree).feed):
        try:
            parse(data)
        except MerkleFormatError as exc:
            assert str(exc)


def test_malformed_inputs_have_clear_errors():
    tree = tree_of({b"a": b"1", b"b": b"2"})
    good = tree.to_bytes()
    with pytest.raises(MerkleFormatError, match="too short"):
        MerkleTree.from_bytes(b"\x01T")
    with pytest.raises(MerkleFormatError, match="version 9"):
        MerkleTree.from_bytes(b"\x09" + good[1:])
    with pytest.raises(MerkleFormatError, match="expected a Merkle 'T'"):
        MerkleTree.from_bytes(good[:1] + b"Q" + good[2:])
    with pytest.raises(MerkleFormatError, match="expected"):
        MerkleTree.from_bytes(good[:-1])
    with pytest.raises(MerkleFormatError, match="bad shape"):
        MerkleTree.from_bytes(struct.pack("<BcHB", 1, b"T", 3, 2) + bytes(72))
    other = MerkleTree(depth=3, fanout=16)
    request = MerkleDiff(other).next_request()
    with pytest.raises(MerkleFormatError, match="fanout 16, depth 3"):
        tree.answer(request)
    with pytest.raises(MerkleFormatError, match="names node 99"):
        tree.answer(struct.pack("<BcHBBI", 1, b"Q", 8, 2, 1, 1) + struct.pack("<I", 99))
    walk = MerkleDiff(tree)
    walk.next_request()
    with pytest.raises(MerkleFormatError, match="does not answer"):
        walk.feed(struct.pack("<BcHBBI", 1, b"R", 8, 2, 1, 1) + bytes(8))
    assert issubclass(MerkleFormatError, ProtocolError)
    assert issubclass(MerkleFormatError, ValueError)


def test_bad_shapes_and_arguments():
    with pytest.raises(ValueError, match="power of two"):
        MerkleTree(fanout=3)
    with pytest.raises(ValueError, match="depth"):
        MerkleTree(depth=0)
    with pytest.raises(ValueError, match="2\\*\\*24"):
        MerkleTree(depth=7, fanout=16)
    with pytest.raises(ValueError, match="must be an int"):
        MerkleTree(depth="2")
    with pytest.raises(ValueError, match="same fanout"):
        MerkleTree(2, 8).diff(MerkleTree(3, 8))
    with pytest.raises(ValueError, match="out of range"):
        MerkleTree(2, 8).level(3)
    with pytest.raises(TypeError, match="must be bytes or str"):
        digest(1, b"v")
    with pytest.raises(ValueError, match="2 keys but 1 versions"):
        digests([b"a", b"b"], [b"v"])


def test_digest_is_nonzero_and_depends_on_both_parts():
    assert digest(b"k", b"v") != 0
    assert digest(b"k", b"v") != digest(b"k", b"w") != digest(b"j", b"w")
    assert digest(b"ab", b"c") != digest(b"a", b"bc")
    assert digests([b"k"], [b"v"]).tolist() == [digest(b"k", b"v")]
    assert digest("k", "v") == digest(b"k", b"v")
