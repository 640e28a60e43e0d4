"""Killing `curate obelics` at any point and running it again gives the same output as one clean run.

The images come from a loopback server; the run is killed once scoring is done and the first
partition's download staging has completed, so the rerun shows what is reused: scores and staging.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from tests.curation.pairs.image_server import ImageServer
from tests.pipelines.obelics_data import write_partitions
from tests.pipelines.obelics_served import serve_partitions

pytestmark = pytest.mark.slow


def curate(tmp_path, tiny_lm, output):
    return [
        sys.executable,
        "-m",
        "pipelines.cli",
        "obelics",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(output),
        "--do-not-train",
        str(tmp_path / "dnt.txt"),
        "--ppl-model",
        str(tiny_lm),
        "--drop-top-ppl",
        "0.1",
        "--docs-per-shard",
        "6",
        "--num-cpus",
        "2",
        "--allow-private-networks",
        "--download-threads",
        "2",
        "--max-side",
        "120",
    ]


def samples(output):
    urls = sorted(str(p) for p in (output / "shards").glob("*.tar"))
    return sorted((s["__key__"], s["json"], s.get("images.tar")) for s in wds.WebDataset(urls, shardshuffle=False))


def test_killed_run_resumes_to_the_same_output(tmp_path, tiny_lm):
    write_partitions(tmp_path / "in", partitions=4, docs=12)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    with ImageServer({}) as server:
        serve_partitions(tmp_path / "in", server, tmp_path / "dnt.txt", delay_s=0.15)

        reference = tmp_path / "reference"
        subprocess.run(curate(tmp_path, tiny_lm, reference), check=True, env=env, capture_output=True)
        reference_requests = sum(server.hits.values())
        server.hits.clear()

        resumed = tmp_path / "resumed"
        process = subprocess.Popen(
            curate(tmp_path, tiny_lm, resumed), env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 180
        while time.time() < deadline and not list((resumed / "staging").glob("*/images/*_stats.json")):
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)  # the driver and all its Ray processes, wherever they are
        process.wait()
        assert not (resumed / "report.json").exists(), "the run finished before it could be killed"
        scored_before = sum(pq.read_metadata(p).num_rows for p in (resumed / "scores").glob("*.parquet"))
        assert scored_before > 0
        requested_before = sum(server.hits.values())
        server.hits.clear()

        subprocess.run(curate(tmp_path, tiny_lm, resumed), check=True, env=env, capture_output=True, text=True)
        requested_after = sum(server.hits.values())
    report = json.loads((resumed / "report.json").read_text())
    assert report["scoring"]["documents"] - report["scoring"]["scored"] == scored_before, "finished partitions were re-scored"
    assert report["counts"]["balanced"]
    assert requested_after < reference_requests <= requested_before + requested_after, "completed staging was downloaded again"
    assert report["images"]["downloaded"] > 0
    assert samples(resumed) == samples(reference)
    assert not list(resumed.rglob(".*tmp*")), "temporary files left behind"
