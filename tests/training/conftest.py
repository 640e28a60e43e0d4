"""Shared fixtures: a tiny random Idefics2 checkpoint with an offline-trained tokenizer, and tiny shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

IMAGE_SEQ_LEN = 8  # perceiver latents of the test checkpoint; short sequences keep the tests fast


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from examples.tiny_idefics2 import build_tiny_idefics2

    return build_tiny_idefics2(tmp_path_factory.mktemp("tiny-idefics2"), image_seq_len=IMAGE_SEQ_LEN)


@pytest.fixture(scope="session")
def tokenizer(tiny_checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="session")
def shard_dirs(tmp_path_factory) -> dict[str, Path]:
    from tests.training.shards import write_all

    return write_all(tmp_path_factory.mktemp("shards"))


def config_values(checkpoint: Path, shards: dict[str, Path], output: Path, **sections: Any) -> dict[str, Any]:
    """A tiny run's raw config: every shard kind, small images, DoRA, a few steps; `sections` override."""
    values: dict[str, Any] = {
        "model": {"checkpoint": str(checkpoint)},
        "images": {"longest_edge": 56, "shortest_edge": 28},
        "data": {
            "batch_size": 2,
            "shuffle_buffer": 8,
            "sources": [
                {
                    "name": "obelics",
                    "kind": "interleaved",
                    "shards": [str(shards["interleaved"] / "*.tar")],
                    "weight": 0.4,
                    "max_seq_len": 160,
                    "url_images": "skip",
                },  # some images are URLs, as OBELICS ships
                {"name": "pairs", "kind": "pairs", "shards": [str(shards["pairs"] / "*.tar")], "weight": 0.2, "max_seq_len": 64},
                {"name": "pdfs", "kind": "pdf", "shards": [str(shards["pdf"] / "*.tar")], "weight": 0.1, "max_seq_len": 64},
                {"name": "sft", "kind": "sft", "shards": [str(shards["sft"] / "*.tar")], "weight": 0.3, "max_seq_len": 128},
            ],
        },
        "adapters": {
            "method": "dora",
            "r": 4,
            "alpha": 8,
            "dropout": 0.1,
            "train_fully": ["model.connector", "lm_head", "model.text_model.embed_tokens"],
        },
        "optimizer": {"lr": 3e-3},
        "schedule": {"warmup_steps": 2},
        "train": {"steps": 6, "output_dir": str(output), "resume": "never", "neftune_alpha": 5.0},
        "logging": {"every": 100, "plot": False},
    }
    for section, overrides in sections.items():
        values[section] = {**values.get(section, {}), **overrides}
    return values
