"""Record framing against forged records, format-1 segments, damaged hints, concurrent deletes,
a clear during a merge, and counting keys with an expiry."""
import os
import struct
import subprocess
import sys
import threading

from fastdyn._logstore import HEADER_BYTES, SEGMENT_HEADER_BYTES
from fastdyn.storage import Store, crc32c

F_TOMB, F_CLEAR = 1, 4
FIELDS = struct.Struct("<QQBII")          # timestamp, expiry, flags, key length, value length


def v1_record(key, value, flags=0, ts=1, expiry=0):
    """A record as format 1 wrote it: crc32c, then fields, key and value."""
    body = FIELDS.pack(ts, expiry, flags, len(key), len(value)) + key + value
    return struct.pack("<I", crc32c(body)) + body


def v2_record(magic, key, value, flags=0, ts=1, expiry=0):
    """A format-2 record for a given segment magic (what a client who knows the format but
    not the magic can build, with a guess)."""
    fields = FIELDS.pack(ts, expiry, flags, len(key), len(value))
    hcrc = crc32c(fields)
    return (struct.pack("<QII", magic, hcrc, crc32c(key + value, hcrc)) + fields + key + value)


def forged(payload_records, size=200_000):
    """A value that embeds whole records near its start, then incompressible filler."""
    head = b"x" * 37 + b"".join(payload_records)
    return head + os.urandom(size - len(head))


def guesses(key, value, flags=0, n=64):
    """The same record framed in format 1 and under n guessed format-2 magics."""
    out = [v1_record(key, value, flags)]
    for _ in range(n):
        out.append(v2_record(int.from_bytes(os.urandom(8), "little"), key, value, flags))
    out.append(v2_record(0, key, value, flags))
    return out


def data_files(path):
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".data"))


def test_header_sizes():
    assert HEADER_BYTES == 41 and SEGMENT_HEADER_BYTES == 20


def test_forged_clear_record_in_a_torn_value_is_not_replayed(tmp_path):
    path = str(tmp_path / "db")
    with Store(path, compress_threshold=0, segment_bytes=64 << 10) as s:
        for i in range(2000):
            s[b"key%05d" % i] = b"value%05d" % i
        s[b"evil"] = forged(guesses(b"", b"", F_CLEAR))
    last = data_files(path)[-1]
    os.truncate(last, os.path.getsize(last) - 1000)
    with Store(path) as s:
        rep = s.recovery_report
        assert rep["cleared"] == []
        assert [t["file"] for t in rep["truncated"]] == [os.path.basename(last)]
        assert len(s) == 2000
        assert all(s[b"key%05d" % i] == b"value%05d" % i for i in range(2000))
        assert b"evil" not in s


def test_forged_set_record_in_a_torn_value_is_not_replayed(tmp_path):
    path = str(tmp_path / "db")
    with Store(path, compress_threshold=0) as s:
        s[b"role:alice"] = b"user"
        s[b"bio:mallory"] = forged(guesses(b"role:alice", b"admin"))
    last = data_files(path)[-1]
    os.truncate(last, os.path.getsize(last) - 1000)
    with Store(path) as s:
        assert s[b"role:alice"] == b"user"
        assert list(s) == [b"role:alice"]


def test_forged_records_after_damage_in_the_middle(tmp_path):
    """A damaged record whose value embeds records: recovery, hint building and merge all skip
    to the next real record."""
    path = str(tmp_path / "db")
    evil = forged(guesses(b"role:alice", b"admin") + guesses(b"", b"", F_CLEAR), 50_000)
    with Store(path, compress_threshold=0, auto_merge=False) as s:
        for i in range(100):
            s[b"a%03d" % i] = b"1"
        s[b"role:alice"] = b"user"
        s[b"bio:mallory"] = evil
        for i in range(100):
            s[b"b%03d" % i] = b"2"
    (seg,) = data_files(path)
    data = open(seg, "rb").read()
    off = data.index(b"bio:mallory") - HEADER_BYTES
    with open(seg, "r+b") as f:              # the value length field: the header fails
        f.seek(off + 37)
        f.write(b"\xff")
    expect = {**{b"a%03d" % i: b"1" for i in range(100)}, b"role:alice": b"user",
              **{b"b%03d" % i: b"2" for i in range(100)}}
    with Store(path, merge_ratio=1.0, auto_merge=False) as s:
        rep = s.recovery_report
        assert rep["corrupt"] == [{"file": os.path.basename(seg), "offset": off,
                                   "bytes": HEADER_BYTES + len(b"bio:mallory") + len(evil)}]
        assert {k: s[k] for k in s} == expect
        s._background_merge()                 # below merge_ratio: only writes the hint
        assert s.stats()["merges"] == 0
    with Store(path, auto_merge=False) as s:
        assert s.recovery_report["from_hints"] == 1
        assert {k: s[k] for k in s} == expect
        assert s.merge() == 1                 # rewrites the segment from its records
    with Store(path) as s:
        assert s.recovery_report["corrupt"] == []
        assert {k: s[k] for k in s} == expect


