"""The model and tokenizer a config names: an Idefics2 checkpoint, or SigLIP + Mistral backbones."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cauldron.chat import SPECIAL_TOKENS
from curation.errors import UserError
from training.config import ModelConfig
from training.model import Idefics2ForConditionalGeneration, model_config, perceiver_config

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_tokenizer(config: ModelConfig) -> Any:
    """The tokenizer, with Idefics2's three added tokens (appended when a text backbone lacks them)."""
    from transformers import AutoTokenizer

    source = config.tokenizer or config.checkpoint or config.text
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"no tokenizer at {source!r} ({error}); set model.tokenizer to a local folder") from None
    missing = [token for token in SPECIAL_TOKENS if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if tokenizer.pad_token is None:  # Mistral has none; Idefics2 pads with <unk>
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def build_model(config: ModelConfig, tokenizer: Any) -> nn.Module:
    """The model in train mode, on the CPU, with the weights the config names."""
    dtype = DTYPES[config.dtype]
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    model: nn.Module
    if config.checkpoint and config.implementation == "transformers":
        from transformers import Idefics2ForConditionalGeneration as Reference

        reference = Reference.from_pretrained(config.checkpoint, dtype=dtype, attn_implementation="sdpa")
        reference.config.use_cache = False
        if config.gradient_checkpointing:
            reference.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = reference
    elif config.checkpoint:
        potion = Idefics2ForConditionalGeneration.from_idefics2_checkpoint(config.checkpoint, dtype=dtype)
        potion.gradient_checkpointing = config.gradient_checkpointing
        model = potion
    else:
        if config.implementation != "potion":
            raise UserError("model.implementation: transformers needs model.checkpoint")
        vision, text = config.backbones()
        potion = Idefics2ForConditionalGeneration.from_backbones(
            vision,
            text,
            image_size=config.image_size,
            image_token_id=image_token_id,
            vocab_size=max(len(tokenizer), _text_vocab(text)),
            dtype=dtype,
        )
        potion.gradient_checkpointing = config.gradient_checkpointing
        model = potion
    model_image_token = model_config(model).image_token_id
    if model_image_token != image_token_id:
        raise UserError(f"the model's image_token_id {model_image_token} is not the tokenizer's <image> id {image_token_id}")
    return model.train()


def _text_vocab(text: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(text).vocab_size


def image_seq_len(model: nn.Module) -> int:
    """Features an image becomes in the token stream: the perceiver's latents."""
    return perceiver_config(model_config(model)).resampler_n_latents


def new_token_ids(tokenizer: Any) -> list[int]:
    """Rows that did not exist in the language model: Idefics2's added tokens."""
    return sorted(tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)))
