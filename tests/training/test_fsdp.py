"""FSDP2 on two CPU processes (gloo), full fine-tuning: the single-process trajectory, and exact resume.

One process with two DataLoader workers and two accumulated micro-batches reads exactly the batches
two ranks read (reader units are numbered rank x workers + worker), so both runs see the same global
batch at every step and must agree.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training import checkpoint as ckpt
from training.config import config_from_dict
from training.loop import train
from training.reporting import METRICS_FILE

from .conftest import config_values
from .test_ddp import run_ranks

STEPS = 4


def full_finetune(tiny_checkpoint, shard_dirs, output, **train_options) -> dict:
    return config_values(
        tiny_checkpoint,
        shard_dirs,
        output,
        adapters={"method": "none"},
        train={"steps": STEPS, "save_every": 2, "keep_checkpoints": 5, "neftune_alpha": 0.0, "resume": "auto", **train_options},
    )


def final_weights(output: Path) -> dict[str, torch.Tensor]:
    latest = ckpt.latest_checkpoint(output)
    assert latest is not None
    return load_file(str(latest / "trainable.safetensors"))


@pytest.mark.slow  # three two-process runs and one single-process run
def test_fsdp_follows_a_single_process_and_resumes_exactly(tiny_checkpoint, shard_dirs, tmp_path):
    single = full_finetune(tiny_checkpoint, shard_dirs, tmp_path / "single", grad_accum=2)
    single["data"]["num_workers"] = 2
    expected = train(config_from_dict(single)).losses

    sharded = full_finetune(tiny_checkpoint, shard_dirs, tmp_path / "fsdp", parallelism="fsdp")
    (report, _) = run_ranks(sharded, tmp_path)
    assert report["losses"] == pytest.approx(expected, abs=1e-5)
    ours, theirs = final_weights(tmp_path / "fsdp"), final_weights(tmp_path / "single")
    assert ours.keys() == theirs.keys() and len(ours) == sum(1 for _ in train_parameters(tiny_checkpoint))
    for name, tensor in ours.items():
        assert torch.allclose(tensor, theirs[name], atol=1e-5), name

    # interrupted after the step-2 checkpoint: the resumed FSDP run ends where the uninterrupted one did
    shutil.copytree(tmp_path / "fsdp", tmp_path / "resumed")
    dropped = ckpt.checkpoint_dir(tmp_path / "resumed", STEPS)
    assert isinstance(dropped, Path)
    shutil.rmtree(dropped)
    (resumed, _) = run_ranks({**sharded, "train": {**sharded["train"], "output_dir": str(tmp_path / "resumed")}}, tmp_path)
    assert resumed["losses"] == pytest.approx(report["losses"][2:], abs=1e-6)
    for name, tensor in final_weights(tmp_path / "resumed").items():
        assert torch.allclose(tensor, ours[name], atol=1e-6), name


def train_parameters(checkpoint):
    from safetensors import safe_open

    with safe_open(str(checkpoint / "model.safetensors"), "pt") as weights:
        return list(weights.keys())


def metrics_lines(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / METRICS_FILE).read_text().splitlines()]


@pytest.mark.slow  # one single-process and one two-process run, each with a validation pass
def test_fsdp_validation_over_uneven_rank_shares_equals_one_process(tiny_checkpoint, shard_dirs, tmp_path):
    """The held-out SFT shards hold 9 and 8 samples (one without an image), one a rank: the ranks run
    different numbers of batches and the image path on different batches, yet every forward is
    matched and the validation loss is the one a single process computes over every sample."""
    held_out = {"name": "sft", "kind": "sft", "shards": [str(shard_dirs["sft"] / "*.tar")], "max_seq_len": 128}
    evaluation = {"every": 1, "sources": [held_out], "max_batches": 0, "batch_size": 1}
    single = full_finetune(tiny_checkpoint, shard_dirs, tmp_path / "single", grad_accum=2, steps=1)
    single["data"]["num_workers"] = 2
    train(config_from_dict({**single, "eval": evaluation}))

    sharded = full_finetune(tiny_checkpoint, shard_dirs, tmp_path / "fsdp", parallelism="fsdp", steps=1)
    run_ranks({**sharded, "eval": evaluation}, tmp_path)
    (ours,) = [line for line in metrics_lines(tmp_path / "fsdp") if line.get("kind") == "eval"]
    (theirs,) = [line for line in metrics_lines(tmp_path / "single") if line.get("kind") == "eval"]
    assert ours["val_targets"] == theirs["val_targets"] > 0
    assert ours["val_loss"] == pytest.approx(theirs["val_loss"], abs=1e-5)
