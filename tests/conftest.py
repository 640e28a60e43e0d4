"""Test-session settings: offline hubs, no telemetry, one shared local Ray runtime."""

import logging
import os
from pathlib import Path

import pytest

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "WANDB_MODE": "disabled",
    "RAY_AUTH_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A random-initialised Falcon-shaped causal LM with a BPE tokenizer trained on Python's docs prose."""
    import torch

    from examples.assets import english_paragraphs, tiny_falcon_config, train_tokenizer

    torch.manual_seed(0)
    from transformers import FalconForCausalLM

    tokenizer = train_tokenizer(english_paragraphs(), vocab_size=512)
    config = tiny_falcon_config(len(tokenizer), hidden_size=32, layers=2, heads=2, context=64)
    config.eos_token_id = config.bos_token_id = tokenizer.eos_token_id
    path = tmp_path_factory.mktemp("tiny-lm")
    FalconForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (pipelines reuse it instead of starting their own)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()
