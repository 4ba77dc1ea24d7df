"""The one fixture module for tests that run real processes on loopback.

Every server a test talks to is a real process on 127.0.0.1 with a free port and its own
temporary directory: fastdyn nodes (`fastdyn serve`), and redis-server / memcached for the
comparison tests (skipped with a reason when the binary is missing).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

HOST = "127.0.0.1"

# Child Pythons (`python -m fastdyn`, `python -c`) started from the repository root would
# otherwise import the source checkout instead of the installed package; after a plain
# `pip install .` (as .ci/run does) the checkout holds no compiled extensions. The README's
# in-place install does not need this.
os.environ["PYTHONSAFEPATH"] = "1"


def free_port() -> int:
    """A TCP port nobody listens on now, whose port+10000 (the peer port) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout}s")


class ServerProcess:
    """A started server process: its port, data directory and how to stop it."""

    def __init__(self, argv, port, data_dir, log_path, env=None):
        self.argv = list(argv)
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = env
        self.proc = None

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir, env=self.env
        )
        log.close()
        try:
            wait_for_port(self.port, self.proc, timeout)
        except RuntimeError as exc:
            self.kill()
            raise RuntimeError(f"{exc}\n--- log ---\n{self.log()}") from None
        return self

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the process and wait; returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"


def fastdyn_argv(port, data_dir, *extra):
    return [sys.executable, "-m", "fastdyn", "serve", "--host", HOST, "--port", str(port),
            "--data-dir", str(data_dir), *map(str, extra)]


@pytest.fixture
def start_fastdyn(tmp_path):
    """Factory: start_fastdyn(*extra_flags, data_dir=None) -> a running `fastdyn serve`."""
    started = []

    def start(*extra, data_dir=None, port=None):
        port = port or free_port()
        data_dir = data_dir or tmp_path / f"node-{port}"
        os.makedirs(data_dir, exist_ok=True)
        server = ServerProcess(fastdyn_argv(port, data_dir, *extra), port, str(data_dir),
                               str(tmp_path / f"node-{port}.log"))
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def fastdyn_server(start_fastdyn):
    """One running single-node fastdyn."""
    return start_fastdyn()


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (.ci/run installs it with apt-get)")
    return path


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server with persistence off, for differential and comparison tests."""
    binary = _need("redis-server")
    port = free_port()
    server = ServerProcess(
        [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        port, str(tmp_path), str(tmp_path / "redis.log"),
    ).start()
    yield server
    server.kill()


@pytest.fixture
def memcached_server(tmp_path):
    binary = _need("memcached")
    port = free_port()
    argv = [binary, "-l", HOST, "-p", str(port), "-U", "0"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    server = ServerProcess(argv, port, str(tmp_path), str(tmp_path / "memcached.log")).start()
    yield server
    server.kill()
