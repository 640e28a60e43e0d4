"""The loop: the schedule, token-weighted accumulation, a falling loss, and resume equal to no interruption."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training import checkpoint as ckpt
from training.config import ScheduleConfig, config_from_dict
from training.loop import Schedule, train
from training.reporting import METRICS_FILE

from .conftest import config_values


def run(tiny_checkpoint, shard_dirs, output, **sections):
    return train(config_from_dict(config_values(tiny_checkpoint, shard_dirs, output, **sections)))


def test_schedule_warms_up_then_decays_to_the_floor():
    cosine = Schedule(ScheduleConfig(kind="cosine", warmup_steps=4, min_lr_ratio=0.1), total_steps=20)
    assert [cosine.factor(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine.factor(4) == pytest.approx(1.0)
    assert cosine.factor(12) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine.factor(20) == pytest.approx(0.1)
    linear = Schedule(ScheduleConfig(kind="linear", warmup_steps=0, min_lr_ratio=0.0), total_steps=10)
    assert [round(linear.factor(step), 6) for step in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert Schedule(ScheduleConfig(kind="constant", warmup_steps=2), 10).factor(7) == 1.0


def test_accumulation_weighs_every_token_equally(tiny_checkpoint, shard_dirs, tmp_path):
    """One step of 4 sequences equals one step of 2 x 2 accumulated (same samples, same order)."""
    plain = dict(adapters={"dropout": 0.0}, train={"steps": 1, "neftune_alpha": 0.0, "save_every": 0})
    whole = run(tiny_checkpoint, shard_dirs, tmp_path / "a", data={"batch_size": 4}, **plain)
    split = run(
        tiny_checkpoint, shard_dirs, tmp_path / "b", data={"batch_size": 2}, **{**plain, "train": {**plain["train"], "grad_accum": 2}}
    )
    assert whole.losses[0] == pytest.approx(split.losses[0], abs=1e-5)
    for (name, a), b in zip(whole.model.named_parameters(), split.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name


@pytest.mark.slow  # ~30 optimizer steps on CPU
def test_loss_decreases_on_a_tiny_config(tiny_checkpoint, shard_dirs, tmp_path):
    result = run(tiny_checkpoint, shard_dirs, tmp_path / "run", train={"steps": 30}, data={"batch_size": 4}, logging={"plot": True})
    losses = result.losses
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
    lines = (tmp_path / "run" / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 31))


@pytest.mark.parametrize("variant", ["full vocabulary matrices", "new token rows, packed"])
def test_resume_equals_an_uninterrupted_run(tiny_checkpoint, shard_dirs, tmp_path, variant):
    """DoRA with dropout and NEFTune noise: the RNG, optimizer, schedule and data position all matter."""
    sections = dict(train={"steps": 8, "save_every": 4, "keep_checkpoints": 5, "resume": "auto"})
    if variant == "new token rows, packed":
        sections.update(adapters={"train_fully": ["model.connector"]}, data={"packing": True, "packed_seq_len": 200})
    full = run(tiny_checkpoint, shard_dirs, tmp_path / "full", **sections)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "full")] == ["step-00000004", "step-00000008"]

    # an interrupted run: the same output folder with only the step-4 checkpoint (and metrics up to step 6)
    interrupted = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "full", interrupted)
    dropped = ckpt.checkpoint_dir(interrupted, 8)
    assert isinstance(dropped, Path)
    shutil.rmtree(dropped)
    (ckpt.partial_dir(interrupted, 8)).mkdir()  # a save that never completed
    lines = (interrupted / METRICS_FILE).read_text().splitlines()
    (interrupted / METRICS_FILE).write_text("\n".join(lines[:6]) + "\n")
    resumed = run(tiny_checkpoint, shard_dirs, interrupted, **sections)

    assert [r["step"] for r in resumed.records] == [5, 6, 7, 8]
    assert resumed.losses == pytest.approx(full.losses[4:], abs=1e-6)
    if variant == "new token rows, packed":
        latest = ckpt.latest_checkpoint(interrupted)
        assert latest is not None
        saved = load_file(str(latest / "trainable.safetensors"))
        assert {"lm_head.new_rows", "model.text_model.embed_tokens.new_rows"} <= saved.keys()
        assert not {"lm_head.weight", "model.text_model.embed_tokens.weight"} & saved.keys()
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    steps = [json.loads(line)["step"] for line in (interrupted / METRICS_FILE).read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_the_run_summary_counts_images_left_out(tiny_checkpoint, shard_dirs, tmp_path, capsys):
    obelics = {"name": "obelics", "kind": "interleaved", "shards": [str(shard_dirs["interleaved"] / "*.tar")], "max_images": 1}
    sources = [{**obelics, "url_images": "skip"}]
    run(tiny_checkpoint, shard_dirs, tmp_path / "run", data={"sources": sources, "batch_size": 8}, train={"steps": 1})
    out = capsys.readouterr().out
    assert "images left out of used samples (source:reason): obelics:max_images " in out
