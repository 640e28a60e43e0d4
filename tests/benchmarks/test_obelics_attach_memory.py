import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_attach_memory_benchmark_streams_flat(tmp_path):
    out = tmp_path / "rows.json"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "benchmarks/obelics_attach_memory.py", "--docs", "40", "160", "--samples-per-shard", "20", "--json", str(out)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    small, large = json.loads(out.read_text())
    assert small["images"] == 80 and large["images"] == 320
    assert large["list_mb"] > 3 * small["list_mb"]  # the list holds every image
    assert large["streamed_mb"] < large["list_mb"] / 3  # streaming holds about one staging shard
