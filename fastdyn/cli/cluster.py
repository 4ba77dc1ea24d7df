"""`fastdyn cluster up|down|status|join|leave`: a local cluster of `fastdyn serve` processes,
and membership changes of any cluster.

`cluster join NODE SEED` tells the node whose client address is NODE (host:port; started with
--seeds, its own peer address being enough) to join the cluster of SEED (a member's
host:peer-port); `cluster leave NODE` tells NODE to hand its partitions off and exit (or, with
`--via HOST:PORT`, asks that member to make NODE leave).

Node i of `cluster up --nodes K --base-port B --data-dir D` listens for clients on B+i and for
peers on B+i+10000, keeps its data in D/node<i> and its log in D/node<i>.log, and is given every
node's peer address as --seeds (itself included; a node recognises its own address). The pids
go to D/cluster.json, which `cluster down` reads.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import quote

STATE = "cluster.json"
PEER_OFFSET = 10000


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start K nodes on this machine", allow_abbrev=False)
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--base-port", type=int, default=7379)
    up.add_argument("--data-dir", default="fastdyn-cluster")
    up.add_argument("--detach", action="store_true",
                    help="return once every node listens (stop them with `cluster down`)")
    up.add_argument("--sync", default="interval", choices=("always", "interval", "never"))
    up.add_argument("serve_args", nargs="*", metavar="-- SERVE-OPTION",
                    help="further options for every `fastdyn serve` (after --)")
    down = sub.add_parser("down", help="stop the nodes `cluster up` started", allow_abbrev=False)
    down.add_argument("--data-dir", default="fastdyn-cluster")
    status = sub.add_parser("status", help="members as one node sees them", allow_abbrev=False)
    status.add_argument("--host", default="127.0.0.1")
    status.add_argument("--port", type=int, default=7379)
    status.add_argument("--partitions", action="store_true",
                        help="also each partition's Merkle root and last anti-entropy exchange")
    _password_option(status)
    join = sub.add_parser("join", help="make a node join the cluster of a seed",
                          allow_abbrev=False)
    join.add_argument("node", help="the joining node's client address, HOST:PORT")
    join.add_argument("seed", help="a member's peer address, HOST:PEER-PORT")
    leave = sub.add_parser("leave", help="make a member hand off its data and exit",
                           allow_abbrev=False)
    leave.add_argument("node", help="the leaving member: its client address (= its name)")
    leave.add_argument("--force", action="store_true",
                       help="remove a dead member at once, without a handoff (needs --via)")
    _password_option(join)
    _password_option(leave)
    leave.add_argument("--via", help="send the request through this member (HOST:PORT), e.g. "
                                     "when NODE does not answer clients")


def _password_option(parser) -> None:
    parser.add_argument("--password", default=os.environ.get("FASTDYN_PASSWORD"),
                        help="the nodes' requirepass (default: $FASTDYN_PASSWORD)")


def run(args) -> int:
    return {"up": up, "down": down, "status": status, "join": join,
            "leave": leave}[args.action](args)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # as the servers bind: a port left in TIME_WAIT by a stopped node is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def up(args) -> int:
    if not 1 <= args.nodes <= 100:
        print("fastdyn cluster up: --nodes must be 1..100", file=sys.stderr)
        return 2
    ports = [args.base_port + i for i in range(args.nodes)]
    if ports[0] < 1 or ports[-1] + PEER_OFFSET > 65535:
        print("fastdyn cluster up: ports out of range (peer port = port + 10000 <= 65535)",
              file=sys.stderr)
        return 2
    busy = [p for port in ports for p in (port, port + PEER_OFFSET) if not _port_free(p)]
    if busy:
        print(f"fastdyn cluster up: ports in use: {', '.join(map(str, busy))}", file=sys.stderr)
        return 1
    root = os.path.abspath(args.data_dir)
    os.makedirs(root, exist_ok=True)
    seeds = ",".join(f"127.0.0.1:{p + PEER_OFFSET}" for p in ports)
    procs = []
    for i, port in enumerate(ports):
        argv = [sys.executable, "-m", "fastdyn", "serve", "--port", str(port),
                "--data-dir", os.path.join(root, f"node{i}"), "--seeds", seeds,
                "--sync", args.sync, *args.serve_args]
        with open(os.path.join(root, f"node{i}.log"), "ab") as log:
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=args.detach))
    with open(os.path.join(root, STATE), "w") as f:
        json.dump({"nodes": [{"port": port, "peer_port": port + PEER_OFFSET, "pid": p.pid,
                              "data_dir": os.path.join(root, f"node{i}")}
                             for i, (port, p) in enumerate(zip(ports, procs))]}, f, indent=1)
    deadline = time.monotonic() + 30
    waiting = dict(zip(ports, procs))
    while waiting and time.monotonic() < deadline:
        for port, proc in list(waiting.items()):
            if proc.poll() is not None:
                print(f"fastdyn cluster up: node on port {port} exited with {proc.returncode}; "
                      f"see {root}/node{ports.index(port)}.log", file=sys.stderr)
                _stop(procs)
                return 1
            if _listening(port):
                del waiting[port]
        time.sleep(0.05)
    if waiting:
        print(f"fastdyn cluster up: nodes on ports {sorted(waiting)} do not listen after 30 s",
              file=sys.stderr)
        _stop(procs)
        return 1
    print(f"{args.nodes} nodes up: client ports {ports[0]}..{ports[-1]}, data in {root}")
    if args.detach:
        return 0
    print("Ctrl-C stops them.")
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    return _stop(procs)


def _stop(procs) -> int:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    worst = 0
    for p in procs:
        try:
            worst = max(worst, abs(p.wait(timeout=30)))
        except subprocess.TimeoutExpired:
            p.kill()
            worst = 1
    return worst


def down(args) -> int:
    path = os.path.join(os.path.abspath(args.data_dir), STATE)
    try:
        with open(path) as f:
            nodes = json.load(f)["nodes"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"fastdyn cluster down: no cluster state in {path}: {exc}", file=sys.stderr)
        return 1
    alive = []
    for node in nodes:
        try:
            os.kill(node["pid"], signal.SIGTERM)
            alive.append(node)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while alive and time.monotonic() < deadline:
        alive = [n for n in alive if _pid_alive(n["pid"])]
        time.sleep(0.1)
    for node in alive:
        os.kill(node["pid"], signal.SIGKILL)
    os.unlink(path)
    print(f"{len(nodes)} nodes stopped")
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a child of ours that exited is a zombie until reaped
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def status(args) -> int:
    from fastdyn.client import connect
    from fastdyn.errors import FastdynError

    try:
        with connect(_url(f"{args.host}:{args.port}", args.password)) as client:
            members = client.execute(b"DYN.MEMBERS")
            info = client.execute(b"INFO", b"cluster")
            rows = client.execute(b"DYN.ANTIENTROPY") if args.partitions else []
    except (OSError, FastdynError) as exc:
        print(f"fastdyn cluster status: {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"{'name':<24} {'address':<22} {'status':<8} partitions")
    for entry in members:
        fields = dict(zip(entry[::2], entry[1::2]))
        print(f"{_s(fields.get(b'name')):<24} {_s(fields.get(b'address')):<22} "
              f"{_s(fields.get(b'status')):<8} {fields.get(b'partitions', 0)}")
    print(_s(info).strip())
    if rows:
        print(f"{'partition':>9} {'merkle root':<16} last exchange (s ago)")
        for partition, root, age in rows:
            print(f"{partition:>9} {_s(root):<16} {_s(age)}")
    return 0


def _url(address: str, password: str | None) -> str:
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{address}"


def _ask(address: str, password, *command) -> int:
    """Send one command to the node at HOST:PORT; print its answer or error."""
    from fastdyn.client import connect
    from fastdyn.errors import FastdynError

    try:
        with connect(_url(address, password)) as client:
            reply = client.execute(*command)
    except (OSError, FastdynError) as exc:
        print(f"fastdyn cluster: {address}: {exc}", file=sys.stderr)
        return 1
    print(_s(reply))
    return 0


def join(args) -> int:
    return _ask(args.node, args.password, b"DYN.JOIN", args.seed.encode())


def leave(args) -> int:
    if args.force and not args.via:
        print("fastdyn cluster leave: --force needs --via HOST:PORT (a live member)",
              file=sys.stderr)
        return 2
    if args.via:
        return _ask(args.via, args.password, b"DYN.LEAVE", args.node.encode(),
                    *([b"FORCE"] * args.force))
    return _ask(args.node, args.password, b"DYN.LEAVE")


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
