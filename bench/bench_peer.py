"""Peer transport round trips over loopback: one client process, one server process.

At each pipeline depth D the client keeps D requests in flight through one PeerPool (each
completion issues the next) until --requests have completed. Workloads:

* ping  — PING, answered by the connection itself: the transport alone;
* put   — REPLICA_PUT of --batch keys (16 B) with objects of --value B into a dict replica,
          packed and its results unpacked by the client: what replicated SETs add on the wire
          (the coordinator sends one such batch per peer per event-loop turn);
* echo  — the baseline in the same run: a bare uvloop Protocol echoing fixed-size messages of
          the ping frame's size, no framing, no ids — the floor any Python transport pays.

Reported: requests/s, mean round trip (µs; D / throughput), and CPU µs per request of the
client and of the server process (from /proc, so Linux only); for put also per key.

    python bench/bench_peer.py [--requests 100000] [--depths 1,64] [--value 100] [--batch 1,16]
                               [--repeat 3]
"""
import argparse
import asyncio
import os
import subprocess
import sys
import time

import uvloop

from fastdyn.peer import messages as m
from fastdyn.peer.codec import HEADER_SIZE
from fastdyn.peer.memory import MemoryReplica
from fastdyn.peer.pool import PeerPool
from fastdyn.peer.server import PeerServer

HOST = "127.0.0.1"
ECHO_SIZE = HEADER_SIZE


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def serve(kind: str) -> None:
    loop = asyncio.get_running_loop()
    if kind == "echo":
        server = await loop.create_server(Echo, HOST, 0)
        port = server.sockets[0].getsockname()[1]
    else:
        peer = PeerServer(MemoryReplica(), "")
        port = await peer.start(HOST, 0)
        peer.local_name = f"{HOST}:{port}"
    print(port, flush=True)
    await loop.run_in_executor(None, sys.stdin.read)    # until the client closes stdin


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class EchoClient(asyncio.Protocol):
    """Closed loop over the echo server: D fixed-size messages in flight."""

    def __init__(self, total, depth, done):
        self.total = total
        self.depth = depth
        self.done = done
        self.sent = 0
        self.received = 0
        self.partial = 0

    def connection_made(self, transport):
        self.transport = transport
        self.sent = min(self.depth, self.total)
        transport.write(b"x" * ECHO_SIZE * self.sent)

    def data_received(self, data):
        self.partial += len(data)
        got, self.partial = divmod(self.partial, ECHO_SIZE)
        self.received += got
        more = min(got, self.total - self.sent)
        if more:
            self.sent += more
            self.transport.write(b"x" * ECHO_SIZE * more)
        if self.received == self.total:
            self.done.set_result(None)


async def run_echo(port, total, depth):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport, _ = await loop.create_connection(lambda: EchoClient(total, depth, done), HOST,
                                                port)
    await done
    transport.close()


async def run_peer(port, total, depth, workload, value, batch):
    loop = asyncio.get_running_loop()
    peer = f"{HOST}:{port}"
    pool = PeerPool(f"{HOST}:1")
    done = loop.create_future()
    state = {"sent": 0, "received": 0, "failed": 0}
    obj = b"v" * value
    keys = [b"key:%012d" % i for i in range(batch)]

    if workload == "ping":
        def issue():
            pool.request(peer, m.PING, b"", 10.0, completed)
    else:
        def issue():
            pool.request(peer, m.REPLICA_PUT, m.pack_puts([(key, obj) for key in keys]), 10.0,
                         completed)

    def completed(result):
        if isinstance(result, Exception):
            state["failed"] += 1
        elif workload == "put":
            m.unpack_results(result)
        state["received"] += 1
        if state["sent"] < total:
            state["sent"] += 1
            issue()
        elif state["received"] == total and not done.done():
            done.set_result(None)

    for _ in range(min(depth, total)):
        state["sent"] += 1
        issue()
    await done
    pool.close()
    if state["failed"]:
        raise SystemExit(f"{state['failed']} requests failed")


def measure(workload, total, depth, value, batch, repeat):
    """Best of `repeat` runs against a fresh server process: (req/s, client µs, server µs)."""
    server = subprocess.Popen([sys.executable, __file__, "--serve",
                               "echo" if workload == "echo" else "peer"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        port = int(server.stdout.readline())
        best = None
        for _ in range(repeat):
            s0, c0, t0 = cpu_seconds(server.pid), time.process_time(), time.perf_counter()
            if workload == "echo":
                uvloop.run(run_echo(port, total, depth))
            else:
                uvloop.run(run_peer(port, total, depth, workload, value, batch))
            elapsed = time.perf_counter() - t0
            client = time.process_time() - c0
            served = cpu_seconds(server.pid) - s0
            row = (total / elapsed, client / total * 1e6, served / total * 1e6)
            if best is None or row[0] > best[0]:
                best = row
        return best
    finally:
        server.stdin.close()
        server.wait(10)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--depths", default="1,64")
    parser.add_argument("--value", type=int, default=100)
    parser.add_argument("--batch", default="1,16", help="keys per put request")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workloads", default="echo,ping,put")
    parser.add_argument("--serve", choices=["peer", "echo"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(serve(args.serve))
        return
    print(f"{'workload':9} {'depth':>5} {'req/s':>10} {'round trip µs':>14} "
          f"{'client CPU µs/req':>18} {'server CPU µs/req':>18} {'vs echo':>8} {'CPU µs/key':>11}")
    runs = []
    for workload in args.workloads.split(","):
        batches = [int(b) for b in args.batch.split(",")] if workload == "put" else [1]
        runs += [(workload, batch) for batch in batches]
    for depth in [int(d) for d in args.depths.split(",")]:
        echo_rate = None
        for workload, batch in runs:
            rate, client, served = measure(workload, args.requests, depth, args.value, batch,
                                           args.repeat)
            if workload == "echo":
                echo_rate = rate
            ratio = f"{rate / echo_rate:.2f}x" if echo_rate else ""
            label = f"put×{batch}" if workload == "put" else workload
            per_key = f"{(client + served) / batch:.2f}" if workload == "put" else ""
            print(f"{label:9} {depth:>5} {rate:>10,.0f} {depth / rate * 1e6:>14.1f} "
                  f"{client:>18.2f} {served:>18.2f} {ratio:>8} {per_key:>11}", flush=True)

if __name__ == "__main__":
    main()
