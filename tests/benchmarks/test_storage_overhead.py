import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_storage_benchmark_compares_both_sides_locally_and_on_s3(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/storage_overhead.py", "--samples", "30", "--scales", "1", "2", "--per-shard", "10",
         "--payload", "256", "--rounds", "1", "--json", str(out)],
        check=False, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())
    ops = {"write shards", "read shards", "write parquet", "read parquet"}
    assert {(r["where"], r["op"], r["samples"]) for r in rows} == {(w, op, n) for w in ("local", "s3") for op in ops for n in (30, 60)}
    assert {r["per_shard"] for r in rows if r["where"] == "s3" and "shards" in r["op"]} == {10, 100}
    assert all(r["ours_s"] > 0 and r["plain_s"] > 0 for r in rows)
    s3 = {(r["op"], r["samples"], r["per_shard"]): r for r in rows if r["where"] == "s3"}
    # three shards of 10 against one of 100: fewer PUTs and GETs, as the printed comparison says
    assert s3[("write shards", 30, 10)]["ours_requests"] > s3[("write shards", 30, 100)]["ours_requests"]
    assert s3[("read shards", 60, 10)]["ours_requests"] > s3[("read shards", 60, 100)]["ours_requests"]
    assert "| local | write shards |" in done.stdout and "one small PUT" in done.stdout
