"""`fastdyn serve` settings: command-line flags over a TOML file over defaults.

The TOML file uses the flags' names without the dashes in front (`max-value-bytes = 1048576`,
`requirepass = "pw"`, `seeds = ["h1:17379", "h2:17379"]` or "h1:17379,h2:17379"). Flags given
on the command line override the file; an unknown key or a wrong type is an error naming it.
"""
import argparse
import os
import tomllib
from dataclasses import dataclass, field, fields

HARD_MAX_BULK = 512 * 1024 * 1024
HARD_MAX_QUERY = 1024 * 1024 * 1024
DEFAULT_MAX_OUTPUT = 1024 * 1024 * 1024
MIN_MAX_OUTPUT = 1024 * 1024  # the output a client may have before it is paused anyway


YES_NO = ("protected_mode", "fault_injection", "admission_control")   # yes|no flags


class ConfigError(ValueError):
    """A setting is unknown or out of range; the message names it."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    advertise: str = ""                 # what peers dial; defaults to host
    port: int = 7379
    peer_port: int = 0                  # 0 = port + 10000
    data_dir: str = "./fastdyn-data"
    name: str = ""                      # node name; defaults to advertise:port
    seeds: list = field(default_factory=list)
    n: int = 3
    r: int = 2
    w: int = 2
    partitions: int = 256
    sync: str = "interval"
    sync_interval_ms: int = 1000
    requirepass: str = ""
    protected_mode: bool = True
    maxclients: int = 10000
    max_value_bytes: int = 16 * 1024 * 1024
    max_bulk_bytes: int = HARD_MAX_BULK
    max_query_bytes: int = HARD_MAX_QUERY
    max_output_bytes: int = DEFAULT_MAX_OUTPUT  # 0 = no limit
    hint_max_bytes: int = 1 << 30       # bound of the hint store (a full one refuses hints)
    peer_timeout_ms: int = 2000         # deadline of a replica request
    gossip_interval_ms: int = 1000      # period of a gossip round
    phi_threshold: float = 8.0          # failure detector: suspect a member from this phi
    handoff_concurrency: int = 2        # partitions' receivers streamed to at once
    handoff_bytes_per_s: int = 64 << 20  # handoff throughput bound (0 = none)
    handoff_settle_ms: int = 3000       # wait after learning of a change before streaming
    anti_entropy_interval_ms: int = 10000  # period of an anti-entropy round (0 = none)
    anti_entropy_concurrency: int = 1   # members exchanged with at once
    tombstone_grace_s: int = 600        # a confirmed tombstone is reaped this long after death
    admission_control: bool = True      # slow background work while clients' latency is high
    admission_p99_ms: float = 2.0       # the bound on the event loop's lag p99 it keeps
    background_bytes_per_s: int = 64 << 20  # hint delivery's bound (0 = none)
    fault_injection: bool = False       # DYN.FAULT may drop/delay peer traffic (tests only)

    def finish(self) -> "ServerConfig":
        """Fill the derived defaults and check every value; raises ConfigError."""
        if not self.advertise:
            self.advertise = self.host
        if not self.peer_port:
            if self.port + 10000 > 65535:
                raise ConfigError(f"port {self.port}: the default peer port (port + 10000) "
                                  f"would exceed 65535; give --peer-port")
            self.peer_port = self.port + 10000
        if not self.name:
            self.name = f"{self.advertise}:{self.port}"
        if isinstance(self.seeds, str):
            self.seeds = [s for s in self.seeds.split(",") if s]
        for seed in self.seeds:
            host, sep, port = seed.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(f"seeds: {seed!r} is not HOST:PORT")
        if self.sync not in ("always", "interval", "never"):
            raise ConfigError(f"sync: {self.sync!r} is not one of always, interval, never")
        for name, lo, hi in (("port", 0, 65535), ("peer_port", 1, 65535), ("n", 1, 1000),
                             ("r", 1, 1000), ("w", 1, 1000), ("partitions", 1, 1 << 20),
                             ("sync_interval_ms", 1, 3600_000), ("maxclients", 1, 1_000_000),
                             ("max_value_bytes", 1, HARD_MAX_BULK),
                             ("max_bulk_bytes", 1, HARD_MAX_BULK),
                             ("max_query_bytes", 1024, HARD_MAX_QUERY),
                             ("max_output_bytes", 0, 1 << 40),
                             ("hint_max_bytes", 0, 1 << 50), ("peer_timeout_ms", 1, 600_000),
                             ("gossip_interval_ms", 10, 600_000), ("phi_threshold", 1, 100),
                             ("handoff_concurrency", 1, 64), ("handoff_bytes_per_s", 0, 1 << 40),
                             ("handoff_settle_ms", 0, 600_000),
                             ("anti_entropy_interval_ms", 0, 86_400_000),
                             ("anti_entropy_concurrency", 1, 64),
                             ("tombstone_grace_s", 0, 10 * 365 * 86_400),
                             ("admission_p99_ms", 0.1, 10_000),
                             ("background_bytes_per_s", 0, 1 << 40)):
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ConfigError(f"{name.replace('_', '-')}: {value} is outside {lo}..{hi}")
        if 0 < self.max_output_bytes < MIN_MAX_OUTPUT:
            raise ConfigError(f"max-output-bytes: {self.max_output_bytes} is below "
                              f"{MIN_MAX_OUTPUT} (0 = no limit)")
        if self.partitions & (self.partitions - 1):
            raise ConfigError(f"partitions: {self.partitions} is not a power of two")
        if self.r > self.n or self.w > self.n:
            raise ConfigError(f"r ({self.r}) and w ({self.w}) cannot exceed n ({self.n})")
        return self


def load_toml(path: str) -> dict:
    """The settings in a TOML file, as ServerConfig field names; raises ConfigError."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = {f.name: f for f in fields(ServerConfig)}
    out = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"config file {path}: unknown key {key!r}")
        want = known[name].type
        if name == "seeds" and isinstance(value, str):
            value = [s for s in value.split(",") if s]
        if name in YES_NO and isinstance(value, str) \
                and value in ("yes", "no"):
            value = value == "yes"
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if want is int and isinstance(value, bool) or not isinstance(value, want):
            raise ConfigError(f"config file {path}: {key} must be a {want.__name__}, "
                              f"not {type(value).__name__}")
        out[name] = value
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag defaults to None so that only flags actually given override the file."""
    a = parser.add_argument
    a("--host", help="address to bind for clients and peers (default 127.0.0.1)")
    a("--advertise", help="address peers dial to reach this node (default: --host)")
    a("--port", type=int, help="RESP client port (default 7379)")
    a("--peer-port", type=int, help="peer protocol port (default: port + 10000)")
    a("--data-dir", help="data directory (default ./fastdyn-data)")
    a("--name", help="node name (default ADVERTISE:PORT)")
    a("--seeds", help="comma-separated HOST:PEERPORT of nodes to join")
    a("--n", type=int, help="replicas per key (default 3)")
    a("--r", type=int, help="read quorum (default 2)")
    a("--w", type=int, help="write quorum (default 2)")
    a("--partitions", type=int, help="ring partitions, a power of two (default 256)")
    a("--sync", choices=("always", "interval", "never"),
      help="fsync policy: always (group commit), interval (every second), never")
    a("--sync-interval-ms", type=int, help="fsync period for --sync interval (default 1000)")
    a("--requirepass", help="password clients must give with AUTH or HELLO ... AUTH")
    a("--protected-mode", choices=("yes", "no"),
      help="without a password accept only loopback clients (default yes)")
    a("--maxclients", type=int, help="maximum connected clients (default 10000)")
    a("--max-value-bytes", type=int, help="largest value accepted (default 16 MiB)")
    a("--max-bulk-bytes", type=int, help="largest RESP bulk string (default and cap 512 MiB)")
    a("--max-query-bytes", type=int, help="query buffer limit per client (default and cap 1 GiB)")
    a("--max-output-bytes", type=int,
      help="unsent replies a client may have before it is disconnected (default 1 GiB, 0 = none)")
    a("--hint-max-bytes", type=int, help="bound of the hint store (default 1 GiB)")
    a("--peer-timeout-ms", type=int, help="deadline of a replica request (default 2000)")
    a("--gossip-interval-ms", type=int, help="period of a gossip round (default 1000)")
    a("--phi-threshold", type=float,
      help="failure detector: suspect a member from this phi (default 8, as Cassandra)")
    a("--handoff-concurrency", type=int,
      help="nodes a handoff streams partitions to at once (default 2)")
    a("--handoff-bytes-per-s", type=int,
      help="bound of a node's handoff throughput in bytes/s (default 64 MiB, 0 = none)")
    a("--handoff-settle-ms", type=int,
      help="wait after learning of a membership change before streaming (default 3000)")
    a("--anti-entropy-interval-ms", type=int,
      help="period of an anti-entropy round with the other replicas (default 10000, 0 = none)")
    a("--anti-entropy-concurrency", type=int,
      help="members one anti-entropy round exchanges with at once (default 1)")
    a("--tombstone-grace-s", type=int,
      help="seconds a tombstone every replica holds is kept after the delete (default 600)")
    a("--admission-control", choices=("yes", "no"),
      help="slow background work (handoff, hints, anti-entropy, merges) while the event "
           "loop's lag p99 is above --admission-p99-ms (default yes)")
    a("--admission-p99-ms", type=float,
      help="the lag p99 admission control keeps background work under (default 2)")
    a("--background-bytes-per-s", type=int,
      help="bound of hint delivery in bytes/s (default 64 MiB, 0 = none)")
    a("--fault-injection", choices=("yes", "no"),
      help="accept DYN.FAULT, which drops or delays peer traffic (testing only; default no)")
    a("--config", help="TOML file with the same settings (flags override it)")


def from_args(args: argparse.Namespace) -> ServerConfig:
    settings = load_toml(args.config) if getattr(args, "config", None) else {}
    for f in fields(ServerConfig):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.name in YES_NO:
            value = value == "yes"
        settings[f.name] = value
    cfg = ServerConfig(**settings)
    cfg.data_dir = os.path.abspath(cfg.data_dir)
    return cfg.finish()
