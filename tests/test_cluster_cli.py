"""`fastdyn cluster up/down`: local nodes started detached, listening, then stopped."""
import json
import os
import subprocess
import sys
import time

from conftest import free_port
from resp_client import RawClient


def consecutive_free_ports(k):
    for _ in range(50):
        base = free_port()
        if all(free_port_pair_ok(base + i) for i in range(k)):
            return base
    raise RuntimeError("no run of free ports")


def free_port_pair_ok(port):
    import socket

    for p in (port, port + 10000):
        if p > 65535:
            return False
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def fastdyn(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "fastdyn", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_cluster_up_detached_then_down(tmp_path):
    base = consecutive_free_ports(3)
    root = tmp_path / "c"
    r = fastdyn("cluster", "up", "--nodes", "3", "--base-port", str(base), "--data-dir",
                str(root), "--detach")
    assert r.returncode == 0, r.stderr
    state = json.loads((root / "cluster.json").read_text())
    pids = [n["pid"] for n in state["nodes"]]
    try:
        assert [n["port"] for n in state["nodes"]] == [base, base + 1, base + 2]
        for i in range(3):
            with RawClient(base + i) as c:
                assert c.call("SET", f"k{i}", "v") == ("simple", b"OK")
        deadline = time.monotonic() + 20
        while True:      # each node learns the others' names from their HELLO answers
            status = fastdyn("cluster", "status", "--port", str(base + 1))
            assert status.returncode == 0, status.stderr
            rows = [line.split() for line in status.stdout.splitlines()
                    if line.startswith("127.0.0.1:")]
            if len(rows) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [r[0] for r in rows] == [f"127.0.0.1:{base + i}" for i in range(3)]
        assert all(r[2] == "up" for r in rows) and sum(int(r[3]) for r in rows) == 256
        assert "cluster_reachable:3" in status.stdout
        assert "anti_entropy_partitions:256" in status.stdout
        deadline = time.monotonic() + 20
        while True:      # the trees are rebuilt at start-up: then the partition table
            detail = fastdyn("cluster", "status", "--port", str(base), "--partitions")
            if detail.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert detail.returncode == 0, detail.stderr
        table = [line.split() for line in detail.stdout.splitlines()
                 if line.split() and line.split()[0].isdigit()]
        assert sorted(int(row[0]) for row in table) == list(range(256))
        assert all(len(row[1]) == 16 for row in table)
    finally:
        r = fastdyn("cluster", "down", "--data-dir", str(root))
    assert r.returncode == 0, r.stderr
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    assert not (root / "cluster.json").exists()


def test_cluster_up_refuses_busy_ports(tmp_path):
    import socket

    base = consecutive_free_ports(2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", base + 1))
        s.listen()
        r = fastdyn("cluster", "up", "--nodes", "2", "--base-port", str(base), "--data-dir",
                    str(tmp_path / "c"), "--detach")
    assert r.returncode == 1
    assert f"ports in use: {base + 1}" in r.stderr


def test_cluster_down_without_state_is_a_clear_error(tmp_path):
    r = fastdyn("cluster", "down", "--data-dir", str(tmp_path))
    assert r.returncode == 1 and "no cluster state" in r.stderr
