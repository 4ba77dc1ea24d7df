"""The peer protocol's sans-IO parts: frame codec and message layouts."""
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdyn.errors import ProtocolError
from fastdyn.peer import messages as m
from fastdyn.peer.codec import (FLAG_ERROR, FLAG_RESPONSE, HEADER_SIZE, VERSION, FrameDecoder,
                                FrameEncoder, encode_frame, frame_spans)

frames_st = st.lists(st.tuples(st.integers(0, 255),
                               st.sampled_from([0, FLAG_RESPONSE, FLAG_RESPONSE | FLAG_ERROR]),
                               st.integers(0, 2 ** 32 - 1),
                               st.binary(max_size=300)), max_size=20)


def as_tuples(frames):
    return [(f.kind, f.flags, f.req_id, bytes(f.payload)) for f in frames]


def encode_all(frames):
    enc = FrameEncoder()
    for frame in frames:
        enc.add(*frame)
    return bytes(enc.take())


@given(frames_st, st.lists(st.integers(1, 50), max_size=40))
def test_frames_round_trip_whatever_the_chunking(frames, cuts):
    data = encode_all(frames)
    dec = FrameDecoder()
    got, pos = [], 0
    for size in cuts:
        got += dec.feed(data[pos:pos + size])
        pos += size
    got += dec.feed(data[pos:])
    assert as_tuples(got) == frames
    assert dec.buffered == 0


@settings(max_examples=300)
@given(frames_st, st.data())
def test_a_damaged_frame_stream_gives_frames_or_a_protocol_error(frames, data):
    stream = bytearray(encode_all(frames))
    if stream:
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    step = data.draw(st.integers(1, 64))
    dec = FrameDecoder(max_payload=4096)
    try:
        for pos in range(0, len(stream), step):
            for frame in dec.feed(bytes(stream[pos:pos + step])):
                assert len(frame.payload) <= 4096
    except ProtocolError:
        pass


def test_encoder_appends_frames_into_one_buffer_and_starts_empty_after_take():
    enc = FrameEncoder()
    enc.add(m.PING, 0, 1)
    enc.add(m.REPLICA_GET, 0, 2, m.pack_keys([b"a"]))
    data = enc.take()
    assert data == encode_frame(m.PING, 0, 1) + encode_frame(m.REPLICA_GET, 0, 2,
                                                             m.pack_keys([b"a"]))
    assert len(enc) == 0
    enc.add(m.PING, FLAG_RESPONSE, 3, memoryview(b"xy"))
    enc.add(m.PING, FLAG_RESPONSE, 4, bytearray(b"z"))
    assert as_tuples(FrameDecoder().feed(enc.take())) == [(m.PING, FLAG_RESPONSE, 3, b"xy"),
                                                         (m.PING, FLAG_RESPONSE, 4, b"z")]
    with pytest.raises(TypeError):
        enc.add(m.PING, 0, 5, "text")
    with pytest.raises(OverflowError):
        enc.add(256, 0, 5)
    assert [stop - start for start, stop in frame_spans(data)] == [HEADER_SIZE, HEADER_SIZE + 9]


def test_frames_from_a_bytearray_do_not_change_when_it_does():
    buf = bytearray(encode_frame(3, 0, 1, b"abc"))
    [frame] = FrameDecoder().feed(buf)
    buf[-3:] = b"xyz"
    assert bytes(frame.payload) == b"abc"
    assert FrameDecoder().feed(encode_frame(1, 0, 2))[0].payload == b""


def test_a_partial_frame_waits_for_the_rest():
    data = encode_frame(7, 0, 9, b"x" * 1000)
    dec = FrameDecoder()
    assert dec.feed(data[:5]) == []
    assert dec.feed(data[5:600]) == []
    assert dec.buffered == 600
    assert as_tuples(dec.feed(data[600:])) == [(7, 0, 9, b"x" * 1000)]


def header(length, version=VERSION, kind=1, flags=0, req_id=1):
    return struct.pack("<IBBBI", length, version, kind, flags, req_id)


@pytest.mark.parametrize("bad, message", [
    (header(0, version=2), "version 2"),
    (header(0, version=0), "version 0"),
    (header(0, flags=0x04), "unknown flags"),
    (header(0, flags=FLAG_ERROR), "without the response flag"),
    (header(1025), "exceeds the limit of 1024"),
])
def test_bad_headers_are_protocol_errors_and_the_decoder_stays_failed(bad, message):
    dec = FrameDecoder(max_payload=1024)
    with pytest.raises(ProtocolError, match=message):
        dec.feed(bad)
    with pytest.raises(ProtocolError, match=message):
        dec.feed(encode_frame(1, 0, 1))


def test_an_oversized_frame_is_refused_from_its_header_alone():
    dec = FrameDecoder(max_payload=1024)
    with pytest.raises(ProtocolError):
        dec.feed(header(2 ** 32 - 1))


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(1, 64))
def test_arbitrary_bytes_give_frames_or_a_protocol_error(data, step):
    dec = FrameDecoder(max_payload=4096)
    try:
        for pos in range(0, len(data), step):
            for frame in dec.feed(data[pos:pos + step]):
                assert frame.flags in (0, FLAG_RESPONSE, FLAG_RESPONSE | FLAG_ERROR)
                assert len(frame.payload) <= 4096
    except ProtocolError:
        pass


