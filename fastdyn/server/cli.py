"""`fastdyn serve`: run one node until SIGTERM or SIGINT, then flush, fsync and exit 0."""
import logging
import sys

from fastdyn.server import config as server_config


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
    from fastdyn.server.server import Node

    try:
        node = Node(cfg)
    except (ListenError, StorageError) as exc:
        print(f"fastdyn serve: {exc}", file=sys.stderr)
        return 1
    return uvloop.run(node.serve())
