import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_shard_reads_benchmark_reads_each_shard_once_per_reader_group():
    done = subprocess.run(
        [sys.executable, "benchmarks/train_shard_reads.py", "--smoke"],
        check=False, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line.split("|")[1:4] for line in done.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [(int(readers), amplification.strip()) for _, readers, amplification in rows] == [(4, "2.0x"), (16, "8.0x"), (64, "32.0x")]
