import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_optout_urls_benchmark_compares_both_paths(tmp_path):
    out = tmp_path / "rows.json"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "benchmarks/optout_urls.py", "--docs", "300", "1200", "--repeats", "1", "--json", str(out)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["docs"] for r in rows] == [300, 1200]
    assert rows[1]["urls"] > rows[0]["urls"] > 300  # the sample has about 2.3 images a document
    assert all(r["parse_s"] > 0 and r["column_s"] > 0 for r in rows)
    assert "ratio" in done.stdout
