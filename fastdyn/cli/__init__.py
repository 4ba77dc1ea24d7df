"""The `fastdyn` command: each subcommand lives in the module that does its job.

A subcommand module provides `add_arguments(parser)` and `run(args) -> int`; it is imported only
when chosen, so `fastdyn serve` does not pay for the bench tool's imports.
"""
import argparse
import importlib
import sys

COMMANDS = {
    "serve": ("fastdyn.server.cli", "run a node: RESP clients on --port, peers on --peer-port"),
    "cluster": ("fastdyn.cli.cluster", "start, stop or inspect a cluster of local nodes"),
    "bench": ("fastdyn.bench.cli", "load-test fastdyn, Redis or memcached"),
    "inspect": ("fastdyn.storage.inspect", "print storage statistics of a data directory"),
    "demo": ("fastdyn.demo", "a short tour of the whole system"),
}


def _usage() -> str:
    lines = ["usage: fastdyn COMMAND [options]", "", "commands:"]
    for name, (module, summary) in COMMANDS.items():
        lines.append(f"  {name:<10} {summary}")
    lines.append("")
    lines.append("`fastdyn COMMAND --help` describes a command's options.")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from fastdyn import __version__

        print(f"fastdyn {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"fastdyn: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        # no prefix matching: `--prot 7502` must not silently mean --protected-mode
        parser = argparse.ArgumentParser(prog=f"fastdyn {name}", description=COMMANDS[name][1],
                                         allow_abbrev=False)
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        return module.run(args) or 0
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("fastdyn._"):
            raise
        print(_missing_extension(exc.name), file=sys.stderr)
        return 1


def _missing_extension(module_name: str) -> str:
    import fastdyn

    return (f"fastdyn: the compiled extension {module_name} is missing from "
            f"{fastdyn.__path__[0]}.\nThat is a source checkout: run fastdyn from another "
            "directory after `pip install .`, or build in place with `pip install -e .`.")
