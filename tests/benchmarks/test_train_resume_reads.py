import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_resume_reads_benchmark_runs_and_resuming_reads_less_deep_in_an_epoch():
    done = subprocess.run(
        [sys.executable, "benchmarks/train_resume_reads.py", "--smoke"],
        check=False, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    rows = [[int(cell) for cell in line.split("|")[2:5:2]] for line in lines]  # samples read: position only, buffer state
    old, new = rows[-1]
    assert len(rows) == 3 and new < old / 4
