"""INFO: Redis-style sections so tools that parse Redis' INFO read fastdyn's too."""
import os
import platform
import resource
import sys
import time

from fastdyn import __version__

SECTIONS = ("server", "clients", "memory", "persistence", "stats", "replication", "cluster",
            "keyspace")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _human(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n}{unit}" if unit == "B" else f"{n:.2f}{unit}"
        n /= 1024
    return str(n)


def info_text(node, wanted) -> str:
    """The INFO reply for sections `wanted` (lower-case; empty, 'all', 'everything' or
    'default' mean every section)."""
    everything = not wanted or any(w in ("all", "everything", "default") for w in wanted)
    cfg = node.config
    out = []

    def section(name, fields):
        if everything or name in wanted:
            out.append("# " + name.capitalize())
            out.extend(f"{k}:{v}" for k, v in fields)
            out.append("")

    uptime = int(time.time() - node.started)
    section("server", [
        ("redis_version", node.redis_version), ("fastdyn_version", __version__),
        ("redis_mode", "standalone"), ("os", f"{platform.system()} {platform.release()} "
                                             f"{platform.machine()}"),
        ("arch_bits", 64 if sys.maxsize > 2 ** 32 else 32), ("multiplexing_api", "uvloop"),
        ("process_id", os.getpid()), ("run_id", f"{id(node):040x}"[-40:]),
        ("tcp_port", cfg.port), ("server_time_usec", int(time.time() * 1e6)),
        ("uptime_in_seconds", uptime), ("uptime_in_days", uptime // 86400),
        ("executable", sys.argv[0]), ("fastdyn_node_name", cfg.name),
        ("fastdyn_peer_port", cfg.peer_port)])
    section("clients", [("connected_clients", len(node.clients)),
                        ("maxclients", cfg.maxclients), ("blocked_clients", 0)])
    store_stats = node.store.stats()
    rss = _rss_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    section("memory", [("used_memory", rss), ("used_memory_human", _human(rss)),
                       ("used_memory_rss", rss), ("used_memory_rss_human", _human(rss)),
                       ("used_memory_peak", peak), ("used_memory_peak_human", _human(peak)),
                       ("mem_fragmentation_ratio", "1.00"),
                       ("maxmemory", 0), ("maxmemory_policy", "noeviction"),
                       ("fastdyn_keydir_bytes_per_key",
                        store_stats.get("keydir_bytes_per_key", 0))])
    section("persistence", [("loading", 0), ("rdb_changes_since_last_save", 0),
                            ("rdb_last_save_time", int(node.started)),
                            ("aof_enabled", 0 if cfg.sync == "never" else 1),
                            ("fastdyn_sync", cfg.sync), ("fastdyn_data_dir", cfg.data_dir)])
    stats = node.stats
    # lazy, swept and merged away: counted once per key, as Redis counts
    expired = store_stats["expired_removed"] - node.expired_base
    section("stats", [("total_connections_received", stats["total_connections_received"]),
                      ("total_commands_processed", node.commands_processed),
                      ("instantaneous_ops_per_sec", node.ops_per_sec()),
                      ("rejected_connections", stats["rejected_connections"]),
                      ("expired_keys", expired), ("evicted_keys", 0),
                      ("keyspace_hits", node.keyspace.hits),
                      ("keyspace_misses", node.keyspace.misses)])
    section("replication", [("role", "master"), ("connected_slaves", 0)])
    rep = node.coord.replication()
    section("cluster", [("cluster_enabled", 0), ("fastdyn_n", rep["n"]), ("fastdyn_r", rep["r"]),
                        ("fastdyn_w", rep["w"]), ("fastdyn_n_effective", rep["n_effective"]),
                        ("fastdyn_r_effective", rep["r_effective"]),
                        ("fastdyn_w_effective", rep["w_effective"]),
                        ("fastdyn_members", ",".join(rep["members"])),
                        ("fastdyn_partitions", cfg.partitions),
                        ("fastdyn_seeds", ",".join(cfg.seeds))]
            + (list(node.cluster.info().items()) if node.cluster is not None else []))
    if everything or "keyspace" in wanted:
        # a cluster member counts the keys it holds (DBSIZE counts the whole cluster's)
        keys = node.coord.local_size() if node.cluster is not None else node.coord.size()
        out.append("# Keyspace")
        if keys:
            out.append(f"db0:keys={keys},expires={node.coord.expires()},avg_ttl=0")
        out.append("")
    return "\r\n".join(out)
