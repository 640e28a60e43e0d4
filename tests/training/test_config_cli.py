"""Configs: the shipped ones load, mistakes are named; the `train` command runs and reports errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.cli import main
from training.config import ConfigError, config_from_dict, load_config

from .conftest import config_values

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("name", ["stage1", "stage2", "sft", "demo"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.data.sources and config.optimizer.lr > 0


def test_paper_mixtures():
    weights = lambda name: {s.name: s.weight for s in load_config(CONFIGS / f"{name}.yaml").data.sources}  # noqa: E731
    assert weights("stage1") == {"obelics": 0.70, "pairs": 0.30}
    assert weights("stage2") == {"obelics": 0.45, "pairs": 0.35, "pdfs": 0.20}
    assert load_config(CONFIGS / "stage1.yaml").images.longest_edge == 384
    assert load_config(CONFIGS / "stage2.yaml").images.longest_edge == 980
    sft = load_config(CONFIGS / "sft.yaml")
    assert sft.adapters.method == "dora" and sft.train.neftune_alpha == 5.0 and sft.data.sources[0].kind == "sft"


def test_mistakes_are_named(tmp_path):
    base = {"model": {"checkpoint": "x"}, "data": {"sources": [{"name": "a", "kind": "pairs", "shards": ["*.tar"]}]}}
    with pytest.raises(ConfigError, match="unknown keys"):
        config_from_dict({**base, "optimiser": {}})
    with pytest.raises(ConfigError, match="kind"):
        config_from_dict({**base, "data": {"sources": [{"name": "a", "kind": "video", "shards": ["*.tar"]}]}})
    with pytest.raises(ConfigError, match="either"):
        config_from_dict({**base, "model": {"checkpoint": "x", "text": "y"}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base))
    config = load_config(path, ["optimizer.lr=1e-4", "train.steps=7"])
    assert config.optimizer.lr == 1e-4 and config.train.steps == 7


def test_cli_trains_and_reports_errors(tiny_checkpoint, shard_dirs, tmp_path, capsys):
    values = config_values(tiny_checkpoint, shard_dirs, tmp_path / "run", train={"steps": 2})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    assert main(["--config", str(path), "--set", "logging.every=1"]) == 0
    out = capsys.readouterr().out
    assert "step      2" in out and "loss curve" in out and "checkpoint:" in out
    assert (tmp_path / "run" / "config.yaml").exists()

    values["data"]["sources"][0]["shards"] = [str(tmp_path / "missing" / "*.tar")]
    values["train"]["output_dir"] = str(tmp_path / "second")  # `resume: never` refuses a folder with checkpoints
    path.write_text(yaml.safe_dump(values))
    assert main(["--config", str(path)]) == 2
    assert "no shard matches" in capsys.readouterr().err
