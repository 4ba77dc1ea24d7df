"""`fastdyn bench`: load-test fastdyn, Redis or memcached; `fastdyn bench compare DIR ...`."""
import argparse
import os
import sys

from fastdyn.errors import FastdynError

EPILOG = """\
workloads (YCSB): A get/set 50/50, B 95/5, C get only, D get/insert 95/5 on the latest keys,
E scan (MGET of 1..--scan-length keys)/insert 95/5, F get/read-modify-write 50/50,
DYN DYN.GET / DYN.GET-then-DYN.PUT-with-context 50/50.
operations for --mix: get set insert del incr scan rmw dyn_get dyn_put dyn_rmw
compare: fastdyn bench compare DIR DIR ... [--out DIR] overlays saved --out runs; the plot
compare.png goes into --out, else beside the first DIR (into the directory that holds it).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("compare", nargs="*", metavar="compare DIR",
                        help="`compare DIR DIR ...`: one table and one plot of saved runs")
    parser.add_argument("--target", action="append",
                        help="redis://[:password@]host:port[/db] (fastdyn or Redis) or "
                             "memcache://host:port; repeat it to run the same load against "
                             "several targets in turn")
    parser.add_argument("--clients", type=int, default=50, help="connections in total (50)")
    parser.add_argument("--pipeline", type=int, default=1,
                        help="requests in flight per connection (1)")
    run_length = parser.add_mutually_exclusive_group()
    run_length.add_argument("--duration", type=float, default=None,
                            help="seconds to measure (10), after --warmup")
    run_length.add_argument("--requests", type=int, default=None,
                            help="operations in total instead of a duration")
    parser.add_argument("--workload", help="YCSB workload A..F, or DYN")
    parser.add_argument("--mix", help="operation weights, e.g. get=0.9,set=0.1")
    parser.add_argument("--keys", type=int, default=100000, help="key space size (100000)")
    parser.add_argument("--key-dist", help="uniform, zipfian, latest or sequential "
                                           "(default: the workload's, else zipfian)")
    parser.add_argument("--zipf-theta", type=float, default=0.99, help="zipfian skew (0.99)")
    parser.add_argument("--value-size", default="100", help="bytes: N or MIN-MAX (100)")
    parser.add_argument("--scan-length", type=int, default=100,
                        help="longest scan, in keys (100)")
    parser.add_argument("--rate", type=float, help="open loop: operations per second in total; "
                        "latency counts from each request's intended send time")
    parser.add_argument("--arrival", choices=("exp", "const"), default="exp",
                        help="open-loop inter-arrival times: exponential or constant (exp)")
    parser.add_argument("--processes", type=int, help="worker processes (one per core)")
    parser.add_argument("--load", action="store_true",
                        help="first fill the key space with SETs (not measured)")
    parser.add_argument("--warmup", type=int, default=0, help="seconds excluded from results")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds before a request without reply counts as timed out (5)")
    parser.add_argument("--resp3", action="store_true", help="speak RESP3 (HELLO 3)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--out", help="write summary.json, CSVs and PNGs into this directory")
    parser.add_argument("--quiet", action="store_true", help="no per-second progress lines")


def _fail(message: str) -> int:
    print(f"fastdyn bench: {message}", file=sys.stderr)
    return 1


def run(args) -> int:
    # numpy's BLAS threads would spin in every forked worker; the tool needs none
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if args.compare:
        if args.compare[0] != "compare":
            return _fail(f"unexpected argument {args.compare[0]!r} (did you mean `compare`?)")
        return _compare(args.compare[1:], args.out)
    if not args.target:
        return _fail("--target URL is required (e.g. --target redis://127.0.0.1:7379)")
    try:
        return _run(args)
    except (FastdynError, ValueError) as exc:
        return _fail(str(exc))


def _compare(directories, out) -> int:
    from fastdyn.bench import compare

    if not directories:
        return _fail("compare needs at least one run directory")
    try:
        runs = [compare.SavedRun(d) for d in directories]
    except ValueError as exc:
        return _fail(str(exc))
    print(compare.table([(run.label, run.summary) for run in runs]))
    # by default beside the runs it compares, not wherever the command happens to run
    if out is None:
        out = os.path.dirname(os.path.abspath(directories[0]))
    path = compare.plot(runs, os.path.join(out, "compare.png"))
    print(f"plot: {path}")
    return 0


def _run(args) -> int:
    from fastdyn.bench import report, runner, workload
    from fastdyn.client import parse_target

    targets = [parse_target(url) for url in args.target]
    workloads = [workload.build(args.workload, args.mix, args.key_dist, args.keys,
                                args.zipf_theta, args.value_size, args.scan_length, t.protocol)
                 for t in targets]
    if args.clients < 1 or args.pipeline < 1:
        raise ValueError("--clients and --pipeline must be at least 1")
    if args.pipeline > 65536:
        raise ValueError("--pipeline is at most 65536")
    if args.requests is not None and args.requests < 1:
        raise ValueError("--requests must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise ValueError("--duration must be above 0")
    if args.rate is not None and not args.rate > 0:
        raise ValueError("--rate must be above 0 operations per second")
    if args.warmup < 0 or args.timeout <= 0:
        raise ValueError("--warmup must be >= 0 and --timeout above 0")
    processes = args.processes or runner.default_processes()
    if processes < 1:
        raise ValueError("--processes must be at least 1")
    for target in targets:  # all of them, before spending minutes on the first
        runner.preflight(target, args.resp3)
    runs = []
    for target, wl in zip(targets, workloads):
        result = _run_target(args, runner, workload, target, wl, processes)
        print(report.table(result))
        out = args.out
        if out and len(targets) > 1:
            out = os.path.join(out, f"{target.scheme}-{target.host}-{target.port}")
        if out:
            for path in report.write(result, out):
                print(f"wrote {path}", file=sys.stderr)
        runs.append((result, out))
    if len(runs) > 1:
        _per_target_table(runs, args.out, report)
    return 0


def _run_target(args, runner, workload, target, wl, processes):
    common = dict(target=target, clients=args.clients, processes=processes,
                  timeout=args.timeout, seed=args.seed, resp3=args.resp3,
                  progress=not args.quiet)
    if args.load:
        load_wl = workload.build(mix="set=1", key_dist="sequential", keys=wl.keys,
                                 value_size=args.value_size, protocol=target.protocol)
        load = runner.run(runner.RunSpec(workload=load_wl, pipeline=max(args.pipeline, 16),
                                         requests=wl.keys, **{**common, "progress": False}))
        failed = load.all().errors + load.all().timeouts
        print(f"load: {load.all().ok:,} keys written in {load.seconds:.2f} s "
              f"({load.throughput:,.0f} ops/s){f', {failed:,} failed' if failed else ''}",
              file=sys.stderr)
    spec = runner.RunSpec(workload=wl, pipeline=args.pipeline, duration=args.duration or 10,
                          requests=args.requests, rate=args.rate, arrival=args.arrival,
                          warmup=args.warmup, **common)
    return runner.run(spec)


def _per_target_table(runs, out, report) -> None:
    """Several --target: one table of all of them, and with --out one overlaid plot."""
    from fastdyn.bench import compare

    print()
    print(compare.table([(result.target, report.summary(result)) for result, _ in runs]))
    if out:
        path = compare.plot([compare.SavedRun(d) for _, d in runs],
                            os.path.join(out, "compare.png"))
        print(f"wrote {path}", file=sys.stderr)