keys_st = st.lists(st.binary(max_size=40), max_size=10)


@given(keys_st)
def test_keys_round_trip(keys):
    assert m.unpack_keys(memoryview(m.pack_keys(keys))) == keys


@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=100)), max_size=10),
       st.sampled_from([0, m.PUT_DURABLE]))
def test_puts_round_trip(items, flags):
    got_flags, got = m.unpack_puts(memoryview(m.pack_puts(items, flags)))
    assert got_flags == flags
    assert [(k, bytes(o)) for k, o in got] == items


@given(st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=40),
                          st.binary(max_size=100)), max_size=10))
def test_hints_round_trip(items):
    got = m.unpack_hints(memoryview(m.pack_hints(items)))
    assert [(o, k, bytes(v)) for o, k, v in got] == items


@given(st.lists(st.tuples(st.sampled_from([m.OK, m.NOT_FOUND, m.ERROR]),
                          st.binary(max_size=100)), max_size=10))
def test_results_round_trip(results):
    got = m.unpack_results(memoryview(m.pack_results(results)))
    assert [(s, bytes(b)) for s, b in got] == results


def test_fields_may_be_any_bytes_like_and_payloads_bytes_or_views():
    payload = m.pack_puts([(bytearray(b"k1"), memoryview(b"o1")), (b"k2", b"o2")])
    flags, items = m.unpack_puts(payload)             # bytes, not a memoryview
    assert [(k, bytes(o)) for k, o in items] == [(b"k1", b"o1"), (b"k2", b"o2")]
    assert all(isinstance(k, bytes) and isinstance(o, memoryview) for k, o in items)
    assert m.unpack_keys(m.pack_keys((memoryview(b"a"), b"b"))) == [b"a", b"b"]
    with pytest.raises(TypeError):
        m.pack_keys(["a str key"])
    with pytest.raises(ValueError):
        m.pack_puts([], flags=0x80)
    with pytest.raises(ValueError):
        m.pack_results([(7, b"")])


def test_names_and_empty_payloads_round_trip():
    assert m.unpack_name(memoryview(m.pack_name("10.0.0.1:17000"))) == "10.0.0.1:17000"
    assert m.unpack_empty(memoryview(m.pack_empty())) is None


def test_flush_epochs_round_trip_and_refuse_bad_lengths():
    assert m.unpack_epoch(memoryview(m.pack_epoch(1795978361207741))) == 1795978361207741
    for bad in (b"", b"1234567", b"123456789"):
        with pytest.raises(ProtocolError):
            m.unpack_epoch(memoryview(bad))


def test_key_listing_requests_round_trip_and_refuse_bad_lengths():
    assert m.unpack_listing(memoryview(m.pack_listing(2**64 - 1, 10))) == (2**64 - 1, 10)
    with pytest.raises(ProtocolError):
        m.unpack_listing(memoryview(b"\0" * 11))


def test_every_kind_has_a_record_with_its_code():
    assert sorted(m.KINDS) == [m.PING, m.HELLO, m.REPLICA_GET, m.REPLICA_PUT, m.HINT, m.FLUSH,
                                m.KEYS, m.COORDINATE, m.GOSSIP_SYN, m.GOSSIP_PUSH,
                                m.HANDOFF_DONE, m.HANDOFF_STATUS, m.AE_TREE, m.AE_LISTING,
                                m.AE_DONE, m.AE_ROOTS, m.KEY_COUNTS]
    for code, kind in m.KINDS.items():
        assert kind.code == code


@pytest.mark.parametrize("unpack, payload, message", [
    (m.unpack_keys, b"\x01\x00\x00", "batch count"),
    (m.unpack_keys, struct.pack("<II", 1, 5) + b"abc", "key"),
    (m.unpack_keys, struct.pack("<I", 0) + b"!", "trailing"),
    (m.unpack_keys, struct.pack("<I", 2 ** 32 - 1), "key"),
    (m.unpack_puts, b"", "put flags"),
    (m.unpack_puts, b"\x80" + struct.pack("<I", 0), "unknown flags"),
    (m.unpack_puts, b"\x00" + struct.pack("<II", 1, 1) + b"k", "object"),
    (m.unpack_results, struct.pack("<IBI", 1, 9, 0), "unknown status"),
    (m.unpack_results, struct.pack("<IB", 1, 0), "result"),
    (m.unpack_hints, struct.pack("<II", 1, 1) + b"\xff" + struct.pack("<II", 0, 0),
     "not UTF-8"),
    (m.unpack_name, struct.pack("<I", 2) + b"\xc3(", "not UTF-8"),
    (m.unpack_name, struct.pack("<I", 3) + b"ab", "truncated"),
    (m.unpack_empty, b"x", "trailing"),
])
def test_malformed_payloads_are_protocol_errors(unpack, payload, message):
    with pytest.raises(ProtocolError, match=message):
        unpack(memoryview(payload))


