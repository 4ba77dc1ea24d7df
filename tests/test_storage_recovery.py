"""Damaged segment files: torn tails, bit flips, bad hints; and the record format itself."""
import os
import struct
import subprocess
import sys

from hypothesis import given, settings, strategies as st

from fastdyn._logstore import HEADER_BYTES, SEGMENT_HEADER_BYTES
from fastdyn.storage import Store, crc32c

# magic, header crc, crc, timestamp, expiry, flags, key length, value length
HEADER = struct.Struct("<QIIQQBII")
SEGMENT_HEADER = struct.Struct("<8sQI")     # b"FDSEG002", magic, crc
assert HEADER.size == HEADER_BYTES and SEGMENT_HEADER.size == SEGMENT_HEADER_BYTES


def records(path):
    """(offset, size, key) of every record of a segment file, parsed independently."""
    data = open(path, "rb").read()
    tag, magic, hcrc = SEGMENT_HEADER.unpack_from(data, 0)
    assert tag == b"FDSEG002" and hcrc == crc32c(data[:16])
    out, pos = [], SEGMENT_HEADER.size
    while pos + HEADER.size <= len(data):
        m, hcrc, crc, ts, exp, flags, kl, vl = HEADER.unpack_from(data, pos)
        size = HEADER.size + kl + vl
        assert m == magic
        assert hcrc == crc32c(data[pos + 16:pos + HEADER.size])
        assert crc == crc32c(data[pos + 16:pos + size])
        out.append((pos, size, data[pos + HEADER.size:pos + HEADER.size + kl]))
        pos += size
    assert pos == len(data)
    return out


def segments(path):
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".data"))


def fill(path, n=200, **opts):
    with Store(path, **opts) as s:
        for i in range(n):
            s[b"k%03d" % i] = b"value-%03d" % i + b"." * 40
    return {b"k%03d" % i: b"value-%03d" % i + b"." * 40 for i in range(n)}


def flip(path, offset, mask=0x10):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ mask]))


def test_crc32c_known_vector_and_portable_path():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@given(st.binary(max_size=300), st.integers(0, 299))
@settings(max_examples=200, deadline=None)
def test_crc32c_hardware_equals_table_and_extends(data, cut):
    cut = min(cut, len(data))
    assert crc32c(data) == crc32c(data, portable=True)
    assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data)


def test_torn_tail_is_truncated_and_reported(tmp_path):
    path = str(tmp_path / "db")
    expect = fill(path)
    seg = segments(path)[-1]
    recs = records(seg)
    last_off, last_size, last_key = recs[-1]
    os.truncate(seg, last_off + last_size - 7)       # a partial last record
    with Store(path) as s:
        rep = s.recovery_report
        assert rep["truncated"] == [{"file": os.path.basename(seg), "offset": last_off,
                                     "bytes": last_size - 7}]
        assert rep["corrupt"] == []
        del expect[last_key]
        assert {k: s[k] for k in s} == expect
        s[b"after"] = b"ok"                            # the repaired file takes appends
    assert os.path.getsize(seg) >= last_off
    with Store(path) as s:
        assert s[b"after"] == b"ok" and len(s) == len(expect) + 1
        assert s.recovery_report["truncated"] == []


def test_bad_crc_at_the_end_is_a_torn_tail(tmp_path):
    path = str(tmp_path / "db")
    expect = fill(path)
    seg = segments(path)[-1]
    off, size, key = records(seg)[-1]
    flip(seg, off + size - 1)
    with Store(path) as s:
        assert [t["offset"] for t in s.recovery_report["truncated"]] == [off]
        del expect[key]
        assert {k: s[k] for k in s} == expect