def test_a_value_full_of_the_segment_magic_cannot_frame(tmp_path):
    """Even bytes equal to a real record of the segment (copied by someone who could read the
    file) only replay where a real record starts: the scan trusts a header's length."""
    path = str(tmp_path / "db")
    with Store(path, compress_threshold=0) as s:
        s[b"k"] = b"v"
    (seg,) = data_files(path)
    magic = struct.unpack_from("<Q", open(seg, "rb").read(), 8)[0]
    inner = v2_record(magic, b"k", b"forged")
    with Store(path, compress_threshold=0) as s:
        s[b"carrier"] = b"." * 10 + inner + b"." * 10
        s[b"z"] = b"last"
    with Store(path) as s:
        assert s[b"k"] == b"v" and s[b"z"] == b"last"
        assert s.recovery_report["corrupt"] == s.recovery_report["truncated"] == []


def test_segment_headers_are_not_dead_bytes(tmp_path):
    with Store(tmp_path / "db", segment_bytes=4096) as s:
        for i in range(200):
            s[b"k%d" % i] = b"v" * 40
        assert s.merge() == 0                 # nothing dead: nothing rewritten
        assert all(seg["dead_bytes"] == 0 for seg in s.stats()["segments"])
        s[b"k1"] = b"w"
        assert s.merge() == 1 and s.merge() == 0


def test_merge_of_a_segment_larger_than_one_copy_chunk_keeps_every_key(tmp_path):
    """A merge copies a victim in chunks of about 256 KiB, each written to an output with its
    own magic; every chunk of the victim is still read with the victim's magic."""
    path = tmp_path / "db"
    with Store(path, compress_threshold=0, auto_merge=False) as s:
        values = {b"k%d" % i: os.urandom(3000) for i in range(600)}
        for k, v in values.items():
            s[k] = v
        s[b"k0"] = values[b"k0"] = b"new"
        assert s.merge() == 1
        assert {k: s[k] for k in s} == values
    with Store(path) as s:
        assert {k: s[k] for k in s} == values


# ---- format 1 -------------------------------------------------------------------------------

def write_v1_store(path, records, hint=False):
    os.makedirs(path)
    open(os.path.join(path, "LOCK"), "w").close()
    with open(os.path.join(path, "FASTDYN-STORE"), "w") as f:
        f.write("fastdyn log-structured store, format 1\n")
    name = os.path.join(path, "%016x.data" % (1 << 20))
    with open(name, "wb") as f:
        f.write(b"".join(records))
    if hint:                                 # a format-1 hint: never trusted now
        with open(os.path.join(path, "%016x.hint" % (1 << 20)), "wb") as f:
            body = b"FDHINT01" + struct.pack("<Q", os.path.getsize(name)) + struct.pack("<Q", 0)
            f.write(body + struct.pack("<I", crc32c(body)))
    return name


