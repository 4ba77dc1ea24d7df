"""`fastdyn serve`: run one node until SIGTERM or SIGINT, then flush, fsync and exit 0."""
import gc
import logging
import sys

from fastdyn.server import config as server_config

# Net container allocations between young-generation collections. A node under load holds a
# few container objects per request in flight (a quorum request waits for its replicas), so
# the default 700 is crossed again and again by requests that reference counting frees anyway.
GC_YOUNG_THRESHOLD = 50_000


def add_arguments(parser):
    server_config.add_arguments(parser)
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"))


def run(args) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = server_config.from_args(args)
    except server_config.ConfigError as exc:
        print(f"fastdyn serve: {exc}", file=sys.stderr)
        return 2
    import uvloop

    from fastdyn.errors import ListenError, StorageError
    from fastdyn.server.assemble import assemble

    try:
        node = assemble(cfg)
    except (ListenError, StorageError) as exc:
        print(f"fastdyn serve: {exc}", file=sys.stderr)
        return 1
    # what start-up built lives as long as the process: no collection walks it again
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    return uvloop.run(node.serve())
