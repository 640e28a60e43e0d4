import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_obelics_memory_benchmark_runs_both_paths_at_two_scales(tmp_path):
    out = tmp_path / "runs.json"
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "benchmarks/obelics_memory.py", "--docs", "400", "--partition-docs", "200", "--scales", "1", "2",
         "--json", str(out)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    runs = {(r["docs"], r["path"]): r for r in result["runs"]}
    assert set(runs) == {(400, "stored"), (400, "re-cleaned"), (800, "stored"), (800, "re-cleaned")}
    for (docs, path), run in runs.items():
        assert run["balanced"] and 0 < run["kept"] < docs
        assert run["cleaned_score"] == run["partitions"] == docs // 200
        assert run["cleaned_write"] == (0 if path == "stored" else run["partitions"])  # one pass against two
        assert run["stored_mb"] > 0 if path == "stored" else run["stored_mb"] == 0
        assert run["driver_mb"] > 0 and run["actor_mb"] > 0 and run["write_mb"] > 0
    assert all(result["cpu_us_per_doc"][k] > 0 for k in ("clean", "store", "read"))
    assert "stored driver: x" in done.stdout and "re-cleaned" in done.stdout  # the table and the scaling lines
