"""Killing `curate obelics` at any point and running it again gives the same output as one clean run."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from tests.pipelines.obelics_data import BLOCKED, write_partitions

pytestmark = pytest.mark.slow


def curate(tmp_path, tiny_lm, output):
    return [
        sys.executable, "-m", "pipelines.cli", "obelics",
        "--input", str(tmp_path / "in"), "--output", str(output),
        "--do-not-train", str(tmp_path / "dnt.txt"), "--ppl-model", str(tiny_lm),
        "--drop-top-ppl", "0.1", "--docs-per-shard", "6", "--num-cpus", "2",
    ]


def samples(output):
    urls = sorted(str(p) for p in (output / "shards").glob("*.tar"))
    return sorted((json.loads(s["json"])["id"], s["json"]) for s in wds.WebDataset(urls, shardshuffle=False))


def test_killed_run_resumes_to_the_same_output(tmp_path, tiny_lm):
    write_partitions(tmp_path / "in", partitions=4, docs=12)
    (tmp_path / "dnt.txt").write_text(BLOCKED + "\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    reference = tmp_path / "reference"
    subprocess.run(curate(tmp_path, tiny_lm, reference), check=True, env=env, capture_output=True)

    resumed = tmp_path / "resumed"
    process = subprocess.Popen(curate(tmp_path, tiny_lm, resumed), env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((resumed / "scores").glob("*.parquet")):
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and all its Ray processes, wherever they are
    process.wait()
    assert not (resumed / "report.json").exists(), "the run finished before it could be killed"
    scored_before = sum(pq.read_metadata(p).num_rows for p in (resumed / "scores").glob("*.parquet"))
    assert scored_before > 0

    subprocess.run(curate(tmp_path, tiny_lm, resumed), check=True, env=env, capture_output=True, text=True)
    report = json.loads((resumed / "report.json").read_text())
    assert report["scoring"]["documents"] - report["scoring"]["scored"] == scored_before, "finished partitions were re-scored"
    assert report["counts"]["balanced"]
    assert samples(resumed) == samples(reference)
    assert not list(resumed.rglob(".*tmp*")), "temporary files left behind"