@settings(max_examples=300)
@given(st.sampled_from(sorted(m.KINDS)), st.booleans(), st.binary(max_size=120))
def test_arbitrary_payloads_unpack_or_raise_protocol_error(code, response, payload):
    kind = m.KINDS[code]
    unpack = kind.unpack_response if response else kind.unpack_request
    try:
        unpack(memoryview(payload))
    except ProtocolError:
        pass


@settings(max_examples=300)
@given(st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), min_size=1,
                max_size=5), st.data())
def test_damaged_valid_payloads_unpack_or_raise_protocol_error(items, data):
    payload = bytearray(m.pack_puts(items))
    cut = data.draw(st.integers(0, len(payload)))
    at = data.draw(st.integers(0, len(payload) - 1))
    payload[at] = data.draw(st.integers(0, 255))
    for damaged in (bytes(payload), bytes(payload[:cut])):
        for unpack in (m.unpack_puts, m.unpack_keys, m.unpack_hints, m.unpack_results):
            try:
                unpack(memoryview(damaged))
            except ProtocolError:
                pass


@given(st.binary(min_size=1, max_size=40), st.binary(max_size=40), st.binary(max_size=60),
       st.booleans(), st.one_of(st.none(), st.integers(0, 254)),
       st.one_of(st.none(), st.integers(0, 254)), st.integers(0, 2 ** 64 - 1))
def test_a_forwarded_dyn_put_round_trips(key, context, value, tombstone, w, dw, ttl):
    payload = m.pack_coordinate(m.DYN_PUT, key, (context, value, tombstone, w, dw, ttl))
    assert m.unpack_coordinate(memoryview(payload)) == (
        m.DYN_PUT, key, (context, value, tombstone, w, dw, ttl))
    with pytest.raises(ProtocolError):
        m.unpack_coordinate(memoryview(payload[:-1]))


@given(st.binary(min_size=1, max_size=40),
       st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), max_size=20))
def test_a_forwarded_counter_batch_round_trips(key, deltas):
    payload = m.pack_coordinate(m.INCR, key, deltas)
    assert m.unpack_coordinate(memoryview(payload)) == (m.INCR, key, deltas)
    with pytest.raises(ProtocolError):
        m.unpack_coordinate(memoryview(payload + b"x"))


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=30)), max_size=5),
       st.lists(st.binary(max_size=30), max_size=5))
def test_anti_entropy_tree_messages_round_trip(requests, replies):
    assert [(p, bytes(r)) for p, r in
            m.unpack_tree_requests(memoryview(m.pack_tree_requests(requests)))] == requests
    assert [bytes(b) for b in m.unpack_blobs(memoryview(m.pack_blobs(replies)))] == replies


@given(st.dictionaries(st.integers(0, 2**32 - 1),
                       st.lists(st.integers(0, 2**32 - 1), max_size=6), max_size=5),
       st.dictionaries(st.binary(min_size=1, max_size=20), st.integers(0, 2**32 - 1),
                       max_size=8))
def test_anti_entropy_listing_messages_round_trip(segments, digests):
    assert m.unpack_segments(memoryview(m.pack_segments(segments))) == segments
    assert m.unpack_digests(memoryview(m.pack_digests(list(digests.items())))) == digests


@given(st.lists(st.integers(0, 2**32 - 1), max_size=300),
       st.lists(st.integers(0, 2**64 - 1), max_size=300))
def test_anti_entropy_roots_messages_round_trip(partitions, roots):
    assert m.unpack_partitions(memoryview(m.pack_partitions(partitions))) == partitions
    assert m.unpack_roots(memoryview(m.pack_roots(roots))) == roots


def test_key_count_messages_round_trip():
    assert m.unpack_count_request(memoryview(m.pack_count_request(256))) == 256
    assert m.unpack_counts(memoryview(m.pack_counts([0, 7, 2**64 - 1]))) == [0, 7, 2**64 - 1]


@pytest.mark.parametrize("unpack, payload", [
    (m.unpack_count_request, b"\x01\x00"),
    (m.unpack_counts, struct.pack("<IQ", 2, 7)),
    (m.unpack_partitions, b"\x01\x00"),
    (m.unpack_partitions, struct.pack("<II", 2, 7)),
    (m.unpack_partitions, struct.pack("<II", 0, 7)),
    (m.unpack_roots, struct.pack("<IQ", 2, 7)),
    (m.unpack_roots, struct.pack("<I", 1) + b"\0" * 7),
])
def test_short_array_messages_refuse_bad_lengths(unpack, payload):
    with pytest.raises(ProtocolError):
        unpack(memoryview(payload))


@given(st.text(max_size=20), st.integers(0, 2**64 - 1),
       st.lists(st.integers(0, 2**32 - 1), max_size=6))
def test_anti_entropy_done_round_trips(name, start, partitions):
    assert m.unpack_exchanged(memoryview(m.pack_exchanged((name, start, partitions)))) == (
        name, start, partitions)
