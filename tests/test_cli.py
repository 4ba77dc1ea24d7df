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
