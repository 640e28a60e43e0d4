import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_shard_writer_benchmark_shows_a_flat_peak(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/shard_writer_memory.py", "--samples", "4", "16", "--sample-kb", "64", "--json", str(out)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    peaks = {(row["mode"], row["samples"]): row["peak_mb"] for row in json.loads(out.read_text())}
    assert peaks["old", 16] > 0.9  # sixteen samples of 64 KiB held at once
    assert peaks["new", 16] < peaks["old", 16] / 3 and peaks["new", 16] < 2 * peaks["new", 4] + 0.1
