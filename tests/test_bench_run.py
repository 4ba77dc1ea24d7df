"""`fastdyn bench` end to end: real processes, real sockets, result files read back."""
import csv
import json
import subprocess
import sys
import time

import pytest

from conftest import HOST, ServerProcess, free_port

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench(*args, timeout=120, cwd=None):
    return subprocess.run([sys.executable, "-m", "fastdyn", "bench", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_closed_loop_run_writes_summary_csv_and_plots(redis_server, tmp_path):
    out = tmp_path / "run"
    r = bench("--target", redis_server.url, "--workload", "A", "--keys", 1000, "--clients", 4,
              "--pipeline", 4, "--processes", 2, "--duration", 2, "--warmup", 1, "--out", out)
    assert r.returncode == 0, r.stderr
    # the final table and the per-second progress lines
    assert "get" in r.stdout and "set" in r.stdout and "p99.9 ms" in r.stdout
    assert r.stderr.count("ops/s") >= 2 and "(warm-up)" in r.stderr

    summary = json.loads((out / "summary.json").read_text())
    assert summary["throughput"] > 0
    assert set(summary["ops"]) == {"get", "set"}
    for op in summary["ops"].values():
        for key in ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms"):
            assert isinstance(op[key], float) and op[key] > 0
        assert op["p50_ms"] <= op["p90_ms"] <= op["p99_ms"] <= op["p99.9_ms"] <= op["max_ms"]
        assert op["errors"] == 0 and op["timeouts"] == 0
    counted = sum(op["count"] for op in summary["ops"].values())
    assert summary["throughput"] == pytest.approx(counted / summary["seconds"], rel=0.01)
    assert summary["config"]["processes"] == 2 and summary["seconds"] == pytest.approx(2, abs=0.2)
    assert summary["tool_cpu_s"] > 0 and summary["tool_cpu_us_per_op"] > 0

    with open(out / "intervals.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["second", "op", "ops", "ops_per_s", "errors", "timeouts", "p50_ms",
                             "p90_ms", "p99_ms", "p99.9_ms", "max_ms", "warmup"]
    assert {row["op"] for row in rows} == {"get", "set", "all"}
    assert {row["warmup"] for row in rows if row["second"] == "1"} == {"1"}
    # the measured intervals add up to the summary's counts
    measured = sum(int(r["ops"]) for r in rows if r["op"] == "all" and r["warmup"] == "0")
    assert measured == counted

    with open(out / "histogram.csv", newline="") as f:
        hist = [r for r in csv.DictReader(f) if r["op"] == "all"]
    assert float(hist[-1]["cumulative"]) == pytest.approx(1.0)
    for name in ("throughput.png", "latency.png", "cdf.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC

    # compare overlays two runs in one table and one plot
    r2 = bench("compare", out, out, "--out", tmp_path / "cmp")
    assert r2.returncode == 0, r2.stderr
    rows = [line.split() for line in r2.stdout.splitlines()]
    assert [row[1] for row in rows if row and row[0] == "run" and row[1] != "op"] == ["get", "set", "all"] * 2
    assert r2.stdout.count("1.00x") == 2
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:8] == PNG_MAGIC


def test_compare_without_out_writes_the_plot_beside_the_runs(tmp_path):
    runs, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    for name, ops_per_s in (("a", 1000.0), ("b", 1500.0)):
        (runs / name).mkdir(parents=True)
        (runs / name / "summary.json").write_text(json.dumps(
            {"throughput": ops_per_s, "ops": {"get": {"throughput": ops_per_s, "p50_ms": 0.5}}}))
    elsewhere.mkdir()
    r = bench("compare", runs / "a", runs / "b", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert "1.50x" in r.stdout and f"plot: {runs / 'compare.png'}" in r.stdout
    assert (runs / "compare.png").read_bytes()[:8] == PNG_MAGIC
    assert list(elsewhere.iterdir()) == []


def test_requests_mode_sends_exactly_n_and_load_fills_the_key_space(redis_server, tmp_path):
    r = bench("--target", redis_server.url, "--mix", "get=1", "--keys", 300, "--load",
              "--requests", 2000, "--clients", 5, "--pipeline", 8, "--processes", 2,
              "--out", tmp_path, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "load: 300 keys written" in r.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ops"]["get"]["count"] == 2000
    assert summary["ops"]["get"]["misses"] == 0  # every key was loaded first
    import redis
    assert redis.Redis(host=HOST, port=redis_server.port).dbsize() == 300


def test_resp3_connections(redis_server, tmp_path):
    r = bench("--target", redis_server.url, "--resp3", "--mix", "get=1,scan=1,incr=1",
              "--keys", 50, "--requests", 600, "--clients", 2, "--processes", 1,
              "--out", tmp_path, "--quiet")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["errors"] == 0 and sum(op["count"] for op in s["ops"].values()) == 600
    assert s["ops"]["get"]["misses"] == s["ops"]["get"]["count"]  # RESP3 nulls are misses


def test_memcached_target(memcached_server, tmp_path):
    url = f"memcache://{HOST}:{memcached_server.port}"
    r = bench("--target", url, "--mix", "get=0.5,set=0.3,scan=0.2", "--keys", 100,
              "--value-size", "10-2000", "--requests", 3000, "--clients", 3, "--pipeline", 4,
              "--processes", 1, "--out", tmp_path, "--quiet")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sum(op["count"] for op in summary["ops"].values()) == 3000
    assert summary["errors"] == 0 and summary["ops"]["get"]["misses"] > 0


def test_several_targets_in_one_run(redis_server, memcached_server, tmp_path):
    mc = f"memcache://{HOST}:{memcached_server.port}"
    r = bench("--target", redis_server.url, "--target", mc, "--mix", "get=1,set=1",
              "--requests", 1000, "--clients", 2, "--processes", 1, "--out", tmp_path, "--quiet")
    assert r.returncode == 0, r.stderr
    for scheme, port in (("redis", redis_server.port), ("memcache", memcached_server.port)):
        s = json.loads((tmp_path / f"{scheme}-{HOST}-{port}" / "summary.json").read_text())
        assert s["ops"]["get"]["count"] + s["ops"]["set"]["count"] == 1000
    # one table with both targets, ratios relative to the first
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith(("redis:", "memcache:"))]
    assert [(row[0].split(":")[0], row[1]) for row in rows] == [
        ("redis", "get"), ("redis", "set"), ("redis", "all"),
        ("memcache", "get"), ("memcache", "set"), ("memcache", "all")]
    assert (tmp_path / "compare.png").read_bytes()[:8] == PNG_MAGIC


def test_rejected_dyn_commands_are_counted_as_errors(redis_server, tmp_path):
    r = bench("--target", redis_server.url, "--workload", "dyn", "--requests", 500,
              "--clients", 2, "--processes", 1, "--out", tmp_path, "--quiet")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["errors"] == 500 and summary["throughput"] == 0
    for op in ("dyn_get", "dyn_rmw"):
        assert "unknown command" in summary["ops"][op]["error_sample"]
    assert "failed, e.g. ERR unknown command" in r.stdout


def test_a_down_target_is_one_clear_line_and_exit_1():
    port = free_port()
    r = bench("--target", f"redis://{HOST}:{port}", "--duration", 1)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"fastdyn bench: cannot connect to redis://{HOST}:{port}: "
                                f"Connection refused")
    r = bench("--target", "http://x", "--duration", 1)
    assert r.returncode == 1 and "scheme must be one of" in r.stderr
    r = bench("--target", f"redis://{HOST}:{port}", "--mix", "get=2,frob=1")
    assert r.returncode == 1 and "frob" in r.stderr and "Traceback" not in r.stderr


def test_authentication(tmp_path):
    import shutil
    binary = shutil.which("redis-server") or pytest.skip("redis-server is not installed")
    port = free_port()
    server = ServerProcess([binary, "--port", str(port), "--bind", HOST, "--save", "",
                            "--requirepass", "s3cret", "--dir", str(tmp_path)],
                           port, str(tmp_path), str(tmp_path / "redis.log")).start()
    try:
        r = bench("--target", f"redis://:wrong@{HOST}:{port}", "--duration", 1)
        assert r.returncode == 1 and "WRONGPASS" in r.stderr and "Traceback" not in r.stderr
        r = bench("--target", f"redis://{HOST}:{port}", "--duration", 1)
        assert r.returncode == 1 and "NOAUTH" in r.stderr
        r = bench("--target", f"redis://:s3cret@{HOST}:{port}", "--requests", 200,
                  "--clients", 2, "--processes", 1, "--quiet")
        assert r.returncode == 0, r.stderr
    finally:
        server.kill()


# A RESP server that answers PING/GET/SET and, once, stops answering for one second: the
# whole event loop sleeps, as a server in a GC pause or a stalled disk would.
STALL_SERVER = r'''
import asyncio, sys, time
port, stall_after, stall_for = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
first = None
stalled = False

class Server(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.buf = transport, b""
    def data_received(self, data):
        global first, stalled
        self.buf += data
        out = []
        while b"\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n")
            n, args = int(head[1:]), []
            ok = True
            for _ in range(n):
                if b"\r\n" not in rest:
                    ok = False; break
                line, _, rest = rest.partition(b"\r\n")
                size = int(line[1:])
                if len(rest) < size + 2:
                    ok = False; break
                args.append(rest[:size]); rest = rest[size + 2:]
            if not ok:
                break
            self.buf = rest
            cmd = args[0].upper()
            out.append(b"+PONG\r\n" if cmd == b"PING" else b"+OK\r\n" if cmd == b"SET"
                       else b"$-1\r\n" if cmd == b"GET" else b"-ERR unknown command\r\n")
        now = time.monotonic()
        first = first or now
        if not stalled and now - first >= stall_after:
            stalled = True
            time.sleep(stall_for)
        self.t.write(b"".join(out))

async def main():
    server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", port)
    async with server:
        await server.serve_forever()
asyncio.run(main())
'''


def test_open_loop_latency_shows_a_stall_that_closed_loop_accounting_hides(tmp_path):
    port = free_port()
    server = ServerProcess([sys.executable, "-c", STALL_SERVER, str(port), "1.5", "1.0"], port,
                           str(tmp_path), str(tmp_path / "stall.log")).start()
    try:
        r = bench("--target", f"redis://{HOST}:{port}", "--mix", "get=1", "--rate", 2000,
                  "--arrival", "const", "--duration", 4, "--clients", 4, "--processes", 1,
                  "--out", tmp_path / "run", "--quiet")
        assert r.returncode == 0, r.stderr
        assert "corrected for coordinated omission" in r.stdout
        s = json.loads((tmp_path / "run" / "summary.json").read_text())
        get, raw = s["ops"]["get"], s["uncorrected"]["get"]
        # everything scheduled during the 1 s stall waited for it: a quarter of a 4 s run
        assert get["p99_ms"] > 500
        assert get["max_ms"] >= 900
        assert get["count"] == pytest.approx(8000, rel=0.05)  # the schedule was kept
        assert s["throughput"] == pytest.approx(2000, rel=0.05)
        # measured from the actual send, only the 4 requests in flight saw the stall
        assert raw["p99_ms"] < 100 and raw["p50_ms"] < 20
    finally:
        server.kill()


def test_dropped_connections_are_counted_not_fatal(tmp_path):
    """A server that dies mid-run: outstanding requests count as errors, the tool exits 0."""
    import shutil
    binary = shutil.which("redis-server") or pytest.skip("redis-server is not installed")
    port = free_port()
    server = ServerProcess([binary, "--port", str(port), "--bind", HOST, "--save", "",
                            "--dir", str(tmp_path)], port, str(tmp_path),
                           str(tmp_path / "redis.log")).start()
    proc = subprocess.Popen([sys.executable, "-m", "fastdyn", "bench", "--target",
                             f"redis://{HOST}:{port}", "--duration", "3", "--clients", "4",
                             "--processes", "1", "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    server.kill()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["errors"] > 0 and s["throughput"] > 0
    assert any("connection lost" in (op.get("error_sample") or "") for op in s["ops"].values())


def test_requests_without_reply_time_out_and_the_run_goes_on(tmp_path):
    port = free_port()
    server = ServerProcess([sys.executable, "-c", STALL_SERVER, str(port), "1.0", "3.0"], port,
                           str(tmp_path), str(tmp_path / "stall.log")).start()
    try:
        r = bench("--target", f"redis://{HOST}:{port}", "--mix", "get=1", "--duration", 6,
                  "--clients", 2, "--pipeline", 2, "--processes", 1, "--timeout", 1,
                  "--out", tmp_path / "run", "--quiet")
        assert r.returncode == 0, r.stderr
        s = json.loads((tmp_path / "run" / "summary.json").read_text())
        # the 4 requests in flight when the server froze, at least, timed out
        assert s["timeouts"] >= 4 and s["errors"] == 0
        assert "no reply within 1 s" in s["ops"]["get"]["error_sample"]
        with open(tmp_path / "run" / "intervals.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["op"] == "all"]
        # traffic resumed on new connections after the freeze
        assert int(rows[0]["ops"]) > 0 and int(rows[-1]["ops"]) > 0
        assert "timeouts" in r.stdout
    finally:
        server.kill()
