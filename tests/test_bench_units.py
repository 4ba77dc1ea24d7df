"""The load generator's parts without a network: histograms, schedules, request generation."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdyn import _bench
from fastdyn.bench import runner, workload
from fastdyn.bench.histogram import BUCKET_HIGH, BUCKET_LOW, Histogram

# ---- histograms -----------------------------------------------------------------------------


def test_buckets_tile_the_value_range_without_gaps():
    assert BUCKET_LOW[0] == 0
    assert np.all(BUCKET_LOW[1:] == BUCKET_HIGH[:-1] + 1)
    values = np.array([0, 1, 255, 256, 257, 1000, 10 ** 6, 10 ** 9, 2 ** 40 - 1], dtype=np.uint64)
    idx = _bench.hist_index(values)
    assert np.all(BUCKET_LOW[idx] <= values) and np.all(values <= BUCKET_HIGH[idx])


def test_bucket_width_is_under_one_percent():
    low, high = BUCKET_LOW[256:], BUCKET_HIGH[256:]
    assert np.max((high - low + 1) / low) <= 1 / 128 + 1e-12


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 10 ** 10), min_size=1, max_size=2000),
       st.sampled_from([50.0, 90.0, 99.0, 99.9, 100.0]))
def test_percentiles_match_the_exact_sample_percentile_within_a_bucket(samples, p):
    h = Histogram.from_samples(samples)
    ordered = sorted(samples)
    exact = ordered[max(1, int(np.ceil(p / 100 * len(ordered)))) - 1]
    got = h.percentile(p)
    assert exact <= got <= exact * (1 + 1 / 128) + 1
    assert h.max_ns == max(samples)
    assert h.total == len(samples)


def test_known_latencies():
    # 1000 requests at 1 ms and 10 at 1 s: the p99 is 1 ms, the p99.9 and max are 1 s
    h = Histogram.from_samples([1_000_000] * 1000 + [1_000_000_000] * 10)
    assert h.percentile(50) == pytest.approx(1e6, rel=0.01)
    assert h.percentile(99) == pytest.approx(1e6, rel=0.01)
    assert h.percentile(99.9) == pytest.approx(1e9, rel=0.01)
    assert h.max_ns == 1_000_000_000
    assert np.isnan(Histogram().percentile(50))


@given(st.lists(st.integers(0, 10 ** 9), max_size=500), st.integers(1, 5), st.randoms())
def test_merging_split_samples_equals_one_histogram(samples, parts, rnd):
    whole = Histogram.from_samples(samples)
    shards = [[] for _ in range(parts)]
    for s in samples:
        shards[rnd.randrange(parts)].append(s)
    merged = Histogram()
    for shard in shards:
        # through the sparse form a worker sends over its pipe
        merged.merge(Histogram.from_sparse(Histogram.from_samples(shard).to_sparse()))
    assert np.array_equal(merged.counts, whole.counts)
    assert merged.max_ns == whole.max_ns


def _snapshot(names, samples_by_op, errors=0):
    """A worker's interval snapshot holding the given latencies (as Stats.take() makes it)."""
    n = len(names)
    snap = {"hist": [], "ok": np.zeros(n, np.int64), "errors": np.full(n, errors, np.int64),
            "timeouts": np.zeros(n, np.int64), "nils": np.zeros(n, np.int64),
            "error_samples": [None] * n}
    for i, name in enumerate(names):
        h = Histogram.from_samples(samples_by_op.get(name, []))
        snap["hist"].append(h.to_sparse())
        snap["ok"][i] = h.total
    return snap


def test_multi_process_merge_equals_single_process_on_the_same_samples():
    rng = np.random.default_rng(7)
    names = ("get", "set")
    samples = {name: rng.lognormal(13, 1, 5000).astype(np.uint64) for name in names}
    spec = runner.RunSpec(target=None, workload=None)
    wl = workload.build(mix="get=1,set=1")
    single = runner._merge_interval(0, [runner._decode(_snapshot(names, samples), names)],
                                    {0: 1.0}, spec, wl)
    parts = []
    for w in range(3):  # three workers, each with a third of every operation's samples
        part = {name: s[w::3] for name, s in samples.items()}
        parts.append(runner._decode(_snapshot(names, part), names))
    multi = runner._merge_interval(0, parts, {0: 1.0}, spec, wl)
    for name in names:
        assert np.array_equal(single.ops[name].hist.counts, multi.ops[name].hist.counts)
        assert single.ops[name].ok == multi.ops[name].ok == 5000
        for p in (50, 90, 99, 99.9):
            assert single.ops[name].hist.percentile(p) == multi.ops[name].hist.percentile(p)


