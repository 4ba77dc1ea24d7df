import asyncio
import socket
import subprocess
import sys
import threading
import time

import pytest

import fastdyn
from conftest import HOST, free_port


def run(*args):
    return subprocess.run([sys.executable, "-m", "fastdyn", *args], capture_output=True, text=True)


def test_help_lists_commands():
    out = run("--help")
    assert out.returncode == 0
    for name in ("serve", "bench", "inspect", "demo"):
        assert name in out.stdout


def test_unknown_command_is_a_clear_error():
    out = run("frobnicate")
    assert out.returncode == 2
    assert "unknown command 'frobnicate'" in out.stderr


def test_a_checkout_without_compiled_extensions_is_a_clear_error(tmp_path):
    # A copy of the package's Python files alone, first on the path, as a source checkout is
    # when `python -m fastdyn` runs from the repository root before anything was built
    # (-S: no site-packages, so no installed or editable fastdyn is found instead).
    import shutil

    import fastdyn

    shutil.copytree(fastdyn.__path__[0], tmp_path / "fastdyn",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    out = subprocess.run([sys.executable, "-S", "-m", "fastdyn", "demo"],
                         capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 1
    assert "compiled extension fastdyn._" in out.stderr and "pip install" in out.stderr


@pytest.mark.parametrize("argv, abbreviation", [
    (["serve", "--prot", "7502"], "--prot"),          # once taken as --protected-mode
    (["bench", "--targ", "redis://127.0.0.1:1"], "--targ"),
])
def test_an_abbreviated_option_is_a_usage_error(argv, abbreviation):
    out = run(*argv)
    assert out.returncode == 2
    assert f"unrecognized arguments: {abbreviation}" in out.stderr


def test_a_busy_port_fails_before_the_data_directory_is_created(tmp_path):
    port = free_port()
    with socket.socket() as busy:
        busy.bind((HOST, port))
        busy.listen()
        data_dir = tmp_path / "data"
        out = run("serve", "--port", str(port), "--data-dir", str(data_dir))
    assert not data_dir.exists()
    assert out.returncode == 1
    assert out.stderr == (f"fastdyn serve: cannot listen on 127.0.0.1:{port}: "
                          "Address already in use\n")


def test_a_node_serves_and_stops_in_a_thread_without_signal_errors(tmp_path):
    from fastdyn.server.config import ServerConfig
    from fastdyn.server.assemble import assemble

    node = assemble(ServerConfig(port=free_port(), data_dir=str(tmp_path / "d")).finish())
    loop = asyncio.new_event_loop()
    failures = []

    def serve():
        try:
            loop.run_until_complete(node.serve())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with socket.create_connection((HOST, node.config.port), timeout=5) as sock:
            sock.sendall(b"SET k v\r\n")
            assert sock.recv(16) == b"+OK\r\n"
    finally:
        while node.stopping is None and thread.is_alive():
            time.sleep(0.01)
        if thread.is_alive():
            loop.call_soon_threadsafe(node.stopping.set)
        thread.join(10)
    assert failures == []
    assert not thread.is_alive()
    loop.close()
    with fastdyn.open(str(tmp_path / "d")) as store:
        assert store[b"k"] == b"v"
