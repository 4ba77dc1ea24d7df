"""Workloads: which operations, in what proportions, on which keys, with what values.

YCSB's core workloads (Cooper et al., SoCC 2010) map onto key-value commands as follows:
read → GET, update → SET of an existing key, insert → SET of a new key, scan → MGET of
1..--scan-length consecutive keys (memcached: a multi-key `get`), read-modify-write → GET then,
after its reply, SET of the same key. `dyn_*` operations use fastdyn's causal commands:
DYN.GET, a blind DYN.PUT (empty context), and DYN.GET then DYN.PUT with the returned context.
"""
from dataclasses import dataclass

from fastdyn import _bench

KINDS = {
    "get": _bench.KIND_GET, "set": _bench.KIND_SET, "insert": _bench.KIND_INSERT,
    "del": _bench.KIND_DEL, "incr": _bench.KIND_INCR, "scan": _bench.KIND_SCAN,
    "rmw": _bench.KIND_RMW, "dyn_get": _bench.KIND_DYN_GET, "dyn_put": _bench.KIND_DYN_PUT,
    "dyn_rmw": _bench.KIND_DYN_RMW,
}
ALIASES = {"read": "get", "update": "set", "delete": "del", "readmodifywrite": "rmw",
           "mget": "scan"}
DYN_KINDS = {"dyn_get", "dyn_put", "dyn_rmw"}

WORKLOADS = {
    "A": ("get=0.5,set=0.5", "zipfian"),        # update heavy (session store)
    "B": ("get=0.95,set=0.05", "zipfian"),      # read mostly (photo tagging)
    "C": ("get=1", "zipfian"),                  # read only (profile cache)
    "D": ("get=0.95,insert=0.05", "latest"),    # read latest (status updates)
    "E": ("scan=0.95,insert=0.05", "zipfian"),  # short ranges (threaded conversations)
    "F": ("get=0.5,rmw=0.5", "zipfian"),        # read-modify-write (user database)
    "DYN": ("dyn_get=0.5,dyn_rmw=0.5", "zipfian"),  # F over DYN.GET / DYN.PUT with context
}
DEFAULT_MIX = "get=0.9,set=0.1"
DISTS = {"uniform": _bench.DIST_UNIFORM, "zipfian": _bench.DIST_ZIPFIAN,
         "latest": _bench.DIST_LATEST, "sequential": _bench.DIST_SEQUENTIAL}


@dataclass(frozen=True)
class Workload:
    ops: tuple          # operation names, in the order of their index in the results
    weights: tuple
    key_dist: str
    keys: int
    theta: float
    value_min: int
    value_max: int
    scan_length: int
    name: str

    def describe(self) -> str:
        mix = ",".join(f"{op}={w:g}" for op, w in zip(self.ops, self.weights))
        dist = self.key_dist + (f"(θ={self.theta:g})" if self.key_dist in ("zipfian", "latest")
                                else "")
        size = (f"{self.value_min}" if self.value_min == self.value_max
                else f"{self.value_min}-{self.value_max}")
        return f"{self.name} [{mix}] keys={self.keys} {dist} value={size}B"

    def generator_args(self, protocol: str, wid: int, nworkers: int, seed: int) -> dict:
        return dict(
            protocol=_bench.PROTO_MEMCACHE if protocol == "memcache" else _bench.PROTO_RESP,
            kinds=[KINDS[op] for op in self.ops], weights=list(self.weights), keys=self.keys,
            dist=DISTS[self.key_dist], theta=self.theta, vmin=self.value_min,
            vmax=self.value_max, scan_max=self.scan_length, wid=wid, nworkers=nworkers,
            seed=seed)


def parse_mix(text: str) -> tuple:
    """'get=0.9,set=0.1' → (('get', 'set'), (0.9, 0.1)); a clear ValueError otherwise."""
    ops, weights = [], []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = ALIASES.get(name.strip().lower(), name.strip().lower())
        if not sep or name not in KINDS:
            raise ValueError(f"--mix: {item!r} is not op=weight with op one of "
                             f"{', '.join(KINDS)}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"--mix: the weight of {name} is not a number: {value!r}") from None
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"--mix: the weight of {name} must be a finite number >= 0")
        if name in ops:
            raise ValueError(f"--mix: {name} appears twice")
        ops.append(name)
        weights.append(weight)
    if not ops or sum(weights) <= 0:
        raise ValueError("--mix needs at least one operation with a weight above 0")
    if len(ops) > 16:
        raise ValueError("--mix: at most 16 operations")
    return tuple(ops), tuple(weights)


def parse_value_size(text: str) -> tuple:
    """'100' → (100, 100); '64-1024' → (64, 1024)."""
    low, sep, high = str(text).partition("-")
    try:
        lo = int(low)
        hi = int(high) if sep else lo
    except ValueError:
        raise ValueError(f"--value-size: {text!r} is not N or MIN-MAX (bytes)") from None
    if lo < 0 or hi < lo or hi > 512 * 1024 * 1024:
        raise ValueError(f"--value-size: {text!r} must satisfy 0 <= MIN <= MAX <= 512 MiB")
    return lo, hi


def build(workload=None, mix=None, key_dist=None, keys=100000, theta=0.99,
          value_size="100", scan_length=100, protocol="resp") -> Workload:
    if workload and mix:
        raise ValueError("give either --workload or --mix, not both")
    if workload:
        name = workload.upper()
        if name not in WORKLOADS:
            raise ValueError(f"--workload must be one of {', '.join(WORKLOADS)} (got {workload!r})")
        mix_text, default_dist = WORKLOADS[name]
        label = f"workload {name}"
    else:
        mix_text, default_dist = mix or DEFAULT_MIX, "zipfian"
        label = "mix"
    ops, weights = parse_mix(mix_text)
    dist = (key_dist or default_dist).lower()
    if dist not in DISTS:
        raise ValueError(f"--key-dist must be one of {', '.join(DISTS)} (got {key_dist!r})")
    if not 0 < theta < 1:
        raise ValueError("--zipf-theta must be strictly between 0 and 1 (YCSB uses 0.99)")
    if not 1 <= keys < 10 ** 12:
        raise ValueError("--keys must be between 1 and 10^12 - 1")
    if scan_length < 1:
        raise ValueError("--scan-length must be at least 1")
    lo, hi = parse_value_size(value_size)
    if protocol == "memcache":
        dyn = [op for op in ops if op in DYN_KINDS]
        if dyn:
            raise ValueError(f"{', '.join(dyn)}: DYN.* commands need a redis:// target")
    return Workload(ops, weights, dist, keys, theta, lo, hi, scan_length, label)
