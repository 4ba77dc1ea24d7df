"""What the store acknowledges survives fsync trouble, merges, a full disk and many segments.

The store's `fsync_hook` runs in place of fdatasync: the tests use it to record what each
fsync covered (a power loss keeps exactly that), to hold an fsync while another thread works,
and to make one fail.  A full disk is played by RLIMIT_FSIZE in a child process.
"""
import errno
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from conftest import HOST, fastdyn_argv, free_port, wait_for_port
from fastdyn.errors import DurabilityLost, PersistFailed
from fastdyn.storage import Store
from resp_client import RawClient, ServerClosed, error_word


class FsyncLog:
    """fsync_hook recording, per data file, the length the last completed fsync covered."""

    def __init__(self):
        self.durable = {}
        self.hold_thread = None          # name of a thread whose fsyncs wait for `release`
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = False

    def __call__(self, fd, name, length):
        if threading.current_thread().name == self.hold_thread:
            self.entered.set()
            self.release.wait(30)
        if self.fail:
            raise OSError(errno.EIO, "injected fsync failure")
        os.fdatasync(fd)
        self.durable[name] = max(self.durable.get(name, 0), length)

    def power_loss_copy(self, src, dst):
        """The directory as the disk holds it after a power loss: every data file cut back to
        what an fsync covered (hint files are written whole, fsynced, then renamed)."""
        os.makedirs(dst)
        for name in os.listdir(src):
            if name == "LOCK":
                continue
            with open(os.path.join(src, name), "rb") as f:
                data = f.read()
            if name.endswith(".data"):
                data = data[:self.durable.get(name, 0)]
            with open(os.path.join(dst, name), "wb") as f:
                f.write(data)


def segment_sizes(store):
    return {s["file"]: s["bytes"] for s in store.stats()["segments"]}


def test_fsync_waits_for_a_sealed_segment_another_thread_is_syncing(tmp_path):
    """A merge thread's fsync of a just-sealed segment is in flight (held here); a group
    commit that starts meanwhile must not count that segment as durable: it returns only
    after an fsync covering every segment's records has completed."""
    log = FsyncLog()
    s = Store(tmp_path / "db", sync="never", segment_bytes=4096, auto_merge=False)
    s.fsync_hook = log
    for i in range(60):                      # several sealed segments, none fsynced
        s.put(b"k%03d" % i, b"v" * 200)
    s.flush_buffer()
    log.hold_thread = "merger"
    merger = threading.Thread(target=s.merge, name="merger")
    merger.start()
    try:
        assert log.entered.wait(10)          # the merge thread's hint fsync is in flight
        written = segment_sizes(s)
        s.fsync()                            # the acknowledgement point of group commit
        for name, size in written.items():
            assert log.durable.get(name, 0) >= size, name
    finally:
        log.release.set()
        merger.join()
    s.close()


def test_failed_fsync_refuses_every_later_write_until_reopened(tmp_path):
    log = FsyncLog()
    s = Store(tmp_path / "db", sync="always", segment_bytes=4096, auto_merge=False)
    s.fsync_hook = log
    s.put(b"durable", b"1")
    log.fail = True
    with pytest.raises(DurabilityLost):
        s.put(b"lost", b"2")
    log.fail = False                         # the disk works again: nothing is vouched for
    with pytest.raises(DurabilityLost):
        s.put(b"after", b"3")
    with pytest.raises(DurabilityLost):
        s.delete(b"durable")
    with pytest.raises(DurabilityLost):
        s.fsync()
    with pytest.raises(DurabilityLost):
        with s.batch():
            pass
    assert s.get(b"durable") == b"1"         # reads go on
    assert s.get(b"after") is None
    with pytest.raises(DurabilityLost):
        s.close()
    with Store(tmp_path / "db", sync="always") as s:
        assert s.get(b"durable") == b"1"
        s.put(b"after", b"3")
        assert s.get(b"after") == b"3"


