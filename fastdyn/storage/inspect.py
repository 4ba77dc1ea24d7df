"""`fastdyn inspect DATA_DIR`: what a data directory holds, read without changing it.

The store is opened read-only (it takes the directory lock, so a directory a running process
holds is refused with a clear message), replayed exactly as a start-up would, and described:
keys, live and dead bytes per segment, expired keys not yet swept, keydir memory, what this
read found and the recovery report of the last real open.
"""
import json
import os
import sys

from fastdyn.errors import StorageError, StoreLocked

RECOVERY_FILE = "RECOVERY.json"


def add_arguments(parser):
    parser.add_argument("data_dir", metavar="DATA_DIR", help="a store's data directory")
    parser.add_argument("--keys", type=int, default=20, metavar="N",
                        help="list up to N keys (default 20, 0 for none)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _last_recovery(path):
    try:
        with open(os.path.join(path, RECOVERY_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _describe_recovery(report):
    parts = [f"{report.get('segments', 0)} segments ({report.get('from_hints', 0)} from hints)"]
    for item in report.get("truncated", []):
        parts.append(f"torn tail truncated: {item['file']} at {item['offset']} ({item['bytes']} B)")
    for item in report.get("corrupt", []):
        parts.append(f"corrupt record skipped: {item['file']} at {item['offset']} ({item['bytes']} B)")
    for name in report.get("hint_fallbacks", []):
        parts.append(f"bad hint file ignored: {name}")
    for name in report.get("cleared", []):
        parts.append(f"cleared segment removed: {name}")
    for name in report.get("migrated", []):
        parts.append(f"format-1 segment converted: {name}")
    return parts


def inspect(path, max_keys=20):
    """The statistics of the store in `path` as a dict (raises StoreLocked/StorageError)."""
    from fastdyn.storage import Store

    with Store(path, read_only=True) as store:
        stats = store.stats()
        keys = []
        if max_keys:
            for key in store:
                keys.append(key)
                if len(keys) >= max_keys:
                    break
    stats["sample_keys"] = keys
    stats["last_recovery"] = _last_recovery(path)
    return stats


def run(args):
    path = os.path.abspath(args.data_dir)
    try:
        stats = inspect(path, max(0, args.keys))
    except StoreLocked as exc:
        print(f"fastdyn inspect: {exc}. Stop that process (or use INFO on it) to inspect.",
              file=sys.stderr)
        return 1
    except StorageError as exc:
        print(f"fastdyn inspect: {exc}", file=sys.stderr)
        return 2
    if args.json:
        stats = dict(stats, sample_keys=[k.decode("utf-8", "backslashreplace")
                                         for k in stats["sample_keys"]])
        print(json.dumps(stats, indent=1))
        return 0
    print(f"data directory  {stats['path']}")
    print(f"keys            {stats['keys']}  (with expiry {stats['keys_with_expiry']}, "
          f"expired not yet swept {stats['expired_keys']})")
    total = stats["live_bytes"] + stats["dead_bytes"]
    print(f"bytes           {_human(total)} on disk, {_human(stats['live_bytes'])} live, "
          f"{_human(stats['dead_bytes'])} dead")
    print(f"keydir          {_human(stats['keydir_bytes'])}, "
          f"{stats['keydir_bytes_per_key']:.1f} B/key "
          f"({stats['keydir_overhead_per_key']:.1f} B/key beyond the key bytes)")
    print("segments")
    print(f"  {'file':<22} {'bytes':>12} {'live':>12} {'dead':>12} {'dead%':>6}  hint")
    for seg in stats["segments"]:
        size = seg["bytes"]
        pct = 100.0 * seg["dead_bytes"] / size if size else 0.0
        print(f"  {seg['file']:<22} {size:>12} {seg['live_bytes']:>12} {seg['dead_bytes']:>12} "
              f"{pct:>5.1f}%  {'yes' if seg['hint'] else 'no'}")
    print("this read        " + "; ".join(_describe_recovery(stats["recovery"])))
    last = stats["last_recovery"]
    if last is None:
        print("last open        no recovery report")
    else:
        print("last open        " + "; ".join(_describe_recovery(last)))
    if stats["sample_keys"]:
        print(f"keys (first {len(stats['sample_keys'])})")
        for key in stats["sample_keys"]:
            print(f"  {key!r}")
    return 0
