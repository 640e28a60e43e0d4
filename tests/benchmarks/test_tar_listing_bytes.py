import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_tar_listing_benchmark_fetches_headers_of_large_members_only(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/tar_listing_bytes.py", "--scales", "1", "--json", str(out)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pdfs, pairs = json.loads(out.read_text())
    assert pdfs["samples"] == 4 and pdfs["fetched_mb"] < pdfs["shard_mb"] / 10  # data seeked over
    assert pairs["fetched_mb"] == pairs["shard_mb"] and pairs["gets"] < 10  # read through in a few blocks