def test_one_failed_fsync_does_not_let_later_fsyncs_skip_segments(tmp_path):
    """Two sealed segments wait for their fsync; the first fails.  The second must not be
    skipped and then acknowledged by a later successful fsync."""
    log = FsyncLog()
    s = Store(tmp_path / "db", sync="never", segment_bytes=4096, auto_merge=False)
    s.fsync_hook = log
    for i in range(60):
        s.put(b"k%03d" % i, b"v" * 200)
    log.fail = True
    with pytest.raises(DurabilityLost):
        s.fsync()
    log.fail = False
    with pytest.raises(DurabilityLost):
        s.fsync()
    assert log.durable == {}
    with pytest.raises(DurabilityLost):
        s.close()


@pytest.mark.parametrize("flushed", [True, False])
def test_merge_keeps_a_durable_value_through_power_loss(tmp_path, flushed):
    """v1 is durable in segment A; v2 is written (or only buffered) but not fsynced; a merge
    drops v1 from A and deletes A.  After a power loss the key must still have a value."""
    log = FsyncLog()
    s = Store(tmp_path / "db", sync="never", segment_bytes=4096, auto_merge=False)
    s.fsync_hook = log
    s.put(b"key", b"v1")
    for i in range(40):                      # fill A and seal it
        s.put(b"fill%02d" % i, b"f" * 200)
    s.fsync()
    s.put(b"key", b"v2")
    if flushed:
        s.flush_buffer()
    victims = s._mergeable(True)
    assert victims
    s._merge_segments(victims)               # what the background merge thread runs
    log.power_loss_copy(s.path, tmp_path / "after")
    s.close()
    with Store(tmp_path / "after") as s2:
        assert s2.get(b"key") in (b"v1", b"v2")
        assert s2.get(b"fill39") == b"f" * 200


def test_merge_after_a_process_crash_keeps_a_durable_value_through_power_loss(tmp_path):
    """The newer version sits in a segment a crashed process wrote but never fsynced; the
    next process finds it at open and merges the old segment away: the newer segment must be
    fsynced before the old one goes."""
    log = FsyncLog()
    s = Store(tmp_path / "db", sync="never", segment_bytes=4096, auto_merge=False)
    s.fsync_hook = log
    s.put(b"key", b"v1")
    for i in range(40):
        s.put(b"fill%02d" % i, b"f" * 200)
    s.fsync()
    s.put(b"key", b"v2")
    s.flush_buffer()
    s._release_all()                         # the process dies: no flush, no fsync
    s = Store(tmp_path / "db", sync="never", segment_bytes=4096, auto_merge=False)
    s.fsync_hook = log
    assert s.get(b"key") == b"v2"
    s.merge()
    log.power_loss_copy(s.path, tmp_path / "after")
    s.close()
    with Store(tmp_path / "after") as s2:
        assert s2.get(b"key") in (b"v1", b"v2")


def _run_child(code, *args):
    """Run `code` in a child Python with SIGXFSZ ignored (so writes past RLIMIT_FSIZE fail
    with EFBIG instead of killing it); returns (exit status, stdout)."""
    script = "import signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n" + \
        textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


FULL_DISK = """
    import os, resource, sys
    from fastdyn.errors import PersistFailed
    from fastdyn.storage import Store
    path = sys.argv[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    s = Store(path, sync=sys.argv[2], auto_merge=False, compress_threshold=0)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, hard))   # a nearly full disk
    s.put(b"a", b"A" * 1000)
    s.flush_buffer()
    big = os.urandom(100 << 10)
    try:
        s.put(b"b", big)
        s.flush_buffer()
        print("b acknowledged")
    except PersistFailed as exc:
        print("b refused:", exc)
    assert s.get(b"a") == b"A" * 1000
    assert s.get(b"b") in (None, big)       # in doubt, and readable without a crash
    try:
        s.put(b"c", b"C")
        print("c acknowledged")
    except PersistFailed:
        print("c refused")
    assert s.get(b"c") is None
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))       # space returns
    s.put(b"c", b"C")
    s.close()
    with Store(path) as s:
        assert s.get(b"a") == b"A" * 1000 and s.get(b"c") == b"C"
        assert s.get(b"b") == big
    print("ok")
"""


