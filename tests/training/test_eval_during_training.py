"""`eval.every`: validation loss on held-out shards and a benchmark subset, in the metrics file."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from training.cli import main as train_cli
from training.config import ConfigError, config_from_dict
from training.data import resolve_shards
from training.evaluation.during_training import TrainingEvaluation, held_out_batches
from training.factory import build_model, image_seq_len, load_tokenizer
from training.loop import Distributed, to_device, train
from training.processor import Processor
from training.reporting import METRICS_FILE

from .conftest import config_values

TEXTVQA = Path(__file__).resolve().parents[2] / "examples" / "benchmarks" / "textvqa"


def eval_section(shard_dirs):
    held_out = [
        {"name": "sft", "kind": "sft", "shards": [str(shard_dirs["sft"] / "*.tar")], "max_seq_len": 128},
        {"name": "pairs", "kind": "pairs", "shards": [str(shard_dirs["pairs"] / "*.tar")], "max_seq_len": 64},
    ]
    return {"every": 2, "sources": held_out, "max_batches": 1, "benchmarks": [f"textvqa={TEXTVQA}"], "benchmark_limit": 1}


@pytest.mark.slow  # 3 steps and 2 evaluations with generation through unmerged DoRA layers, on CPU
def test_eval_every_logs_validation_loss_and_benchmark_scores(tiny_checkpoint, shard_dirs, tmp_path):
    values = config_values(
        tiny_checkpoint, shard_dirs, tmp_path / "run", eval=eval_section(shard_dirs), train={"steps": 3, "neftune_alpha": 0.0}
    )
    config = config_from_dict(values)
    result = train(config)
    lines = [json.loads(line) for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()]
    evaluations = [line for line in lines if line.get("kind") == "eval"]
    assert [line["step"] for line in evaluations] == [2, 3]  # every 2 steps, and the last one
    assert [line["step"] for line in lines if "loss" in line] == [1, 2, 3]
    last = evaluations[-1]
    assert last["bench/textvqa"] == pytest.approx(0.0)  # a tiny random model answers nothing right
    assert math.isfinite(last["val_loss"]) and last["val_targets"] > 0

    # the logged number is the token-weighted loss of the final model over those same held-out batches
    tokenizer = load_tokenizer(config.model)
    assert result.model is not None
    processor = Processor(tokenizer, image_seq_len(result.model), config.images)
    model = result.model.eval()
    for source in config.eval.sources:
        total, targets = 0.0, 0
        with torch.no_grad():
            for batch in held_out_batches(config, processor, source, 0, 1):
                total += float(model(**to_device(batch, torch.device("cpu")), num_items_in_batch=1).loss)
                targets += int((batch["labels"][:, 1:] != -100).sum())
        assert last[f"val_loss/{source.name}"] == pytest.approx(total / targets, rel=1e-5)


def test_held_out_batches_are_bounded_and_split_over_ranks(tiny_checkpoint, shard_dirs, tmp_path):
    values = config_values(tiny_checkpoint, shard_dirs, tmp_path, eval={**eval_section(shard_dirs), "max_batches": 0})
    config = config_from_dict(values)
    tokenizer = load_tokenizer(config.model)
    processor = Processor(tokenizer, 8, config.images)
    source = config.eval.sources[1]
    every = [b["input_ids"].shape[0] for b in held_out_batches(config, processor, source, 0, 1)]
    halves = [b["input_ids"].shape[0] for rank in (0, 1) for b in held_out_batches(config, processor, source, rank, 2)]
    assert sum(halves) == sum(every) > 0
    assert len(resolve_shards(source.shards)) >= 1
    bounded = config_from_dict({**values, "eval": {**values["eval"], "max_batches": 1}})
    assert len(list(held_out_batches(bounded, processor, source, 0, 1))) == 1


def test_held_out_samples_and_damaged_shards_are_skipped_and_counted(tiny_checkpoint, shard_dirs, tmp_path):
    held_out = tmp_path / "held-out"
    held_out.mkdir()
    good = sorted(shard_dirs["pairs"].glob("*.tar"))[0].read_bytes()
    (held_out / "a.tar").write_bytes(good[: len(good) // 2])  # cut mid-way
    (held_out / "b.tar").write_bytes(good)
    values = config_values(tiny_checkpoint, shard_dirs, tmp_path, eval={**eval_section(shard_dirs), "max_batches": 0})
    config = config_from_dict(values)
    source = config.eval.sources[1]
    source.shards = [str(held_out / "*.tar")]
    processor = Processor(load_tokenizer(config.model), 8, config.images)
    skipped: Counter[str] = Counter()
    used = sum(b["input_ids"].shape[0] for b in held_out_batches(config, processor, source, 0, 1, skipped))
    assert skipped["damaged_shard"] == 1 and 8 < used < 16  # b.tar whole, a.tar up to its damage


def test_eval_settings_are_validated(tiny_checkpoint, shard_dirs, tmp_path):
    with pytest.raises(ConfigError, match="eval.every"):
        config_from_dict(config_values(tiny_checkpoint, shard_dirs, tmp_path, eval={"every": 5}))
    with pytest.raises(ConfigError, match="name=path"):
        config_from_dict(config_values(tiny_checkpoint, shard_dirs, tmp_path, eval={"every": 5, "benchmarks": ["textvqa"]}))
    with pytest.raises(ConfigError, match="fsdp"):  # rank 0 alone cannot run a sharded model
        config_from_dict(config_values(tiny_checkpoint, shard_dirs, tmp_path, eval=eval_section(shard_dirs), train={"parallelism": "fsdp"}))


@pytest.mark.slow  # a 1-step training run, then its evaluation
def test_eval_command_on_a_training_run_merges_its_adapters(tiny_checkpoint, shard_dirs, tmp_path, capsys):
    config = config_from_dict(config_values(tiny_checkpoint, shard_dirs, tmp_path / "run", train={"steps": 1}))
    train(config)
    assert (
        train_cli(
            [
                "eval",
                "--model",
                str(tmp_path / "run"),
                "--benchmark",
                f"textvqa={TEXTVQA}",
                "--limit",
                "2",
                "--output",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    assert "adapters merged" in capsys.readouterr().out
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["benchmarks"][0]["items"] == 2


def test_reporter_keeps_evaluations_out_of_the_loss_records_on_resume(tmp_path):
    from training.reporting import Reporter

    lines = [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": 1.5},
        {"step": 2, "kind": "eval", "val_loss": 1.7},
        {"step": 3, "loss": 1.2},
        {"step": 4, "kind": "eval", "val_loss": 1.1},
    ]
    (tmp_path / METRICS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    reporter = Reporter(tmp_path, every=10, tensorboard=False, start_step=2)
    assert [record["step"] for record in reporter.records] == [1, 2]  # training records only
    reporter.log_eval({"step": 4, "kind": "eval", "val_loss": 1.0, "bench/textvqa": 12.5, "seconds": 0.1})
    kept = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert kept == lines[:3] + [{"step": 4, "kind": "eval", "val_loss": 1.0, "bench/textvqa": 12.5, "seconds": 0.1}]


def test_validation_loss_uses_the_loss_only_forward(tiny_checkpoint, shard_dirs, tmp_path):
    """Target positions only, chunk by chunk (no logits), as training computes it: the same number."""
    config = config_from_dict(config_values(tiny_checkpoint, shard_dirs, tmp_path, eval={**eval_section(shard_dirs), "benchmarks": []}))
    tokenizer = load_tokenizer(config.model)
    model = build_model(config.model, tokenizer).eval()
    processor = Processor(tokenizer, image_seq_len(model), config.images)
    returned_logits = []
    model.register_forward_hook(lambda module, args, output: returned_logits.append(output.logits is not None))
    evaluation = TrainingEvaluation(config, model, processor, tokenizer, Distributed(), torch.device("cpu"), None)
    with torch.no_grad():
        record = evaluation.validation_losses()
    assert returned_logits and not any(returned_logits)
    source = config.eval.sources[0]
    with torch.no_grad():
        batches = list(held_out_batches(config, processor, source, 0, 1))
        total = sum(float(model(**to_device(batch, torch.device("cpu")), num_items_in_batch=1).loss) for batch in batches)
    targets = sum(int((batch["labels"][:, 1:] != -100).sum()) for batch in batches)
    assert record[f"val_loss/{source.name}"] == pytest.approx(total / targets, rel=1e-5)
