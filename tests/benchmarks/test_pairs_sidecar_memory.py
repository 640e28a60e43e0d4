import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_pairs_sidecar_memory_benchmark_runs_at_tiny_size(tmp_path):
    out = tmp_path / "rows.json"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "benchmarks/pairs_sidecar_memory.py", "--rows", "60", "240", "--json", str(out)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    small, large = json.loads(out.read_text())
    assert (small["rows"], large["rows"]) == (60, 240)
    assert small["kept"] == 60 and 235 <= large["kept"] < 240  # scores above 0.99 dropped
    assert small["score_mb"] > 0 and large["write_mb"] > 0
