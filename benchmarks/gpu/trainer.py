"""The trainer at the Idefics2-8B shape: potion against transformers + peft on the same configuration.

SigLIP-SO400M + Mistral-7B with random bf16 weights (throughput does not depend on their values),
LoRA r=64 on every vision and language linear layer, the connector trained fully, the three new
tokens' rows trained, images at 378 px, and packed rows of 2,048 tokens built the way the loader
builds them (`training.data.concatenate` / `collate`: whole samples, positions restarting per sample).

- potion: the trainer's own step (`training.loop.optimizer_step`): bf16 autocast over bf16 frozen
  weights and float32 trainable ones, packed samples isolated by FlashAttention varlen, the loss chunked
  over target positions, new-token rows beside the frozen vocabulary matrices, fused AdamW.
- transformers + peft: `Idefics2ForConditionalGeneration` (SDPA) under `get_peft_model` with the same
  LoRA targets, `modules_to_save=["connector"]` and `trainable_token_indices` for the new rows, the
  same optimizer and step; packed samples isolated by transformers' own position-id masks.

The cases run one after the other on an otherwise idle GPU, each measured alone: tokens/s (median
step after warm-up), MFU (`training.metrics`: 6 FLOPs per weight and token plus causal attention per
sample, over the device's dense bf16 peak) and peak allocated memory. A check row compares potion's
varlen path with its SDPA-mask path on the same batch (bf16 tolerance). Goals: MFU >= 30%, >= 1.5x
the baseline's tokens/s, peak memory no higher.

    python benchmarks/gpu/trainer.py            # the 8B shape on CUDA (about two minutes on an H100/H200)
    python benchmarks/gpu/trainer.py --smoke    # tiny shapes on the CPU, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from training.adapters import apply_adapters, keep_trainable_in_float32, lora_config  # noqa: E402
from training.config import AdapterConfig, TrainConfig  # noqa: E402
from training.data import collate, concatenate  # noqa: E402
from training.loop import Distributed, Stepper, build_optimizer, optimizer_step, to_device  # noqa: E402
from training.metrics import FlopCounter, peak_flops  # noqa: E402
from training.model import Idefics2ForConditionalGeneration, varlen_supported  # noqa: E402
from training.processor import Encoded  # noqa: E402

GOALS = {"mfu": 0.30, "speedup": 1.5}
IGNORE_INDEX = -100


@dataclass
class Shape:
    """A model shape and the batch it is measured on."""

    vision: dict[str, Any]
    perceiver: dict[str, Any]
    text: dict[str, Any]
    image_side: int  # pixels of every (square) image
    rows: int  # packed rows per step
    row_tokens: int  # tokens per packed row at most
    text_tokens: tuple[int, int]  # text tokens per sample, min and max
    warmup: int
    steps: int
    lora_r: int


SHAPES = {
    "idefics2-8b": Shape(
        vision=dict(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            image_size=980,
            patch_size=14,
            hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6,
        ),
        perceiver=dict(resampler_n_latents=64, resampler_depth=3, resampler_n_heads=16, resampler_head_dim=96, num_key_value_heads=4),
        text=dict(
            vocab_size=32003,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            rms_norm_eps=1e-5,
            sliding_window=4096,
            max_position_embeddings=32768,
        ),
        image_side=378,
        rows=4,
        row_tokens=2048,
        text_tokens=(120, 700),
        warmup=2,
        steps=5,
        lora_r=64,
    ),
    "smoke": Shape(
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14),
        perceiver=dict(resampler_n_latents=8, resampler_depth=2, resampler_n_heads=2, resampler_head_dim=16, num_key_value_heads=1),
        text=dict(
            vocab_size=259,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            sliding_window=None,
        ),
        image_side=28,
        rows=2,
        row_tokens=128,
        text_tokens=(10, 40),
        warmup=1,
        steps=2,
        lora_r=4,
    ),
}


def build_config(shape: Shape):
    from transformers import Idefics2Config

    vocab = shape.text["vocab_size"]
    return Idefics2Config(
        vision_config=shape.vision,
        perceiver_config={"hidden_size": shape.text["hidden_size"], **shape.perceiver},
        text_config={"model_type": "mistral", "pad_token_id": 0, **shape.text},
        image_token_id=vocab - 2,
        tie_word_embeddings=False,
        use_cache=False,
    )


def new_token_ids(config) -> list[int]:
    """Idefics2's three added tokens sit at the end of the vocabulary; `<image>` is the middle one."""
    vocab = config.text_config.vocab_size
    return [vocab - 3, vocab - 2, vocab - 1]


