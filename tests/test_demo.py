import os
import pathlib
import shutil
import site
import subprocess
import sys

import pytest

import fastdyn

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_demo_tour_runs_to_the_end():
    out = subprocess.run([sys.executable, "-m", "fastdyn", "demo"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Tour finished" in out.stdout
    for section in ("Embedded store", "Crash safety", "Compaction", "Ring", "Merkle", "Server",
                    "Load test", "Cluster", "Failover", "Hinted handoff", "Siblings"):
        assert f"== {section}" in out.stdout


def readme_example() -> str:
    """The README's embedded example: its first ```python block."""
    text = (REPO / "README.md").read_text()
    start = text.index("```python\n") + len("```python\n")
    return text[start:text.index("```", start)]


def run_example_in_checkout(tmp_path, built: bool):
    """`python example.py` with the README's example, in a directory laid out as the checkout
    (setup.py, ext/, fastdyn/), whose fastdyn/ holds the compiled extensions only if `built`,
    as after `pip install -e .`."""
    root = tmp_path / "checkout"
    root.mkdir()
    shutil.copy(REPO / "setup.py", root)
    (root / "ext").mkdir()
    skip = ["__pycache__"] if built else ["__pycache__", "*.so"]
    shutil.copytree(fastdyn.__path__[0], root / "fastdyn", ignore=shutil.ignore_patterns(*skip))
    (root / "example.py").write_text(readme_example())
    # As a user's shell runs it, the script's directory first on the path, with the installed
    # packages after it. -S leaves out the .pth hooks: an editable install's import hook would
    # otherwise lend the unbuilt copy this checkout's compiled extensions.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    env["PYTHONPATH"] = os.pathsep.join(site.getsitepackages())
    out = subprocess.run([sys.executable, "-S", "example.py"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=60)
    return root, out


def test_the_readme_example_runs_in_a_checkout_built_in_place(tmp_path):
    _, out = run_example_in_checkout(tmp_path, built=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "b'alice' 2 True\n"


def test_the_readme_example_in_an_unbuilt_checkout_names_the_cause_and_the_fix(tmp_path):
    root, out = run_example_in_checkout(tmp_path, built=False)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        f"ImportError: fastdyn is imported from the source checkout {root}, which has no "
        "compiled extensions (fastdyn._logstore and the others). Build them in place with "
        "`pip install -e .` in the checkout, or run Python from another directory to use an "
        "installed fastdyn.")


def test_a_rebuild_with_nothing_changed_regenerates_and_compiles_nothing(tmp_path):
    # pip builds in a fresh environment whose Cython files are newer than every generated .c;
    # that alone must not make setup.py cythonize and recompile the extensions again.
    pytest.importorskip("Cython")
    pytest.importorskip("setuptools")  # not in every virtual environment since Python 3.12
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path)
    shutil.copytree(REPO / "ext", tmp_path / "ext",
                    ignore=shutil.ignore_patterns("*.c", "*.html"))
    (tmp_path / "fastdyn").mkdir()

    def build(*options):
        out = subprocess.run([sys.executable, "setup.py", *options, "build_ext", "--inplace"],
                             cwd=tmp_path, env={**os.environ, "FASTDYN_ONLY": "_glob"},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout + out.stderr

    def outputs():
        return {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.suffix in (".o", ".so")}

    assert "Cythonizing ext/_glob.pyx" in build()
    built = outputs()
    assert len(built) >= 2  # the object file and the library
    # the sources and the generated C, older than the installed Cython's own files
    for path in (tmp_path / "ext").iterdir():
        os.utime(path, (1e6, 1e6))
    c_file = tmp_path / "ext" / "_glob.c"
    os.utime(c_file, (2e6, 2e6))
    assert "Cythonizing" not in build()
    assert os.path.getmtime(c_file) == 2e6 and outputs() == built
    # an edited .pyx is cythonized again
    os.utime(tmp_path / "ext" / "_glob.pyx", (3e6, 3e6))
    assert "Cythonizing ext/_glob.pyx" in build("--dry-run")
