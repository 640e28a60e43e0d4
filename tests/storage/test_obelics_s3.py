"""`curate obelics` from s3:// to s3://: the output equals a local run's, and a run killed with SIGKILL
resumes from what it left on the object store to that same output."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.pipelines.obelics_data import BLOCKED, write_partitions
from tests.storage.runs import ROOT, RUN_TIMEOUT_S, TINY_FALCON, command, run, snapshot, upload_tree

pytestmark = pytest.mark.slow


def obelics_args(inputs, output, dnt):
    return [
        "obelics",
        "--input",
        inputs,
        "--output",
        output,
        "--do-not-train",
        dnt,
        "--ppl-model",
        TINY_FALCON,
        "--drop-top-ppl",
        "0.1",
        "--docs-per-shard",
        "4",
        "--images",
        "keep-urls",
        "--num-cpus",
        "2",
    ]


def test_obelics_s3_to_s3_killed_and_resumed_equals_a_local_run(bucket, tmp_path):
    write_partitions(tmp_path / "in", partitions=4, docs=12)
    (tmp_path / "dnt.txt").write_text(f"{BLOCKED}\n")
    upload_tree(tmp_path / "in", bucket / "in")
    (bucket / "lists" / "dnt.txt").upload(tmp_path / "dnt.txt")

    local = tmp_path / "local"
    run("curate", *obelics_args(tmp_path / "in", local, tmp_path / "dnt.txt"))

    output = bucket / "out"
    argv = obelics_args(bucket / "in", output, bucket / "lists" / "dnt.txt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command("curate", *argv), cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + RUN_TIMEOUT_S
    while time.time() < deadline and process.poll() is None and not list((output / "scores").glob("*.parquet")):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and all its Ray processes
    process.wait()
    assert not (output / "report.json").exists(), "the run finished before it could be killed"
    scored_before = sorted(p.name for p in (output / "scores").glob("*.parquet"))
    assert scored_before, "killed before any partition was scored"

    run("curate", *argv)
    report = json.loads((output / "report.json").read_text())
    assert report["counts"]["balanced"] and report["counts"]["input"] == 4 * 13
    assert report["scoring"]["scored"] < report["scoring"]["documents"], "scores left on the store were not reused"
    assert snapshot(output) == snapshot(local)
    assert not [p for p in output.rglob("*") if "tmp" in p.name], "temporary objects left behind"