@pytest.mark.parametrize("sync", ["always", "interval"])
def test_full_disk_refuses_writes_keeps_reads_and_resumes(tmp_path, sync):
    status, out = _run_child(FULL_DISK, tmp_path / "db", sync)
    assert status == 0, out
    assert "b refused" in out and "c refused" in out and out.rstrip().endswith("ok"), out


ROTATE_FAILS = """
    import os, resource, sys
    from fastdyn.errors import PersistFailed
    from fastdyn.storage import Store
    path = sys.argv[1]
    s = Store(path, sync="never", segment_bytes=256 << 10, auto_merge=False,
              compress_threshold=0)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.RLIM_INFINITY))
    def files():
        return sorted(os.listdir(path)), len(os.listdir("/proc/self/fd"))
    refused = 0
    for i in range(400):                     # crosses 256 KiB: rotation must seal
        before = files()
        try:
            s.put(b"k%d" % i, b"x" * 1000)
        except PersistFailed:
            refused += 1
            assert files() == before, (before, files())
    print("refused", refused)
"""


def test_failed_rotation_leaves_no_file_and_no_descriptor(tmp_path):
    status, out = _run_child(ROTATE_FAILS, tmp_path / "db")
    assert status == 0, out
    assert out.startswith("refused ") and int(out.split()[1]) > 1, out


def test_open_files_stay_bounded_with_many_segments(tmp_path):
    """Sealed, durable segments are read through their mapping: they hold no descriptor."""
    path = str(tmp_path / "db")

    def store_fds():
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                n += os.readlink(f"/proc/self/fd/{fd}").startswith(path)
            except OSError:
                pass
        return n

    with Store(path, sync="interval", segment_bytes=1024, auto_merge=False) as s:
        for i in range(3000):
            s.put(b"k%05d" % i, b"v" * 100)
        s.fsync()
        assert len(s.stats()["segments"]) > 300
        assert store_fds() <= 3               # LOCK, the active segment
    with Store(path, segment_bytes=1024, auto_merge=False) as s:
        assert store_fds() <= 3
        assert s.get(b"k00000") == b"v" * 100 and s.get(b"k02999") == b"v" * 100


def _fsize_limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, resource.RLIM_INFINITY))


@pytest.mark.parametrize("sync", ["always", "interval"])
def test_server_answers_misconf_on_a_full_disk_and_keeps_serving_reads(tmp_path, sync):
    port = free_port()
    data = tmp_path / "node"
    os.makedirs(data)
    with open(tmp_path / "node.log", "wb") as logf:
        proc = subprocess.Popen(fastdyn_argv(port, data, "--sync", sync), cwd=data,
                                stdout=logf, stderr=subprocess.STDOUT, preexec_fn=_fsize_limit)
    try:
        wait_for_port(port, proc)
        with RawClient(port) as c:
            assert c.call("SET", "a", "1") == ("simple", b"OK")
            try:                             # fills the disk: its outcome is unknown
                c.call("SET", "big", os.urandom(300 << 10))
            except (ServerClosed, ConnectionError):
                pass
        with RawClient(port) as c:
            reply = c.call("SET", "b", "2")
            assert error_word(reply) == b"MISCONF", reply
            assert c.call("GET", "a") == ("bulk", b"1")
            assert error_word(c.call("INCR", "n")) == b"MISCONF"
            assert error_word(c.call("DEL", "a")) == b"MISCONF"
            assert c.call("GET", "a") == ("bulk", b"1")
            assert c.call("GET", "b") == ("nullbulk",)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)     # the in-doubt record still cannot be written
        assert proc.wait(20) == 1
        log = (tmp_path / "node.log").read_text()
        assert "shut down without persisting the last writes" in log and "Traceback" not in log
    finally:
        proc.kill()
        proc.wait()
