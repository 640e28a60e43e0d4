import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_ties_benchmark_shows_a_rule_of_a_few_numbers_shipped_once(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/selection_ties.py", "--scores", "20000", "--partitions", "8", "--json", str(out)],
        check=False, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    old, new = json.loads(out.read_text())
    assert (old["method"], new["method"]) == ("old", "new")
    assert old["dropped"] == new["dropped"] == 2000
    assert old["ties_in_rule"] > 900  # about half of the 10% that tie at the cutoff
    assert new["rule_json_bytes"] < 300 < old["rule_json_bytes"] / 10
    assert (old["copies"], new["copies"]) == (8, 1)
    assert old["shipped_bytes"] == 8 * old["rule_json_bytes"]
