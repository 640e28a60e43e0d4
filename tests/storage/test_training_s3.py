"""The trainer with its shards and its output on s3://: the same losses as a local run, checkpoints on the
store that resume exactly, and `train export` from an s3 checkpoint to an s3 folder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load, load_file

from tests.storage.runs import upload_tree
from tests.training.conftest import IMAGE_SEQ_LEN, config_values
from training import checkpoint as ckpt
from training.cli import main
from training.config import config_from_dict
from training.loop import train
from training.reporting import METRICS_FILE

pytestmark = pytest.mark.slow
SECTIONS = {
    "train": {"steps": 6, "save_every": 3, "keep_checkpoints": 5, "resume": "auto"},
    "data": {"num_workers": 2},
}  # DataLoader worker processes open the store on their own


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from examples.tiny_idefics2 import build_tiny_idefics2
    from tests.training.shards import write_all

    return (
        build_tiny_idefics2(tmp_path_factory.mktemp("tiny-idefics2"), image_seq_len=IMAGE_SEQ_LEN),
        write_all(tmp_path_factory.mktemp("shards")),
    )


def run(checkpoint, shards, output):
    return train(config_from_dict(config_values(checkpoint, shards, output, **SECTIONS)))


def test_training_reads_and_writes_s3_resumes_and_exports(bucket, tiny, tmp_path):
    checkpoint, local_shards = tiny
    remote_shards = {kind: bucket / "shards" / kind for kind in local_shards}
    for kind, folder in local_shards.items():
        upload_tree(folder, remote_shards[kind])

    local = run(checkpoint, local_shards, tmp_path / "run")
    output = bucket / "run"
    remote = run(checkpoint, remote_shards, output)
    assert remote.losses == pytest.approx(local.losses, abs=1e-6), "shards read from s3 gave other batches"
    assert [p.name for p in ckpt.list_checkpoints(output)] == ["step-00000003", "step-00000006"]

    # an interrupted run: step 6's save stopped before its state.json, metrics end at step 4
    step6 = ckpt.checkpoint_dir(output, 6)
    (step6 / "state.json").unlink()
    assert [p.name for p in ckpt.list_checkpoints(output)] == ["step-00000003"]
    metrics = output / METRICS_FILE
    (tmp_path / "metrics").write_text("".join(line + "\n" for line in metrics.read_text().splitlines()[:4]))
    metrics.upload(tmp_path / "metrics")
    resumed = run(checkpoint, remote_shards, output)
    assert [r["step"] for r in resumed.records] == [4, 5, 6]
    assert resumed.losses == pytest.approx(remote.losses[3:], abs=1e-6)
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == list(range(1, 7))

    assert main(["export", "--run", str(output), "--output", str(bucket / "hf")]) == 0
    assert main(["export", "--run", str(tmp_path / "run"), "--output", str(tmp_path / "hf")]) == 0
    assert sorted(p.name for p in (bucket / "hf").iterdir()) == sorted(p.name for p in (tmp_path / "hf").iterdir())
    ours, theirs = load((bucket / "hf" / "model.safetensors").read_bytes()), load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], atol=1e-6), name
    assert main(["export", "--run", str(output), "--output", str(bucket / "hf")]) == 2  # exists: --overwrite