# ---- open-loop schedules --------------------------------------------------------------------


@pytest.mark.parametrize("rate", [100.0, 5000.0, 250000.0])
def test_constant_arrivals_are_evenly_spaced_at_the_rate(rate):
    t = _bench.arrival_schedule(rate, 10000, _bench.ARRIVAL_CONST, 1).astype(np.float64)
    gaps = np.diff(t)
    assert np.all(np.abs(gaps - 1e9 / rate) <= 1.0)  # integer ns truncation only
    assert t[-1] == pytest.approx(9999 * 1e9 / rate, rel=1e-9)


@pytest.mark.parametrize("rate", [1000.0, 100000.0])
def test_exponential_arrivals_have_the_rate_and_poisson_spread(rate):
    t = _bench.arrival_schedule(rate, 200000, _bench.ARRIVAL_EXP, 3).astype(np.float64)
    gaps = np.diff(t)
    assert np.all(gaps >= 0)
    assert len(t) / (t[-1] / 1e9) == pytest.approx(rate, rel=0.02)
    # an exponential distribution's standard deviation equals its mean
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)
    # and P(gap > mean) = 1/e
    assert np.mean(gaps > 1e9 / rate) == pytest.approx(np.exp(-1), abs=0.01)


def test_schedule_is_reproducible_from_its_seed():
    a = _bench.arrival_schedule(1000.0, 100, _bench.ARRIVAL_EXP, 5)
    b = _bench.arrival_schedule(1000.0, 100, _bench.ARRIVAL_EXP, 5)
    c = _bench.arrival_schedule(1000.0, 100, _bench.ARRIVAL_EXP, 6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# ---- request generation ---------------------------------------------------------------------


def parse_requests(data: bytes):
    out = []
    while data:
        assert data[:1] == b"*", data[:40]
        line, _, data = data[1:].partition(b"\r\n")
        args = []
        for _ in range(int(line)):
            line, _, data = data[1:].partition(b"\r\n")
            n = int(line)
            args.append(data[:n])
            assert data[n:n + 2] == b"\r\n"
            data = data[n + 2:]
        out.append(args)
    return out


def generator(mix="get=1", dist="uniform", keys=1000, value="100", protocol="resp", wid=0,
              nworkers=1, seed=1, theta=0.99):
    wl = workload.build(mix=mix, key_dist=dist, keys=keys, value_size=value, theta=theta,
                        protocol=protocol, scan_length=10)
    return wl, _bench.Generator(**wl.generator_args(protocol, wid, nworkers, seed))


@pytest.mark.parametrize("op,name,arity", [
    ("get", b"GET", 2), ("set", b"SET", 3), ("del", b"DEL", 2), ("incr", b"INCR", 2),
    ("rmw", b"GET", 2), ("dyn_get", b"DYN.GET", 2), ("dyn_put", b"DYN.PUT", 4),
    ("dyn_rmw", b"DYN.GET", 2)])
def test_each_operation_encodes_its_command(op, name, arity):
    wl, gen = generator(mix=f"{op}=1")
    data, key = gen.encode_one(0)
    [args] = parse_requests(data)
    assert args[0] == name and len(args) == arity
    prefix = b"ctr:" if op == "incr" else b"key:"
    assert args[1] == prefix + b"%012d" % key and 0 <= key < 1000
    if op == "set":
        assert len(args[2]) == 100
    if op == "dyn_put":
        assert args[2] == b"" and len(args[3]) == 100   # a blind write: empty context


def test_read_modify_write_halves():
    _, gen = generator(mix="dyn_rmw=1")
    [args] = parse_requests(gen.encode_write(0, 42, b"ctx-bytes"))
    assert args[:3] == [b"DYN.PUT", b"key:000000000042", b"ctx-bytes"] and len(args[3]) == 100
    _, gen = generator(mix="rmw=1")
    [args] = parse_requests(gen.encode_write(0, 42))
    assert args[:2] == [b"SET", b"key:000000000042"]


def test_scan_is_an_mget_of_consecutive_keys():
    _, gen = generator(mix="scan=1", keys=50)
    for _ in range(50):
        data, key = gen.encode_one(0)
        [args] = parse_requests(data)
        assert args[0] == b"MGET" and 1 <= len(args) - 1 <= 10
        assert args[1:] == [b"key:%012d" % ((key + i) % 50) for i in range(len(args) - 1)]


def test_memcache_encoding():
    _, gen = generator(mix="set=1", protocol="memcache", value="5-9")
    data, key = gen.encode_one(0)
    header, _, rest = data.partition(b"\r\n")
    verb, k, flags, ttl, n = header.split(b" ")
    assert (verb, k, flags, ttl) == (b"set", b"key:%012d" % key, b"0", b"0")
    assert 5 <= int(n) <= 9 and rest == rest[:int(n)] + b"\r\n" and len(rest) == int(n) + 2
    _, gen = generator(mix="scan=1", protocol="memcache", keys=30)
    data, key = gen.encode_one(0)
    assert data.startswith(b"get key:%012d" % key) and data.endswith(b"\r\n")
    with pytest.raises(ValueError, match="redis://"):
        workload.build(mix="dyn_get=1", protocol="memcache")


def _keys(gen, n):
    return np.array([gen.encode_one(0)[1] for _ in range(n)])


def test_value_sizes_in_range():
    _, gen = generator(mix="set=1", value="64-1024")
    sizes = [len(parse_requests(gen.encode_one(0)[0])[0][2]) for _ in range(2000)]
    assert min(sizes) >= 64 and max(sizes) <= 1024
    assert min(sizes) < 100 and max(sizes) > 1000


def test_mix_proportions():
    wl, gen = generator(mix="get=0.9,set=0.1")
    names = [parse_requests(gen.encode_next()[1])[0][0] for _ in range(20000)]
    assert names.count(b"SET") / len(names) == pytest.approx(0.1, abs=0.01)
    assert names.count(b"GET") + names.count(b"SET") == len(names)


def test_uniform_and_zipfian_key_distributions():
    _, gen = generator(dist="uniform", keys=100)
    counts = np.bincount(_keys(gen, 50000), minlength=100)
    assert counts.min() > 350 and counts.max() < 650
    _, gen = generator(dist="zipfian", keys=1000)
    counts = np.sort(np.bincount(_keys(gen, 50000), minlength=1000))[::-1]
    # θ = 0.99: the hottest key gets ~1/H(1000, 0.99) ≈ 13% of requests, the top 10% of keys most
    assert 0.09 < counts[0] / 50000 < 0.18
    assert counts[:100].sum() / 50000 > 0.6
    assert np.all(counts >= 0)


def test_sequential_keys_partition_the_key_space_between_workers():
    seen = []
    for wid in range(3):
        _, gen = generator(dist="sequential", keys=10, wid=wid, nworkers=3)
        seen += list(_keys(gen, runner._split(10, 3, wid)))
    assert sorted(seen) == list(range(10))


def test_latest_reads_favour_recent_inserts():
    wl, gen = generator(mix="insert=1", dist="latest", keys=1000)
    assert list(_keys(gen, 100)) == list(range(1000, 1100))  # inserts extend the key space
    wl, gen = generator(mix="get=1,insert=1", dist="latest", keys=1000)
    newest, near = 999, []
    kinds = {i: gen.op_kind(i) for i in range(2)}
    for _ in range(20000):
        op, _, key = gen.encode_next()
        if kinds[op] == _bench.KIND_INSERT:
            newest = key
        else:
            assert key <= newest
            near.append(newest - key < 100)
    # zipfian over recency: ~70% of reads hit the 100 newest keys (uniform would give ~1%)
    assert np.mean(near) > 0.6


@pytest.mark.parametrize("kwargs,message", [
    (dict(mix="get=0.5,bogus=0.5"), "bogus"),
    (dict(mix="get=x"), "not a number"),
    (dict(mix="get=0"), "above 0"),
    (dict(workload="Z"), "must be one of"),
    (dict(workload="A", mix="get=1"), "not both"),
    (dict(key_dist="gaussian"), "uniform"),
    (dict(theta=1.0), "between 0 and 1"),
    (dict(value_size="10-5"), "MIN <= MAX"),
    (dict(value_size="big"), "MIN-MAX"),
    (dict(keys=0), "--keys"),
])
def test_bad_workload_options_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        workload.build(**kwargs)


def test_ycsb_workloads():
    assert workload.build(workload="a").ops == ("get", "set")
    assert workload.build(workload="D").key_dist == "latest"
    assert workload.build(workload="E").ops == ("scan", "insert")
    assert workload.build(workload="F").ops == ("get", "rmw")
    assert workload.build(workload="dyn").ops == ("dyn_get", "dyn_rmw")
