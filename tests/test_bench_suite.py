"""bench/suite.py rewrites only its own block of docs/benchmarks.md."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("suite", os.path.join(ROOT, "bench", "suite.py"))
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)

DOC = """# fastdyn benchmarks

## Storage engine

storage text

## Load generator and suite

my own prose

## Later section

later text
"""


def test_first_write_adds_the_markers_at_the_end_of_the_section(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text(DOC)
    suite.write_docs("TABLE 1", str(path))
    text = path.read_text()
    assert text.startswith("# fastdyn benchmarks\n\n## Storage engine\n\nstorage text\n")
    mine = text.split("## Load generator and suite", 1)[1].split("## Later section")[0]
    assert "my own prose" in mine and f"{suite.BEGIN}\nTABLE 1\n{suite.END}" in mine
    assert text.endswith("## Later section\n\nlater text\n")


def test_rewrite_replaces_only_the_block(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text(DOC)
    suite.write_docs("TABLE 1", str(path))
    before = path.read_text()
    suite.write_docs("TABLE 2\nmore", str(path))
    after = path.read_text()
    assert "TABLE 1" not in after and f"{suite.BEGIN}\nTABLE 2\nmore\n{suite.END}" in after
    assert after.replace("TABLE 2\nmore", "TABLE 1") == before


def test_missing_binaries_are_skipped_with_a_reason():
    target = suite.Target("x", "X", "no-such-binary-here", lambda port, d: [])
    assert not target.available()