def packed_batch(config, shape: Shape) -> dict[str, Any]:
    """Samples of one image and some text (`<s>` + image run + text + `</s>`, loss on text and EOS),
    packed greedily into rows of at most `row_tokens` tokens, collated as the loader does."""
    generator = torch.Generator().manual_seed(0)
    fake, image = new_token_ids(config)[:2]
    latents = config.perceiver_config.resampler_n_latents
    words = (3, config.text_config.vocab_size - 3)
    rows: list[Encoded] = []
    pack: list[Encoded] = []
    while len(rows) < shape.rows:
        count = int(torch.randint(*shape.text_tokens, (1,), generator=generator))
        text = torch.randint(*words, (count,), generator=generator)
        ids = torch.cat([torch.tensor([1, fake] + [image] * latents + [fake]), text, torch.tensor([2])])
        labels = ids.clone()
        labels[: latents + 3] = IGNORE_INDEX
        pixels = torch.randint(0, 256, (3, shape.image_side, shape.image_side), dtype=torch.uint8, generator=generator)
        sample = Encoded(ids, labels, [pixels], 1, "bench")
        if pack and sum(map(len, pack)) + len(sample) > shape.row_tokens:
            rows.append(concatenate(pack))
            pack = []
        pack.append(sample)
    return collate(rows, pad_token_id=0)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def random_model(implementation: str, config, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A randomly initialised model built directly on the device in `dtype` (no float32 copy first)."""
    from transformers import Idefics2ForConditionalGeneration as Reference

    config._attn_implementation = "sdpa"
    with default_dtype(dtype), device:
        model = Idefics2ForConditionalGeneration(config) if implementation == "potion" else Reference(config)
    return model.train()


def adapters(shape: Shape) -> AdapterConfig:
    return AdapterConfig(method="lora", r=shape.lora_r, alpha=16, dropout=0.1, train_fully=["model.connector"])


def prepare_potion(model: torch.nn.Module, shape: Shape, config) -> torch.nn.Module:
    apply_adapters(model, adapters(shape), new_token_ids(config))
    return model


def prepare_transformers(model: torch.nn.Module, shape: Shape, config) -> torch.nn.Module:
    from peft import get_peft_model

    peft_config = lora_config(adapters(shape))
    peft_config.modules_to_save = ["connector"]
    peft_config.trainable_token_indices = {"embed_tokens": new_token_ids(config), "lm_head": new_token_ids(config)}
    return get_peft_model(model, peft_config)


def measure(
    implementation: str, shape: Shape, config, batch: dict[str, Any], device: torch.device, amp: torch.dtype | None
) -> dict[str, Any]:
    """Build one case, warm it up, time its steps; its row of results."""
    model = random_model(implementation, config, device, torch.bfloat16 if amp else torch.float32)
    step_flops = FlopCounter(model).step_flops(batch)
    prepare = prepare_potion if implementation == "potion" else prepare_transformers
    model = prepare(model, shape, config)
    if amp:
        keep_trainable_in_float32(model)
    trainable: list[torch.Tensor] = [param for param in model.parameters() if param.requires_grad]
    stepper = Stepper(model, build_optimizer(model, TrainConfig(), device), trainable, Distributed(), device, amp, 1.0)
    targets = float((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    for _ in range(shape.warmup):
        optimizer_step(stepper, [batch], targets)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(shape.steps):
        start = time.perf_counter()
        loss, _ = optimizer_step(stepper, [batch], targets)
        synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak = peak_flops(device)
    row = {
        "benchmark": "trainer",
        "case": implementation if implementation == "potion" else "transformers+peft",
        "tokens_per_s": batch["num_tokens"] / seconds,
        "step_s": seconds,
        "mfu": step_flops / seconds / peak if peak else None,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "trainable_m": sum(p.numel() for p in trainable) / 1e6,
        "loss": loss,
    }
    if implementation == "potion":
        row["attention"] = (
            "flash varlen" if varlen_supported(torch.empty(0, device=device, dtype=amp or torch.float32), 0.0) else "sdpa block mask"
        )
        row.update(attention_paths_agree(model, batch, device, amp))
    del stepper, model, trainable
    release(device)
    return row


def attention_paths_agree(model: torch.nn.Module, batch: dict[str, Any], device: torch.device, amp: torch.dtype | None) -> dict[str, float]:
    """The loss of one batch through the varlen path and through the SDPA block mask (eval mode)."""
    assert isinstance(model, Idefics2ForConditionalGeneration)  # ours, adapters injected in place
    text_model = model.model.text_model
    model.eval()
    losses = []
    with torch.no_grad(), torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
        for varlen in (True, False):
            text_model.use_varlen = varlen
            losses.append(float(model(**to_device(batch, device), return_logits=False).loss))
    text_model.use_varlen = True
    model.train()
    return {"loss_varlen": losses[0], "loss_sdpa_mask": losses[1], "loss_paths_abs_diff": abs(losses[0] - losses[1])}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run(smoke: bool) -> list[dict[str, Any]]:
    """The baseline row, potion's row (with its ratios and goals), one row per case."""
    device = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
    shape = SHAPES["smoke" if smoke else "idefics2-8b"]
    amp = torch.bfloat16 if device.type == "cuda" else None
    config = build_config(shape)
    batch = packed_batch(config, shape)
    torch.manual_seed(0)
    baseline = measure("transformers", shape, config, batch, device, amp)
    ours = measure("potion", shape, config, batch, device, amp)
    ours["speedup"] = ours["tokens_per_s"] / baseline["tokens_per_s"]
    if ours["peak_gib"] is not None:
        ours["memory_ratio"] = ours["peak_gib"] / baseline["peak_gib"]
    if ours["mfu"] is not None:
        ours["goals_met"] = ours["mfu"] >= GOALS["mfu"] and ours["speedup"] >= GOALS["speedup"] and ours["memory_ratio"] <= 1.0
    shared = {
        "shape": "smoke" if smoke else "idefics2-8b",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "tokens_per_step": batch["num_tokens"],
        "rows": shape.rows,
        "row_tokens": shape.row_tokens,
        "images_per_step": batch["num_images"],
    }
    return [{**shared, **baseline}, {**shared, **ours}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    args = parser.parse_args()
    for row in run(args.smoke):
        print("  ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in row.items()))


if __name__ == "__main__":
    main()
