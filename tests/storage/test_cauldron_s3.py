"""`curate cauldron build` from s3:// sources to an s3:// output: the same subsets, ledgers and manifests as a
local build (parquet, JSON with image files next to it, and text-only sources), and a rerun resumes; then
`curate cauldron mix` from that output to s3:// writes the local mix's shards."""

import json

import pytest

from examples.build_demo_assets import build_cauldron_sample
from tests.storage.runs import TINY_FALCON, run, snapshot, upload_tree

pytestmark = pytest.mark.slow
SOURCES = ("vqav2", "ai2d", "openhermes")


def build_args(raw, output, evals):
    sources = [arg for name in SOURCES for arg in ("--source", f"{name}={raw}/{name}")]
    return ["cauldron", "build", *sources, "--eval", f"mmmu={evals}", "--output", output, "--num-cpus", "2"]


def test_cauldron_build_s3_to_s3_equals_a_local_build(bucket, tmp_path):
    build_cauldron_sample(tmp_path / "src")
    raw, evals = tmp_path / "src" / "raw", tmp_path / "src" / "evals" / "mmmu"
    upload_tree(raw, bucket / "raw")
    run("curate", *build_args(raw, tmp_path / "local", evals))
    output = bucket / "built"
    run("curate", *build_args(bucket / "raw", output, evals))

    report = json.loads((output / "report.json").read_text())
    assert report["counts"]["balanced"] and report["counts"]["input"] == 24 + 10 + 12
    assert report["dropped_by_reason"] == {"eval_phash": 3, "merged_by_image": 14}
    assert not list((output / "work").rglob("*")), "work files left on the store"
    assert snapshot(output) == snapshot(tmp_path / "local")
    run("curate", *build_args(bucket / "raw", output, evals))
    assert json.loads((output / "report.json").read_text())["resumed_partitions"] == 3

    mixture = tmp_path / "src" / "demo_mixture.yaml"
    mix = ["--tokenizer", TINY_FALCON, "--config", mixture, "--total-tokens", "200000", "--samples-per-shard", "2000", "--num-cpus", "2"]
    run("curate", "cauldron", "mix", "--input", tmp_path / "local", "--output", tmp_path / "local-sft", *mix)
    run("curate", "cauldron", "mix", "--input", output, "--output", bucket / "sft", *mix)
    assert not list((bucket / "sft").glob("scatter*")), "scatter files left on the store"
    sft = snapshot(bucket / "sft", skip=("mixture_shares.png",))
    assert sft == snapshot(tmp_path / "local-sft", skip=("mixture_shares.png",)) and "shards/sft-00000-00000.tar" in sft