def test_bit_flip_in_the_middle_skips_one_record(tmp_path):
    path = str(tmp_path / "db")
    expect = fill(path)
    seg = segments(path)[-1]
    recs = records(seg)
    off, size, key = recs[len(recs) // 2]
    flip(seg, off + size - 3)                          # inside the value
    with Store(path) as s:
        rep = s.recovery_report
        assert rep["corrupt"] == [{"file": os.path.basename(seg), "offset": off, "bytes": size}]
        assert rep["truncated"] == []
        del expect[key]
        assert {k: s[k] for k in s} == expect


def test_damaged_length_field_resynchronises(tmp_path):
    path = str(tmp_path / "db")
    expect = fill(path)
    seg = segments(path)[-1]
    recs = records(seg)
    off, size, key = recs[10]
    flip(seg, off + 37 + 2, 0x40)                      # value length now huge
    with Store(path) as s:
        assert [c["offset"] for c in s.recovery_report["corrupt"]] == [off]
        del expect[key]
        assert {k: s[k] for k in s} == expect


def test_damage_in_an_older_segment(tmp_path):
    path = str(tmp_path / "db")
    expect = fill(path, n=400, segment_bytes=4096)
    segs = segments(path)
    assert len(segs) > 3
    off, size, key = records(segs[1])[3]
    flip(segs[1], off + 30)
    with Store(path) as s:
        assert [c["offset"] for c in s.recovery_report["corrupt"]] == [off]
        del expect[key]
        assert {k: s[k] for k in s} == expect


def test_overwritten_key_falls_back_to_older_version_when_newest_is_corrupt(tmp_path):
    path = str(tmp_path / "db")
    with Store(path) as s:
        s[b"k"] = b"old"
        s[b"x"] = b"1"
        s[b"k"] = b"new"
        s[b"y"] = b"2"
    seg = segments(path)[-1]
    off, size, key = records(seg)[2]
    assert key == b"k"
    flip(seg, off + size - 1)
    with Store(path) as s:
        assert s[b"k"] == b"old" and s[b"x"] == b"1" and s[b"y"] == b"2"


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=5), st.integers(1, 255))
@settings(max_examples=30, deadline=None)
def test_random_damage_never_breaks_open(tmp_path_factory, offsets, mask):
    """Any flipped bytes: open succeeds, reports, and every undamaged record survives."""
    path = str(tmp_path_factory.mktemp("db"))
    expect = fill(path, n=100)
    seg = segments(path)[-1]
    recs = records(seg)
    total = os.path.getsize(seg)
    damaged = set()
    for o in {o % total for o in offsets}:     # each byte once: a second flip would undo it
        flip(seg, o, mask)
        damaged.update(k for off, size, k in recs if off <= o < off + size)
    with Store(path) as s:
        rep = s.recovery_report
        assert rep["corrupt"] or rep["truncated"]
        for k, v in expect.items():
            if k not in damaged:
                assert s[k] == v
        for k in s:
            assert s[k] == expect[k]   # a damaged key is absent, never wrong


def test_inspect_cli(tmp_path):
    path = str(tmp_path / "db")
    fill(path, n=50)
    seg = segments(path)[-1]
    off, size, _ = records(seg)[-1]
    os.truncate(seg, off + 3)
    cmd = [sys.executable, "-m", "fastdyn", "inspect"]
    r = subprocess.run(cmd + [path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "keys            49" in r.stdout
    assert "torn tail truncated" in r.stdout
    assert os.path.getsize(seg) == off + 3            # inspect changes nothing
    with Store(path):
        r = subprocess.run(cmd + [path], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "locked by another process" in r.stderr
    r = subprocess.run(cmd + [str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a fastdyn data directory" in r.stderr
    r = subprocess.run(cmd + [path, "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and '"keys": 49' in r.stdout


def test_merge_after_an_interrupted_merge(tmp_path):
    """An interrupted merge leaves its output right after the segment it was merging; the next
    merge must still find room for its own output (it takes that segment along)."""
    import shutil
    path = str(tmp_path / "db")
    expect = fill(path, n=100)
    (first,) = segments(path)
    seg_id = int(os.path.basename(first)[:16], 16)
    # the state after a crash: a complete copy of the segment, placed just after it
    shutil.copy(first, os.path.join(path, "%016x.data" % (seg_id + 1)))
    with Store(path) as s:
        s[b"more"] = b"x"
        expect[b"more"] = b"x"
        assert s.merge() >= 1
        assert {k: s[k] for k in s} == expect
    assert not os.path.exists(first)
    with Store(path) as s:
        assert {k: s[k] for k in s} == expect


def test_damaged_segment_header_and_first_record_lose_only_that_record(tmp_path):
    """The segment's magic is recovered from the records that follow when both of its other
    copies (the header and the first record) are damaged."""
    path = str(tmp_path / "db")
    expect = fill(path, n=100)
    seg = segments(path)[-1]
    recs = records(seg)
    first_off, _, first_key = recs[0]
    flip(seg, 8, 1)                   # inside the header's copy of the magic
    flip(seg, first_off + 16, 1)      # inside the first record's header
    with Store(path) as s:
        for k, v in expect.items():
            if k != first_key:
                assert s[k] == v
        assert first_key not in s


def test_merge_drops_a_live_record_that_went_bad_instead_of_pointing_past_it(tmp_path):
    """A record damaged on disk after it was indexed cannot be copied by a merge: its key is
    dropped (counted), never left pointing into the retired segment, and the rest moves."""
    path = str(tmp_path / "db")
    with Store(path, segment_bytes=4096, auto_merge=False) as s:
        for i in range(200):
            s[b"k%03d" % i] = b"value-%03d" % i + b"." * 40
        for i in range(0, 200, 2):                 # dead bytes: the sealed segments qualify
            s[b"k%03d" % i] = b"new-%03d" % i
        expect = {k: s[k] for k in s}
        victim = segments(path)[0]
        offset, size, key = next(r for r in records(victim) if r[2] in (b"k001", b"k003"))
        flip(victim, offset + size - 1)            # the value's last byte: the body CRC fails
        assert s.merge() >= 1
        assert not os.path.exists(victim)
        assert s.stats()["merge_dropped_records"] == 1
        assert s.get(key) is None
        del expect[key]
        assert {k: s[k] for k in s} == expect
    with Store(path) as s:
        assert {k: s[k] for k in s} == expect
