import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_finding_s3_inputs_takes_one_listing_however_many_objects(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/pdfs_discovery.py", "--files", "6", "--scales", "1", "3", "--json", str(out)],
        check=False, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert {(r["inputs"], r["objects"]) for r in rows} == {(kind, n) for kind in ("shards", "pdfs") for n in (6, 18)}
    # no request per shard or PDF found: as many as one listing, at 6 objects and at 18 (was 2 per object)
    assert all(r["ours_requests"] == r["plain_requests"] for r in rows), rows
    assert "| shards | 18 |" in done.stdout
