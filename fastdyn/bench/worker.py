"""One load-generating process: a uvloop event loop driving this worker's share of connections.

It talks to the parent over a pipe: ("ready",) once every connection is set up, then it waits
for ("go", start_ns), then sends ("interval", ...) every second and ("done", ...) at the end,
or ("fatal", message) if the target cannot be used.
"""
import asyncio
import time
import traceback

from fastdyn import _bench
from fastdyn.bench.histogram import Histogram


def sparse_snapshot(snap: dict) -> dict:
    """A Stats.take() snapshot with histograms reduced to their non-empty buckets."""
    dense = ("hist", "service", "max_ns", "max_service_ns")
    out = {k: v for k, v in snap.items() if k not in dense}
    out["hist"] = [Histogram(h, m).to_sparse() for h, m in zip(snap["hist"], snap["max_ns"])]
    if "service" in snap:
        out["service"] = [Histogram(h, m).to_sparse()
                          for h, m in zip(snap["service"], snap["max_service_ns"])]
    return out


def main(pipe, spec: dict) -> None:
    import gc
    import signal

    import uvloop

    # Ctrl-C is the parent's to handle: it stops the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # the hot path allocates no reference cycles: collections would only add pauses
    gc.disable()

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_run(loop, pipe, spec))
    except Exception as exc:  # reported to the parent, which prints one clear line
        pipe.send(("fatal", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        loop.close()
        pipe.close()


async def _run(loop, pipe, spec: dict) -> None:
    gen = _bench.Generator(**spec["generator"])
    worker = _bench.Worker(gen, pipeline=spec["pipeline"], budget=spec["budget"],
                           setup=spec["setup"], setup_count=spec["setup_count"],
                           rate=spec["rate"], arrival=spec["arrival"])
    host, port, label = spec["host"], spec["port"], spec["label"]
    nconns = spec["connections"]
    fatal = loop.create_future()
    all_ready = loop.create_future()
    ready = set()

    def on_ready(conn):
        ready.add(conn)
        if len(ready) >= nconns and not all_ready.done():
            all_ready.set_result(None)

    def on_fatal(message):
        if not fatal.done():
            fatal.set_result(message)

    worker.on_ready = on_ready
    worker.on_fatal = on_fatal
    for _ in range(nconns):
        try:
            await loop.create_connection(worker.connection, host, port)
        except OSError as exc:
            pipe.send(("fatal", f"cannot connect to {label}: {exc.strerror or exc}", ""))
            return
    await asyncio.wait([all_ready, fatal], timeout=spec["timeout"],
                       return_when=asyncio.FIRST_COMPLETED)
    if fatal.done():
        pipe.send(("fatal", f"{label} refused the connection setup: {fatal.result()}", ""))
        return
    if not all_ready.done():
        pipe.send(("fatal", f"{label} did not answer the connection setup within "
                            f"{spec['timeout']:g} s", ""))
        return
    pipe.send(("ready",))

    message = await loop.run_in_executor(None, pipe.recv)
    if message[0] != "go":
        return
    start_ns = message[1]
    finished = loop.create_future()

    async def reconnect():
        # the lost connection's in-flight requests are already counted as errors
        while not worker.stopping:
            await asyncio.sleep(0.2)
            try:
                await loop.create_connection(worker.connection, host, port)
                return
            except OSError:
                continue

    def on_lost(conn, reason):
        worker.forget(conn)
        if not worker.stopping:
            loop.create_task(reconnect())

    def on_done():
        if not finished.done():
            finished.set_result(None)

    worker.on_lost = on_lost
    worker.on_done = on_done
    worker.on_fatal = None
    await asyncio.sleep(max(0.0, (start_ns - _bench.now_ns()) / 1e9))
    cpu_start = time.process_time()
    worker.start(start_ns)

    if worker.open_loop:
        # sends are also checked after every reply batch; the timer covers idle stretches
        loop.add_reader(worker.timer_fd(), worker.on_timer)
        worker.arm_timer()

    interval = 0
    duration = spec["duration"]
    timeout = spec["timeout"]
    while True:
        boundary = start_ns + (interval + 1) * 1_000_000_000
        try:
            await asyncio.wait_for(asyncio.shield(finished),
                                   max(0.0, (boundary - _bench.now_ns()) / 1e9))
            # a --requests run ended: its last, partial interval ends now
            _send_interval(pipe, worker, interval, _bench.now_ns())
            break
        except asyncio.TimeoutError:
            pass
        if duration is not None and interval + 1 >= duration:
            worker.stopping = True
            worker.check_done()
            # replies still in flight get `timeout` seconds to arrive; they belong to the
            # last second, which is when their requests were sent
            try:
                await asyncio.wait_for(asyncio.shield(finished), timeout)
            except asyncio.TimeoutError:
                pass
            # what is still in flight timed out; what was due but never sent is dropped
            worker.abandon_all(f"no reply within {timeout:g} s at the end of the run")
            _send_interval(pipe, worker, interval, boundary)
            break
        worker.expire(timeout)
        _send_interval(pipe, worker, interval, boundary)
        interval += 1
    # this process's own CPU time while generating load: the tool's cost per operation
    if worker.open_loop:
        loop.remove_reader(worker.timer_fd())
        worker.close_timer()
    pipe.send(("done", worker.dropped, time.process_time() - cpu_start))
    worker.close()
    await asyncio.sleep(0)


def _send_interval(pipe, worker, index: int, end_ns: int) -> None:
    snap = sparse_snapshot(worker.stats.take())
    snap["backlog"] = worker.backlog_size
    pipe.send(("interval", index, end_ns, snap))
