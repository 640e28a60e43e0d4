import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_shuffle_memory_benchmark_runs_and_its_cap_holds():
    done = subprocess.run(
        [sys.executable, "benchmarks/train_shuffle_memory.py", "--smoke"],
        check=False, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line.split("|")[1:4] for line in done.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 3
    uncapped, capped = float(rows[-1][1]), float(rows[-1][2])
    assert capped < uncapped / 3  # 16x samples: the count-only buffer holds 16 of them, the cap about 2
