"""`curate` on a real multi-node Ray cluster (separate raylets on this machine, tests/pipelines/ray_cluster.py).

The pipelines run with `--ray-address` in a process of their own, as a user would run them; their output
must equal a local run's byte for byte, every task must have run on a worker node (the head has no
CPUs), and a worker node killed mid-run must cost at most a rerun, never a sample.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.cli import main as curate
from tests.pipelines.curate_inputs import write_obelics, write_pdfs
from tests.pipelines.ray_cluster import LocalCluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MODEL = str(ROOT / "examples" / "models" / "tiny-falcon")
RUN_TIMEOUT_S = 420
VOLATILE = {"report.json", "report.txt", "perplexity_histogram.png"}  # timings and plots


def obelics_args(inputs: Path, output: Path) -> list[str]:
    return [
        "obelics",
        "--input",
        str(inputs),
        "--output",
        str(output),
        "--ppl-model",
        MODEL,
        "--drop-top-ppl",
        "0.1",
        "--docs-per-shard",
        "4",
        "--images",
        "keep-urls",
    ]


def pdfs_args(inputs: list[Path], output: Path) -> list[str]:
    return ["pdfs", "--input", *map(str, inputs), "--output", str(output), "--max-side", "900", "--pages-per-shard", "3"]


def snapshot(output: Path) -> dict[str, object]:
    """Relative path -> sha256 of every output file but the report and plots; manifests without timings."""
    files: dict[str, object] = {}
    for path in sorted(p for p in output.rglob("*") if p.is_file() and p.name not in VOLATILE):
        if path.name.endswith(".manifest.json"):
            files[str(path.relative_to(output))] = {k: v for k, v in json.loads(path.read_text()).items() if k != "seconds"}
        else:
            files[str(path.relative_to(output))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def curate_process(argv: list[str], cluster: LocalCluster) -> subprocess.Popen:
    command = [
        sys.executable,
        "-c",
        "import sys; from pipelines.cli import main; sys.exit(main())",
        *argv,
        "--ray-address",
        cluster.address,
    ]
    return subprocess.Popen(command, env=cluster.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    return process.returncode, stderr


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path | list[Path]]:
    root = tmp_path_factory.mktemp("inputs")
    write_obelics(root / "obelics", partitions=4, docs=8)
    folders = [root / f"pdfs-{i}" for i in range(4)]
    for folder in folders:
        write_pdfs(folder, blank=1, with_text=2)
    return {"obelics": root / "obelics", "pdfs": folders}


@pytest.fixture(scope="module")
def local_outputs(inputs, tmp_path_factory, ray_session) -> dict[str, Path]:
    """The uninterrupted local runs every cluster run is compared with."""
    root = tmp_path_factory.mktemp("local")
    assert curate(obelics_args(inputs["obelics"], root / "obelics")) == 0
    assert curate(pdfs_args(inputs["pdfs"], root / "pdfs")) == 0
    return {"obelics": root / "obelics", "pdfs": root / "pdfs"}


@pytest.fixture(scope="module")
def cluster():
    cluster = LocalCluster()
    try:
        cluster.start_head()
        cluster.add_worker("worker-1")
        cluster.add_worker("worker-2")
        yield cluster
    finally:
        cluster.stop()


def test_pipelines_on_a_cluster_write_what_a_local_run_writes_and_run_on_the_workers(cluster, inputs, local_outputs, tmp_path):
    for kind, argv in [
        ("obelics", obelics_args(inputs["obelics"], tmp_path / "obelics")),
        ("pdfs", pdfs_args(inputs["pdfs"], tmp_path / "pdfs")),
    ]:
        code, stderr = finish(curate_process(argv, cluster))
        assert code == 0, stderr[-3000:]
        assert snapshot(tmp_path / kind) == snapshot(local_outputs[kind])
    placement = cluster.task_nodes()
    assert sum(placement["ran"].values()) > 0 and placement["head"] not in placement["ran"]


# kind -> (the process title of the work to kill, when to kill it)
KILL_WHEN = {
    "obelics": ("ray::PerplexityActor", lambda output: any((output / "scores").glob("*.parquet"))),  # 1 partition scored
    "pdfs": ("ray::write_pdf_partition", lambda output: True),  # a partition task is rendering
}


@pytest.mark.parametrize("kind", ["obelics", "pdfs"])
def test_a_worker_node_killed_mid_run_costs_at_most_a_rerun_never_a_sample(cluster, inputs, local_outputs, tmp_path, kind):
    output = tmp_path / kind
    argv = obelics_args(inputs[kind], output) if kind == "obelics" else pdfs_args(inputs[kind], output)
    title, ready = KILL_WHEN[kind]
    run = curate_process(argv, cluster)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (ready(output) and (victims := [node for node in cluster.workers() if node.runs(title)])):
        assert run.poll() is None and time.monotonic() < deadline, f"never saw {title} running"
        time.sleep(0.05)
    victims[0].kill()
    code, stderr = finish(run)
    assert "Traceback" not in stderr
    if code:  # Ray could not carry on (an actor died with its node): one line that says how to resume
        assert code == 2 and stderr.strip().splitlines()[-1].startswith(f"curate {kind}: error: lost a Ray node")
    else:  # Ray retried the lost tasks on the other worker
        assert snapshot(output) == snapshot(local_outputs[kind])

    cluster.add_worker(f"{victims[0].name}-replacement")
    code, stderr = finish(curate_process(argv, cluster))
    assert code == 0, stderr[-3000:]
    assert snapshot(output) == snapshot(local_outputs[kind])
    report = json.loads((output / "report.json").read_text())
    assert report["counts"]["balanced"] and report["counts"]["input"] == {"obelics": 4 * 8, "pdfs": 4 * 3 * 2}[kind]
