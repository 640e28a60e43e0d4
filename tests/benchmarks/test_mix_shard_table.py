import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_shard_table_benchmark_lists_the_same_pairs_both_ways(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/mix_shard_table.py", "--picks", "20000", "--json", str(out)],
        check=False, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    old, new = json.loads(out.read_text())
    assert (old["method"], new["method"]) == ("old", "new")
    assert (old["chunks"], old["shards"]) == (5, 20)
    assert old["pairs"] == new["pairs"] and 20 <= new["pairs"] <= 20_000
