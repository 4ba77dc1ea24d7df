"""Storage engine benchmark: fastdyn's Store against LMDB, RocksDB, SQLite (WAL) and a dict.

    python bench/bench_storage.py [--keys 1000000] [--value-sizes 100,1024] [--out FILE]

Every engine runs in its own process (so resident memory is its own) on the same keys (16
bytes, an unsorted sequence), the same value bytes and the same random orders, one Python call
per operation:

  put      insert every key once, in key order
  get      read every key once, in a random order
  mixed    50% get / 50% overwrite of random keys
  startup  close, then reopen and read one key (fastdyn: from hint files, after a merge)
  memory   resident-set growth after the puts, per key: all of it, and the private part
           (without mapped page cache); for fastdyn also the keydir's own bytes per key and its
           overhead beyond the key bytes

The table reports each engine's rate and the ratio fastdyn/engine measured in the same run.
"""
import argparse
import gc
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

ENGINES = ["fastdyn", "lmdb", "rocksdb", "sqlite", "dict"]


def rss_bytes():
    """(resident, private resident) bytes: file-backed pages (mapped page cache, which the
    kernel can drop) are resident but not private."""
    with open("/proc/self/statm") as f:
        fields = f.read().split()
    page = os.sysconf("SC_PAGE_SIZE")
    return int(fields[1]) * page, (int(fields[1]) - int(fields[2])) * page


def make_keys(n):
    # 16-byte keys in an order unrelated to their sort order (B-trees get no free ride)
    return [b"%016x" % ((i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) for i in range(n)]


class Engine:
    """put/get/close/reopen over one engine; hot loops bind the engine's own call."""

    def __init__(self, name, path):
        self.name = name
        self.path = path
        self.open()

    def open(self):
        n = self.name
        if n == "fastdyn":
            from fastdyn.storage import Store
            self.db = Store(self.path, sync="interval")
        elif n == "lmdb":
            import lmdb
            self.env = lmdb.open(self.path, map_size=1 << 36, sync=False, metasync=False,
                                 writemap=True, max_dbs=0)
            self.txn = self.env.begin(write=True)
        elif n == "rocksdb":
            import rocksdict
            self.db = rocksdict.Rdict(self.path)
        elif n == "sqlite":
            self.conn = sqlite3.connect(os.path.join(self.path, "db.sqlite"),
                                        isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) "
                              "WITHOUT ROWID")
            self.conn.execute("BEGIN")
        elif n == "dict":
            self.db = {}

    def close(self):
        n = self.name
        if n == "fastdyn":
            self.db.close()
        elif n == "lmdb":
            self.txn.commit()
            self.env.close()
        elif n == "rocksdb":
            self.db.close()
        elif n == "sqlite":
            self.conn.execute("COMMIT")
            self.conn.close()

    def run_put(self, keys, value):
        n = self.name
        t = time.perf_counter()
        if n in ("fastdyn", "rocksdb", "dict"):
            db = self.db
            for k in keys:
                db[k] = value
        elif n == "lmdb":
            put = self.txn.put
            for k in keys:
                put(k, value)
        elif n == "sqlite":
            ex = self.conn.execute
            sql = "INSERT OR REPLACE INTO kv VALUES (?, ?)"
            for k in keys:
                ex(sql, (k, value))
        return time.perf_counter() - t

    def run_get(self, keys):
        n = self.name
        t = time.perf_counter()
        if n in ("fastdyn", "rocksdb", "dict"):
            db = self.db
            for k in keys:
                db[k]
        elif n == "lmdb":
            get = self.txn.get
            for k in keys:
                get(k)
        elif n == "sqlite":
            ex = self.conn.execute
            sql = "SELECT v FROM kv WHERE k = ?"
            for k in keys:
                ex(sql, (k,)).fetchone()
        return time.perf_counter() - t

    def run_mixed(self, keys, writes, value):
        n = self.name
        t = time.perf_counter()
        if n in ("fastdyn", "rocksdb", "dict"):
            db = self.db
            for k, w in zip(keys, writes):
                if w:
                    db[k] = value
                else:
                    db[k]
        elif n == "lmdb":
            get, put = self.txn.get, self.txn.put
            for k, w in zip(keys, writes):
                if w:
                    put(k, value)
                else:
                    get(k)
        elif n == "sqlite":
            ex = self.conn.execute
            ins, sel = "INSERT OR REPLACE INTO kv VALUES (?, ?)", "SELECT v FROM kv WHERE k = ?"
            for k, w in zip(keys, writes):
                if w:
                    ex(ins, (k, value))
                else:
                    ex(sel, (k,)).fetchone()
        return time.perf_counter() - t

    def check(self, key, value):
        n = self.name
        if n == "lmdb":
            got = self.txn.get(key)
        elif n == "sqlite":
            got = self.conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()[0]
        else:
            got = self.db[key]
        assert got == value, f"{self.name} returned a wrong value"


