import subprocess
import sys


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
