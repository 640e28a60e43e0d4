import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gather_reads_benchmark_reads_one_batch_alone(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/mix_gather_reads.py", "--batches", "16", "64", "--json", str(out)],
        check=False, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {(row["batches"], row["method"]): row for row in json.loads(out.read_text())}
    for batches in (16, 64):
        new, old = rows[batches, "new"], rows[batches, "old"]
        assert (new["reads"], new["bytes_read"]) == (1, new["batch_bytes"])
        assert old["reads"] > 1 and old["bytes_read"] > old["batch_bytes"] + 24 * batches  # the footer