def run_engine(name, n, value_size, seed):
    """One engine, one value size: returns its measurements (runs in a child process)."""
    keys = make_keys(n)
    rng = random.Random(seed)
    value = rng.randbytes(value_size)
    get_keys = keys[:]
    rng.shuffle(get_keys)
    mixed_keys = [keys[rng.randrange(n)] for _ in range(n)]
    writes = [rng.random() < 0.5 for _ in range(n)]
    tmp = tempfile.mkdtemp(prefix=f"fastdyn-storage-bench-{name}-", dir=os.environ.get("BENCH_DIR"))
    try:
        gc.collect()
        gc.disable()
        rss0 = rss_bytes()
        eng = Engine(name, tmp)
        put_s = eng.run_put(keys, value)
        rss1 = rss_bytes()
        extra = {}
        if name == "fastdyn":
            st = eng.db.stats()
            extra = {"keydir_bytes_per_key": st["keydir_bytes_per_key"],
                     "keydir_overhead_per_key": st["keydir_overhead_per_key"]}
        get_s = eng.run_get(get_keys)
        mixed_s = eng.run_mixed(mixed_keys, writes, value)
        eng.check(keys[0], value)
        startup_s = None
        if name != "dict":
            if name == "fastdyn":
                eng.db.merge()              # hint files for every segment
            eng.close()
            t = time.perf_counter()
            eng.open()
            eng.check(keys[n // 2], value)
            startup_s = time.perf_counter() - t
            if name == "fastdyn":
                extra["startup_report"] = {k: eng.db.recovery_report[k]
                                           for k in ("segments", "from_hints", "keys")}
            eng.close()
        gc.enable()
        return dict(engine=name, keys=n, value_size=value_size, put=n / put_s, get=n / get_s,
                    mixed=n / mixed_s, startup_s=startup_s, rss_per_key=(rss1[0] - rss0[0]) / n,
                    private_per_key=(rss1[1] - rss0[1]) / n,
                    **extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fmt_rate(x):
    return f"{x / 1e3:,.0f}k/s"


def table(results, value_size):
    rows = {r["engine"]: r for r in results if r["value_size"] == value_size}
    fd = rows["fastdyn"]
    n = fd["keys"]
    out = [f"**{n:,} keys, 16-byte keys, {value_size}-byte values**", "",
           "| engine | put | get | mixed 50/50 | start-up | RSS/key (private) | fastdyn ratio put / get / mixed |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for name in ENGINES:
        r = rows.get(name)
        if r is None:
            continue
        start = "—" if r["startup_s"] is None else f"{r['startup_s']:.3f} s"
        ratio = " / ".join(f"{fd[m] / r[m]:.2f}×" for m in ("put", "get", "mixed"))
        out.append(f"| {name} | {fmt_rate(r['put'])} | {fmt_rate(r['get'])} | "
                   f"{fmt_rate(r['mixed'])} | {start} | {r['rss_per_key']:.0f} B ({r['private_per_key']:.0f} B) | "
                   f"{'—' if name == 'fastdyn' else ratio} |")
    out.append("")
    out.append(f"fastdyn keydir: {fd['keydir_bytes_per_key']:.1f} B/key, "
               f"{fd['keydir_overhead_per_key']:.1f} B/key beyond the key bytes; start-up read "
               f"{fd['startup_report']['from_hints']} of {fd['startup_report']['segments']} "
               f"segments from hints.")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-sizes", default="100,1024")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", help="also write the results as JSON here")
    ap.add_argument("--engine", help=argparse.SUPPRESS)      # child mode
    ap.add_argument("--value-size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.engine:
        print(json.dumps(run_engine(args.engine, args.keys, args.value_size, args.seed)))
        return 0
    results = []
    sizes = [int(x) for x in args.value_sizes.split(",")]
    engines = args.engines.split(",")
    for size in sizes:
        for name in engines:
            cmd = [sys.executable, os.path.abspath(__file__), "--engine", name, "--keys",
                   str(args.keys), "--value-size", str(size), "--seed", str(args.seed)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name} failed:\n{r.stderr}", file=sys.stderr)
                continue
            res = json.loads(r.stdout.strip().splitlines()[-1])
            results.append(res)
            print(f"  {name:8} {size:5} B  put {fmt_rate(res['put'])}  get "
                  f"{fmt_rate(res['get'])}  mixed {fmt_rate(res['mixed'])}", file=sys.stderr)
    for size in sizes:
        print(table(results, size))
        print()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
