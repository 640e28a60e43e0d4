"""KV-cache greedy generation against transformers' `generate`, on the bundled tiny Idefics2 checkpoint."""

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from transformers import Idefics2ForConditionalGeneration as ReferenceIdefics2

from cauldron.chat import tokenize_chat
from training.config import ModelConfig
from training.evaluation.models import checkpoint_image_settings
from training.evaluation.prompts import PromptSettings, render_prompt
from training.evaluation.registry import load_registry
from training.evaluation.sources import EvalItem
from training.factory import load_tokenizer
from training.model import Idefics2ForConditionalGeneration, KVCache
from training.processor import ImageProcessor, normalise_pixels, pad_images

TINY = Path(__file__).resolve().parents[2] / "examples" / "models" / "tiny-idefics2"
NEW_TOKENS = 12


def png(colour, size) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def models():
    ours = Idefics2ForConditionalGeneration.from_idefics2_checkpoint(TINY).eval()
    reference = ReferenceIdefics2.from_pretrained(TINY, attn_implementation="sdpa").eval()
    return ours, reference


@pytest.fixture(scope="module")
def prompts():
    """Two chat prompts with an image each, of different lengths and image sizes, left-padded together."""
    tokenizer = load_tokenizer(ModelConfig(checkpoint=str(TINY)))
    protocol = load_registry().protocol
    settings = PromptSettings("chat", image_seq_len=64)
    items = [
        EvalItem("a", "open", "What colour is the large square in the middle of this picture?", [png((200, 20, 20), (64, 48))]),
        EvalItem("b", "open", "Colour?", [png((20, 20, 200), (30, 56))]),
    ]
    images = ImageProcessor(checkpoint_image_settings(TINY))
    rows = [tokenize_chat(render_prompt(protocol, settings, item), tokenizer).input_ids for item in items]
    length = max(map(len, rows))
    input_ids = torch.full((2, length), tokenizer.pad_token_id)
    attention_mask = torch.zeros(2, length, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, length - len(row) :] = torch.tensor(row)
        attention_mask[i, length - len(row) :] = 1
    pixels, mask = pad_images([images(item.images[0]) for item in items])
    assert pixels is not None and mask is not None
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": normalise_pixels(pixels, mask),
        "pixel_attention_mask": mask,
    }


def single(prompts, row):
    keep = prompts["attention_mask"][row].bool()
    return {
        "input_ids": prompts["input_ids"][row : row + 1, keep],
        "attention_mask": prompts["attention_mask"][row : row + 1, keep],
        "pixel_values": prompts["pixel_values"][row : row + 1],
        "pixel_attention_mask": prompts["pixel_attention_mask"][row : row + 1],
    }


@torch.no_grad()
def test_cached_greedy_tokens_equal_transformers_generate(models, prompts):
    ours, reference = models
    for inputs in (single(prompts, 0), single(prompts, 1), prompts):
        expected = reference.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0)
        got = ours.generate(**inputs, max_new_tokens=NEW_TOKENS)
        assert torch.equal(got, expected)
        assert torch.equal(ours.generate(**inputs, max_new_tokens=NEW_TOKENS, use_cache=False), got)


@torch.no_grad()
def test_left_padded_batch_gives_each_prompt_its_own_tokens(models, prompts):
    ours, _ = models
    batched = ours.generate(**prompts, max_new_tokens=NEW_TOKENS)[:, -NEW_TOKENS:]
    for row in range(2):
        alone = ours.generate(**single(prompts, row), max_new_tokens=NEW_TOKENS)[0, -NEW_TOKENS:]
        assert torch.equal(alone, batched[row])


@torch.no_grad()
def test_rows_stop_at_eos_or_stop_rule_and_are_padded(models, prompts):
    ours, _ = models
    start = prompts["input_ids"].shape[1]
    free = ours.generate(**prompts, max_new_tokens=NEW_TOKENS)[:, start:]
    eos = int(free[0, 2])  # pretend the third token of row 0 is an end token
    ended = ours.generate(**prompts, max_new_tokens=NEW_TOKENS, eos_token_id=[eos], pad_token_id=7)[:, start:]
    first = int((free[0] == eos).nonzero()[0])
    assert torch.equal(ended[0, : first + 1], free[0, : first + 1]) and bool((ended[0, first + 1 :] == 7).all())
    assert ended.shape[1] == NEW_TOKENS or bool((ended[1] == eos).any())  # stops early only once both ended
    calls = []

    def stop_after_four(new_ids):
        calls.append(new_ids.shape[1])
        return torch.tensor([new_ids.shape[1] >= 4, False])

    stopped = ours.generate(**prompts, max_new_tokens=6, pad_token_id=7, stop=stop_after_four)[:, start:]
    assert calls == [1, 2, 3, 4, 5, 6]
    assert torch.equal(stopped[0, :4], free[0, :4]) and stopped[0, 4:].tolist() == [7, 7]
    assert torch.equal(stopped[1], free[1, :6])


def test_kv_cache_refuses_to_overflow():
    cache = KVCache(layers=1, capacity=2)
    k = torch.zeros(1, 1, 2, 4)
    cache.append(0, k, k)
    cache.length = 2
    with pytest.raises(ValueError, match="cannot take"):
        cache.append(0, k[:, :, :1], k[:, :, :1])


@torch.no_grad()
def test_sliding_window_generation_equals_transformers():
    """A prompt longer than the window: the cache keeps every key, the step mask hides those out of reach."""
    from .test_model_parity import make_batch, reference_model, tiny_config

    config = tiny_config(sliding_window=7)
    reference = reference_model(config)  # unit-scale random weights
    ours = Idefics2ForConditionalGeneration(config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    batch = make_batch()
    prompt: dict[str, Any] = dict(
        input_ids=batch["input_ids"][:1], pixel_values=batch["pixel_values"][:1], pixel_attention_mask=batch["pixel_attention_mask"][:1]
    )
    expected = reference.generate(**prompt, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours.generate(**prompt, max_new_tokens=8), expected)