def test_format_1_segments_are_read_and_migrated(tmp_path):
    path = str(tmp_path / "db")
    recs = [v1_record(b"k%d" % i, b"v%d" % i) for i in range(50)]
    recs += [v1_record(b"k3", b"", F_TOMB), v1_record(b"e", b"x", expiry=5)]
    name = write_v1_store(path, recs + [v1_record(b"torn", b"x" * 100)[:60]], hint=True)
    before = open(name, "rb").read()
    expect = {b"k%d" % i: b"v%d" % i for i in range(50) if i != 3}
    with Store(path, read_only=True) as s:        # converted in memory, nothing written
        assert {k: s[k] for k in s} == expect
        assert s.recovery_report["migrated"] == [os.path.basename(name)]
    assert open(name, "rb").read() == before
    with Store(path) as s:
        rep = s.recovery_report
        assert rep["migrated"] == [os.path.basename(name)]
        assert rep["truncated"] == [{"file": os.path.basename(name), "offset": len(b"".join(recs)),
                                     "bytes": 60}]
        assert {k: s[k] for k in s} == expect
        s[b"new"] = b"1"
    assert open(name, "rb").read(8) == b"FDSEG002"
    assert not os.path.exists(name[:-5] + ".hint")
    with Store(path) as s:
        assert s.recovery_report["migrated"] == [] and s.recovery_report["truncated"] == []
        assert {k: s[k] for k in s} == {**expect, b"new": b"1"}
        s.merge()
    with Store(path) as s:
        assert {k: s[k] for k in s} == {**expect, b"new": b"1"}


def test_format_1_damage_ends_what_is_trusted(tmp_path):
    """Format 1 has no magic: after a damaged record nothing is replayed, so a record forged in
    the damaged value cannot come back."""
    path = str(tmp_path / "db")
    bad = bytearray(v1_record(b"bio", b"." * 40 + v1_record(b"role", b"admin") + b"." * 40))
    bad[10] ^= 0xFF
    name = write_v1_store(path, [v1_record(b"role", b"user"), bytes(bad),
                                 v1_record(b"after", b"x")])
    with Store(path) as s:
        assert {k: s[k] for k in s} == {b"role": b"user"}
        (t,) = s.recovery_report["truncated"]
        assert t["file"] == os.path.basename(name) and t["offset"] == len(v1_record(b"role", b"user"))


# ---- hint files -----------------------------------------------------------------------------

def merged_store(path, n=300):
    with Store(path) as s:
        for i in range(n):
            s[b"k%d" % i] = b"v%d" % i
        s.merge()
    (hint,) = [os.path.join(path, x) for x in os.listdir(path) if x.endswith(".hint")]
    return hint, {b"k%d" % i: b"v%d" % i for i in range(n)}


def test_damaged_hint_entry_count_is_ignored(tmp_path):
    path = str(tmp_path / "db")
    hint, expect = merged_store(path)
    size = os.path.getsize(hint)
    with open(hint, "r+b") as f:
        f.seek(size - 12)
        f.write(struct.pack("<Q", 1 << 62))
    with Store(path) as s:
        assert s.recovery_report["hint_fallbacks"] == [os.path.basename(hint)]
        assert {k: s[k] for k in s} == expect


def rewrite_hint(hint, change):
    """Apply change(entries) to a hint's entries and give it a valid CRC again."""
    data = open(hint, "rb").read()
    head, body = data[:24], data[24:-12]
    entries, pos = [], 0
    while pos < len(body):
        off, size, expiry, flags, kl = struct.unpack_from("<IIQBI", body, pos)
        entries.append([off, size, expiry, flags, body[pos + 21:pos + 21 + kl]])
        pos += 21 + kl
    change(entries)
    out = head + b"".join(struct.pack("<IIQBI", o, s, e, f, len(k)) + k
                          for o, s, e, f, k in entries)
    out += struct.pack("<Q", len(entries))
    with open(hint, "wb") as f:
        f.write(out + struct.pack("<I", crc32c(out)))


def test_consistent_crc_but_impossible_hint_entries_are_rejected(tmp_path):
    def too_short(entries):
        entries[5][1] = HEADER_BYTES + len(entries[5][4]) - 1

    def past_the_end(entries):
        entries[-1][0] += 1 << 20

    def overlapping(entries):
        entries[7][0] = entries[6][0] + 1

    for i, change in enumerate((too_short, past_the_end, overlapping)):
        path = str(tmp_path / ("db%d" % i))
        hint, expect = merged_store(path)
        rewrite_hint(hint, change)
        with Store(path) as s:
            assert s.recovery_report["hint_fallbacks"] == [os.path.basename(hint)], change
            assert {k: s[k] for k in s} == expect


