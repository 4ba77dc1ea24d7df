import subprocess
import sys


def test_demo_tour_runs_to_the_end():
    out = subprocess.run([sys.executable, "-m", "fastdyn", "demo"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Tour finished" in out.stdout
    for section in ("Embedded store", "Crash safety", "Compaction", "Ring", "Merkle", "Server",
                    "Load test"):
        assert f"== {section}" in out.stdout
