import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_suite_runs_every_section_in_smoke_mode(tmp_path):
    out = tmp_path / "suite.json"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_suite.py", "--smoke", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True
    sections = report["sections"]
    for name in ("perplexity", "nsfw"):
        rows = sections[name]["rows"]
        assert rows and all({"section", "name", "value", "unit"} <= row.keys() for row in rows)
    trainer = sections["trainer"]
    assert "rows" in trainer or "absent" in trainer["skipped"]
    throughput = next(r for r in sections["perplexity"]["rows"] if r["unit"] == "tokens/s" and r["value"])
    assert throughput["value"] > 0 and throughput["baseline_value"] > 0
    accuracy = next(r for r in sections["perplexity"]["rows"] if r["unit"] == "relative")
    assert accuracy["value"] < 1e-5 and accuracy["met"]  # fp32 on a CPU: the packed path is exact
    assert "decode on device + model" in done.stdout  # the table