def test_hint_of_another_segment_is_rejected(tmp_path):
    path = str(tmp_path / "db")
    hint, expect = merged_store(path)
    data = bytearray(open(hint, "rb").read())
    data[16:24] = os.urandom(8)               # the magic of some other segment
    data[-4:] = struct.pack("<I", crc32c(bytes(data[:-4])))
    open(hint, "wb").write(bytes(data))
    with Store(path) as s:
        assert s.recovery_report["hint_fallbacks"] == [os.path.basename(hint)]
        assert {k: s[k] for k in s} == expect


# ---- threads --------------------------------------------------------------------------------

RACER = r"""
import sys, threading
from fastdyn.storage import Store

s = Store(sys.argv[1], segment_bytes=1024, sync="never", auto_merge=False)
keys = [b"k%d" % i for i in range(4)]
stop = False

def deleter():
    while not stop:
        for k in keys:
            s.delete(k)

def writer():
    for _ in range(100):
        for k in keys:
            s[k] = b"v" * 30
            s.delete(k)
            s[k] = b"w" * 30
            s.set_expiry(k, 0)

threads = [threading.Thread(target=deleter), threading.Thread(target=deleter)]
for t in threads:
    t.start()
writer()
stop = True
for t in threads:
    t.join()
for k in keys:
    s[k] = b"final"
s.close()
s = Store(sys.argv[1])
assert {k: s[k] for k in s} == {k: b"final" for k in keys}, dict(s.items())
print("ok")
"""


def test_concurrent_deletes_and_rotations_do_not_crash(tmp_path):
    r = subprocess.run([sys.executable, "-c", RACER, str(tmp_path / "db")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


def test_clear_does_not_wait_for_a_running_merge(tmp_path):
    """A merge stuck mid-way (its clock blocks) does not hold clear() up; it then gives up,
    and nothing it copied comes back."""
    path = str(tmp_path / "db")
    in_merge, release = threading.Event(), threading.Event()
    merging = []

    def clock():
        if threading.current_thread() in merging:
            in_merge.set()
            release.wait()
        return 1_700_000_000_000

    s = Store(path, clock=clock, segment_bytes=4096, auto_merge=False)
    for i in range(300):
        s[b"k%d" % i] = b"v" * 50
    for i in range(0, 300, 2):
        s[b"k%d" % i] = b"w" * 50
    t = threading.Thread(target=s.merge)
    merging.append(t)
    t.start()
    assert in_merge.wait(30)
    done = threading.Thread(target=s.clear)
    done.start()
    done.join(60)
    cleared_while_merging = not done.is_alive()
    release.set()
    done.join()
    t.join()
    assert cleared_while_merging
    assert len(s) == 0 and list(s) == []
    s[b"after"] = b"1"
    s.merge()
    s.close()
    with Store(path) as s:
        assert {k: s[k] for k in s} == {b"after": b"1"}


# ---- expiry bookkeeping ---------------------------------------------------------------------

class Clock:
    def __init__(self, now=1_700_000_000_000):
        self.now = now

    def __call__(self):
        return self.now


def test_len_and_stats_count_exactly_with_many_timers(tmp_path):
    """Keys given expiries again and again (stale timers), removed, persisted, expiring in
    waves: len() and stats() stay exact without sweeping the table."""
    clock = Clock()
    with Store(tmp_path / "db", clock=clock, sync="never") as s:
        model = {}
        for rnd in range(6):
            for i in range(3000):
                k = b"k%d" % (i % 1000)
                exp = clock.now + 1 + (i * 7 + rnd) % 50
                s.put(k, b"v", exp)
                model[k] = exp
            for i in range(0, 1000, 9):
                s.delete(b"k%d" % i)
                model.pop(b"k%d" % i, None)
            for i in range(1, 1000, 11):
                if s.set_expiry(b"k%d" % i, 0):
                    model[b"k%d" % i] = 0
            for step in (10, 20, 60):
                clock.now += step
                live = {k for k, e in model.items() if e == 0 or e > clock.now}
                assert len(s) == len(live)
                st = s.stats()
                assert st["keys"] == len(live)
                assert st["keys_with_expiry"] == sum(1 for k in live if model[k])
                assert sorted(s) == sorted(live)
            model = {k: e for k, e in model.items() if e == 0 or e > clock.now}
        assert s.stats()["keydir_bytes"] < 2_000_000
