"""Model FLOPs of a training step, for MFU (model FLOPs utilisation).

The usual approximation: a parameter costs 6 FLOPs per input it touches in a training step (2 forward,
4 backward), counted as if every weight trained (MFU measures the model's arithmetic, not the adapter
savings), plus causal attention scores at 6 x layers x width x length^2 per sample (forward + backward
of QK^T and AV, halved for causality): a packed sample attends only within itself, so packing does
not inflate the count. Inputs per component: the language model sees every token, the vision encoder
and the modality projection every valid patch, the perceiver its latents.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from training.model import model_config, perceiver_config, square_side, text_config, vision_config

# Dense bf16 peak, FLOP/s, by a substring of the CUDA device name.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
}


def peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_FLOPS.items():
        if key in name:
            return value
    return None


def _count(module: nn.Module | None) -> int:
    """Parameters of a module's base weights (adapter parameters excluded)."""
    if module is None:
        return 0
    return sum(p.numel() for name, p in module.named_parameters() if "lora_" not in name)


class FlopCounter:
    """FLOPs of a step of an Idefics2 of either implementation (their module names are the same)."""

    def __init__(self, model: nn.Module) -> None:
        config = model_config(model)
        text = model.get_submodule("model.text_model")
        self.patch_size = square_side(vision_config(config).patch_size, "patch_size")
        self.latents = perceiver_config(config).resampler_n_latents
        self.text_params = (
            _count(text)
            - model.get_parameter("model.text_model.embed_tokens.weight").numel()
            + model.get_parameter("lm_head.weight").numel()
        )
        self.text_layers = text_config(config).num_hidden_layers
        self.text_width = text_config(config).hidden_size
        self.vision_params = _count(model.get_submodule("model.vision_model"))
        self.projection_params = _count(model.get_submodule("model.connector.modality_projection"))
        self.perceiver_params = _count(model.get_submodule("model.connector.perceiver_resampler"))

    def step_flops(self, batch: dict[str, Any]) -> float:
        tokens = int(batch["attention_mask"].sum())
        flops = 6 * self.text_params * tokens + 6 * self.text_layers * self.text_width * squared_sample_lengths(batch)
        mask = batch.get("pixel_attention_mask")
        if mask is not None:
            rows = mask[..., :, 0].sum(-1) // self.patch_size  # whole patches per crop (padding crops: 0)
            cols = mask[..., 0, :].sum(-1) // self.patch_size
            patches = int((rows * cols).sum())
            images = int(((rows > 0) & (cols > 0)).sum())
            flops += 6 * (self.vision_params + self.projection_params) * patches
            flops += 6 * self.perceiver_params * self.latents * images
        return float(flops)


def squared_sample_lengths(batch: dict[str, Any]) -> int:
    """Sum of length^2 over the batch's samples: a row's real tokens, or each packed sample in it."""
    real = batch["attention_mask"].bool()
    positions = batch.get("position_ids")
    if positions is None:
        return int((real.sum(dim=1) ** 2).sum())
    starts = torch.diff(positions, prepend=positions[:, :1] - 1, dim=-1) != 1
    rows, length = real.shape
    samples = starts.cumsum(dim=1) + torch.arange(rows)[:, None] * length  # a distinct id per sample
    return int((torch.bincount(samples[real]) ** 2).sum())
