"""A compact Idefics2, read top to bottom like Figure 2 of the paper.

    images -> vision encoder (SigLIP ViT, any resolution / aspect ratio via a patch mask)
           -> modality projection (SwiGLU MLP into the language model's width)
           -> perceiver resampler (64 learned latents per image, 3 layers)
           -> merged into the token stream at the `<image>` positions
           -> language model (Mistral: RMSNorm, RoPE, grouped-query attention, SwiGLU)
           -> LM head -> shifted cross-entropy over labels != -100

Module and parameter names are exactly those of transformers' `Idefics2ForConditionalGeneration`, so
a state dict moves between the two with `strict=True`; the configuration is transformers'
`Idefics2Config`, so a checkpoint's `config.json` is used as is. Attention runs through
`torch.nn.functional.scaled_dot_product_attention`, and for packed rows on CUDA through FlashAttention
varlen (section 3a): each packed sample attends, and is scored, only within itself. `generate` decodes
greedily through a key/value cache of the decoder (`KVCache`), token for token as transformers'
`generate` does on the same weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import torch
import torch.nn.functional as F
from huggingface_hub import snapshot_download
from safetensors.torch import load_file
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import (
    AutoModelForCausalLM,
    Idefics2Config,
    Idefics2PerceiverConfig,
    Idefics2VisionConfig,
    PreTrainedConfig,
    PreTrainedModel,
    SiglipVisionModel,
)

VarlenAttention = Callable[..., torch.Tensor | tuple[torch.Tensor, torch.Tensor]]
varlen_attn: VarlenAttention | None
try:  # FlashAttention varlen, torch >= 2.10 (CUDA only)
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # pragma: no cover - older torch: packed rows use SDPA with a mask
    varlen_attn = None

IGNORE_INDEX = -100

_ACTIVATIONS = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "silu": F.silu,
}


def activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def run_layer(layer: nn.Module, use_checkpoint: bool, *args):
    """Call `layer(*args)`, recomputing its activations in backward when `use_checkpoint` is set."""
    if use_checkpoint:
        return checkpoint(layer, *args, use_reentrant=False)
    return layer(*args)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float, is_causal: bool = False
) -> torch.Tensor:
    """SDPA over (batch, heads, seq, head_dim); each K/V head serves a group of consecutive query heads.

    SDPA's own GQA support avoids copying K/V, except for a masked call on CUDA, where it would fall
    back to the slow math kernel: there K/V are repeated instead.
    """
    groups = q.shape[1] // k.shape[1]
    repeat = groups > 1 and mask is not None and q.is_cuda
    if repeat:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal, enable_gqa=groups > 1 and not repeat
    )


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor | None:
    """(batch, keys) validity -> boolean SDPA mask (batch, 1, 1, keys); None when every key is valid."""
    if bool(valid.all()):
        return None
    return valid.bool()[:, None, None, :]


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, scaled after casting back (Mistral/Idefics2 order)."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class SwiGLU(nn.Module):
    """down(act(gate(x)) * up(x)), no biases: the connector's projection, perceiver and Mistral MLPs."""

    def __init__(self, size_in: int, size_hidden: int, size_out: int, act: str) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(size_in, size_hidden, bias=False)
        self.up_proj = nn.Linear(size_in, size_hidden, bias=False)
        self.down_proj = nn.Linear(size_hidden, size_out, bias=False)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


# ---------------------------------------------------------------------------------------------------
# 0. Configuration: transformers' Idefics2Config, its sub-configs typed
# ---------------------------------------------------------------------------------------------------

SubConfig = TypeVar("SubConfig", bound=PreTrainedConfig)


def _sub_config(config: Idefics2Config, name: str, kind: type[SubConfig]) -> SubConfig:
    """A sub-config as the config object `Idefics2Config` makes of it (from a dict, or its defaults);
    any other value is a config put together past that conversion, and refused."""
    value = getattr(config, name)
    if not isinstance(value, kind):
        raise TypeError(f"Idefics2Config.{name} is a {type(value).__name__}, expected a {kind.__name__}")
    return value


def vision_config(config: Idefics2Config) -> Idefics2VisionConfig:
    return _sub_config(config, "vision_config", Idefics2VisionConfig)


def perceiver_config(config: Idefics2Config) -> Idefics2PerceiverConfig:
    return _sub_config(config, "perceiver_config", Idefics2PerceiverConfig)


def text_config(config: Idefics2Config) -> PreTrainedConfig:
    """The language model's config (`TextModel` accepts a Mistral's)."""
    return _sub_config(config, "text_config", PreTrainedConfig)


def model_config(model: nn.Module) -> Idefics2Config:
    """The `Idefics2Config` of a model of either implementation (potion's or transformers')."""
    config = getattr(model, "config", None)
    if not isinstance(config, Idefics2Config):
        raise TypeError(f"{type(model).__name__} has no Idefics2Config (found {type(config).__name__})")
    return config


def square_side(value: int | list[int] | tuple[int, int], name: str) -> int:
    """An image or patch size as one side: the vision encoder cuts square patches from a square grid."""
    if not isinstance(value, int):
        raise ValueError(f"vision_config.{name} must be one integer (a square), got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------
# 1. Vision encoder: SigLIP ViT with NaViT-style patch masks and bucketed position ids
# ---------------------------------------------------------------------------------------------------


def bucketed_position_ids(patch_mask: torch.Tensor, grid: int) -> torch.Tensor:
    """Position ids for images of any size, as indices into a `grid` x `grid` position table.

    An image with h x w valid patches spreads its rows and columns evenly over [0, 1), and each
    fractional coordinate falls into one of `grid` buckets: a full-size image uses the table 1:1,
    a smaller one samples it sparsely. Padding patches get id 0. The arithmetic is float32 with the
    same boundaries as the released model, so the ids match its checkpoints exactly.
    """
    batch, rows, cols = patch_mask.shape
    boundaries = torch.arange(1 / grid, 1.0, 1 / grid, device=patch_mask.device)
    valid_rows = patch_mask[:, :, 0].sum(dim=1)
    valid_cols = patch_mask[:, 0, :].sum(dim=1)
    # multiply by the reciprocal (not divide) to reproduce the reference rounding bit for bit
    row_steps = torch.arange(rows, device=patch_mask.device, dtype=torch.float32)
    col_steps = torch.arange(cols, device=patch_mask.device, dtype=torch.float32)
    row_coords = row_steps[None, :] * (1.0 / valid_rows)[:, None]
    col_coords = col_steps[None, :] * (1.0 / valid_cols)[:, None]
    row_bucket = torch.bucketize(row_coords.clamp(max=1.0 - 1e-6), boundaries, right=True)
    col_bucket = torch.bucketize(col_coords.clamp(max=1.0 - 1e-6), boundaries, right=True)
    ids = (row_bucket[:, :, None] * grid + col_bucket[:, None, :]).reshape(batch, -1)
    return torch.where(patch_mask.reshape(batch, -1), ids, torch.zeros_like(ids))


class VisionEmbeddings(nn.Module):
    def __init__(self, config: Idefics2VisionConfig) -> None:
        super().__init__()
        self.patch_size = square_side(config.patch_size, "patch_size")
        self.grid = square_side(config.image_size, "image_size") // self.patch_size
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=self.patch_size, stride=self.patch_size)
        self.position_embedding = nn.Embedding(self.grid * self.grid, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        return patches + self.position_embedding(bucketed_position_ids(patch_mask, self.grid))


class VisionAttention(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.dropout = config.attention_dropout
        width = config.hidden_size
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (proj(x).view(batch, length, self.num_heads, -1).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = attention(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class VisionMLP(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionLayer(nn.Module):
    """Pre-LayerNorm transformer block, bidirectional attention."""

    def __init__(self, config) -> None:
        super().__init__()
        self.self_attn = VisionAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VisionMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class VisionEncoder(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(config) for _ in range(config.num_hidden_layers))


class VisionTransformer(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.embeddings = VisionEmbeddings(config)
        self.encoder = VisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
        """(images, 3, H, W) + (images, H/p, W/p) patch mask -> (images, patches, vision width)."""
        x = self.embeddings(pixel_values, patch_mask)
        mask = key_padding_mask(patch_mask.flatten(1))
        for layer in self.encoder.layers:
            x = run_layer(layer, use_checkpoint, x, mask)
        return self.post_layernorm(x)


# ---------------------------------------------------------------------------------------------------
# 2. Connector: modality projection, then the perceiver resampler
# ---------------------------------------------------------------------------------------------------


class PerceiverAttention(nn.Module):
    """Latents query; keys and values come from the context and the latents concatenated."""

    def __init__(self, config) -> None:
        super().__init__()
        self.num_heads = config.resampler_n_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.resampler_head_dim
        self.dropout = config.attention_dropout
        width = config.hidden_size
        self.q_proj = nn.Linear(width, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(width, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(width, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, width, bias=False)

    def forward(self, latents: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, n_latents, _ = latents.shape
        keys_in = torch.cat([context, latents], dim=1)
        q = self.q_proj(latents).view(batch, n_latents, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(keys_in).view(batch, -1, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(keys_in).view(batch, -1, self.num_kv_heads, self.head_dim).transpose(1, 2)
        out = attention(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.o_proj(out.transpose(1, 2).reshape(batch, n_latents, -1))


class PerceiverLayer(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        width, eps = config.hidden_size, config.rms_norm_eps
        self.input_latents_norm = RMSNorm(width, eps)
        self.input_context_norm = RMSNorm(width, eps)
        self.self_attn = PerceiverAttention(config)
        self.post_attention_layernorm = RMSNorm(width, eps)
        self.mlp = SwiGLU(width, 4 * width, width, config.hidden_act)

    def forward(self, latents: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        latents = latents + self.self_attn(self.input_latents_norm(latents), self.input_context_norm(context), mask)
        return latents + self.mlp(self.post_attention_layernorm(latents))


class PerceiverResampler(nn.Module):
    """Compresses each image's variable number of patches into `resampler_n_latents` vectors."""

    def __init__(self, config) -> None:
        super().__init__()
        # distinct random latents: identical ones (transformers' init) would stay identical under training
        self.latents = nn.Parameter(torch.randn(config.resampler_n_latents, config.hidden_size))
        self.layers = nn.ModuleList(PerceiverLayer(config) for _ in range(config.resampler_depth))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, context: torch.Tensor, patch_valid: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
        batch = context.shape[0]
        latents = self.latents.unsqueeze(0).expand(batch, -1, -1)
        latents_valid = patch_valid.new_ones(batch, latents.shape[1])
        mask = key_padding_mask(torch.cat([patch_valid, latents_valid], dim=1))
        for layer in self.layers:
            latents = run_layer(layer, use_checkpoint, latents, context, mask)
        return self.norm(latents)


class Connector(nn.Module):
    def __init__(self, config: Idefics2Config) -> None:
        super().__init__()
        text = text_config(config)
        self.modality_projection = SwiGLU(vision_config(config).hidden_size, text.intermediate_size, text.hidden_size, text.hidden_act)
        self.perceiver_resampler = PerceiverResampler(perceiver_config(config))

    def forward(self, image_states: torch.Tensor, patch_valid: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
        return self.perceiver_resampler(self.modality_projection(image_states), patch_valid, use_checkpoint)


# ---------------------------------------------------------------------------------------------------
# 3. Language model: Mistral decoder
# ---------------------------------------------------------------------------------------------------


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


class RotaryEmbedding(nn.Module):
    """RoPE cos/sin tables for given positions (the half-split layout of the Mistral checkpoints).

    Positions restart at 0 for every packed sample, so each sample is rotated as if it were alone.
    """

    def __init__(self, config: PreTrainedConfig) -> None:
        super().__init__()
        rope = config.rope_parameters
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"only default RoPE is supported, got {rope['rope_type']!r}")
        self.theta = float(rope["rope_theta"])
        self.head_dim = config.head_dim

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        exponents = torch.arange(0, self.head_dim, 2, device=position_ids.device, dtype=torch.int64).float()
        inv_freq = 1.0 / (self.theta ** (exponents / self.head_dim))
        freqs = position_ids[..., None].float() * inv_freq
        angles = torch.cat([freqs, freqs], dim=-1)
        return angles.cos().to(dtype)[:, :, None], angles.sin().to(dtype)[:, :, None]  # (batch, L, 1, head_dim)


class TextAttention(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        width = config.hidden_size
        self.q_proj = nn.Linear(width, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(width, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(width, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, width, bias=False)

    def rotated_qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys (both with RoPE applied) and values, as (batch, seq, heads, head_dim)."""
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: TextAttentionPlan) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = self.rotated_qkv(x, cos, sin)
        out = text_attention(q, k, v, plan, self.dropout if self.training else 0.0)
        return self.o_proj(out.reshape(batch, length, -1))

    def forward_cached(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None, cache: KVCache, layer: int
    ) -> torch.Tensor:
        """Attention of the new positions `x` over the cached keys/values plus their own (inference only).

        A None mask means plain causal attention when the cache was empty (the prompt), and every
        cached key visible otherwise (one new token).
        """
        batch, length, _ = x.shape
        q, k, v = (t.transpose(1, 2) for t in self.rotated_qkv(x, cos, sin))
        k, v = cache.append(layer, k, v)
        out = attention(q, k, v, mask, 0.0, is_causal=mask is None and q.shape[2] == k.shape[2])
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class DecoderLayer(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.self_attn = TextAttention(config)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size, config.hidden_size, config.hidden_act)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: TextAttentionPlan) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, plan)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_cached(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None, cache: KVCache, layer: int
    ) -> torch.Tensor:
        x = x + self.self_attn.forward_cached(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


def causal_mask(attention_mask: torch.Tensor | None, length: int, sliding_window: int | None, device: torch.device) -> torch.Tensor | None:
    """Boolean (batch, 1, L, L) mask: causal, within the sliding window, padded keys hidden.

    None when plain causal attention suffices (no padding, sequence within the window), which lets
    SDPA pick its fused causal kernels. A query that would see no key at all (a left-padding row)
    sees itself instead, as an all-masked row makes SDPA return NaN.
    """
    no_padding = attention_mask is None or bool(attention_mask.all())
    within_window = sliding_window is None or length <= sliding_window
    if no_padding and within_window:
        return None
    query = torch.arange(length, device=device)[:, None]
    key = torch.arange(length, device=device)[None, :]
    allowed = key <= query
    if sliding_window is not None and not within_window:
        allowed &= key > query - sliding_window
    allowed = allowed[None, None]
    if attention_mask is not None and not no_padding:
        allowed = allowed & attention_mask.bool()[:, None, None, :]
    return allowed | ((key == query) & ~allowed.any(dim=-1, keepdim=True))


# ---------------------------------------------------------------------------------------------------
# 3a. Which keys a text query sees: its own sample's past, never padding or a packed neighbour
# ---------------------------------------------------------------------------------------------------


@dataclass
class TextAttentionPlan:
    """How every decoder layer of one forward pass attends, decided once from padding and position ids.

    Nothing set: plain causal attention (SDPA's `is_causal` kernels, no mask, native GQA).
    `cu_seqlens`: FlashAttention varlen over the flattened batch, one causal block per sample (CUDA).
    `mask`: a boolean (batch, 1, L, L) SDPA mask (packed rows off CUDA, left padding, sliding windows).
    """

    mask: torch.Tensor | None = None
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int = 0
    window: int | None = None


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is its real tokens followed by padding (or no padding at all)."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


def packed_documents(position_ids: torch.Tensor) -> torch.Tensor | None:
    """(batch, L) -> index of the packed sample of each position, counted per row; None when every row
    holds a single sample. A sample starts wherever the position id does not count up by one (the
    rule of transformers' packed-sequence masks), so positions restarting at 0 separate samples."""
    steps = torch.diff(position_ids, prepend=position_ids[:, :1] - 1, dim=-1)
    documents = (steps != 1).cumsum(-1)
    return documents if bool(documents[:, -1].any()) else None


def packed_causal_mask(documents: torch.Tensor, sliding_window: int | None) -> torch.Tensor:
    """Boolean (batch, 1, L, L) block-diagonal causal mask: a query sees earlier keys of its own sample."""
    index = torch.arange(documents.shape[1], device=documents.device)
    allowed = (index[:, None] >= index[None, :]) & (documents[:, :, None] == documents[:, None, :])
    if sliding_window is not None:
        allowed &= index[:, None] - index[None, :] < sliding_window
    return allowed[:, None]


def sample_boundaries(documents: torch.Tensor | None, batch: int, length: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """(cumulative sample starts over the flattened batch, int32, ending with batch * L; longest sample).

    Every row starts a sample; a row's padding tail belongs to its last sample (causal attention keeps
    it out of the real tokens' view)."""
    starts = torch.zeros(batch, length, dtype=torch.bool, device=device)
    starts[:, 0] = True
    if documents is not None:
        starts[:, 1:] |= documents[:, 1:] != documents[:, :-1]
    offsets = starts.flatten().nonzero().flatten()
    cu_seqlens = torch.cat([offsets, offsets.new_tensor([batch * length])]).to(torch.int32)
    return cu_seqlens, int(cu_seqlens.diff().max())


def plan_text_attention(
    attention_mask: torch.Tensor | None, position_ids: torch.Tensor, sliding_window: int | None, varlen: bool
) -> TextAttentionPlan:
    """The cheapest attention that gives each real token exactly the keys of its own sample's past.

    Left padding (generation) keeps the dense mask of `causal_mask`. Right padding needs nothing:
    padding comes after every real token of its row, so causal attention never shows it to them.
    Packed rows (or rows beyond the sliding window) use FlashAttention varlen when `varlen` is set,
    and a boolean mask otherwise.
    """
    batch, length = position_ids.shape
    device = position_ids.device
    if attention_mask is not None and not is_right_padded(attention_mask):
        return TextAttentionPlan(mask=causal_mask(attention_mask, length, sliding_window, device))
    documents = packed_documents(position_ids) if length > 1 else None
    windowed = sliding_window is not None and length > sliding_window
    if documents is None and not windowed:
        return TextAttentionPlan()
    if varlen:
        cu_seqlens, longest = sample_boundaries(documents, batch, length, device)
        window = sliding_window if sliding_window is not None and longest > sliding_window else None
        return TextAttentionPlan(cu_seqlens=cu_seqlens, max_seqlen=longest, window=window)
    if documents is None:
        return TextAttentionPlan(mask=causal_mask(None, length, sliding_window, device))
    return TextAttentionPlan(mask=packed_causal_mask(documents, sliding_window))


def varlen_supported(inputs: torch.Tensor, dropout: float) -> bool:
    """FlashAttention varlen runs on CUDA in fp16/bf16 (autocast counts) without attention dropout."""
    if varlen_attn is None or not inputs.is_cuda or dropout > 0:
        return False
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else inputs.dtype
    return dtype in (torch.float16, torch.bfloat16)


def text_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: TextAttentionPlan, dropout: float) -> torch.Tensor:
    """(batch, L, heads, head_dim) queries, (batch, L, kv heads, head_dim) keys and values -> like q."""
    if plan.cu_seqlens is not None:
        return varlen_attention(q, k, v, plan.cu_seqlens, plan.max_seqlen, plan.window)
    out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), plan.mask, dropout, is_causal=plan.mask is None)
    return out.transpose(1, 2)


def varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, window: int | None
) -> torch.Tensor:
    """Causal FlashAttention over the batch flattened to (tokens, heads, head_dim), one block per sample
    (`cu_seqlens`, `max_seqlen` and `window` as in `TextAttentionPlan`)."""
    if varlen_attn is None:
        raise RuntimeError("a varlen attention plan needs torch.nn.attention.varlen (torch >= 2.10)")
    batch, length, heads, head_dim = q.shape
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else q.dtype
    q, k, v = (t.reshape(batch * length, t.shape[2], head_dim).to(dtype) for t in (q, k, v))
    window_size = (window - 1 if window is not None else -1, 0)
    out = varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, window_size=window_size, enable_gqa=heads != k.shape[1])
    # torch types the result for every `return_aux`; without it the result is the output tensor alone
    return cast(torch.Tensor, out).view(batch, length, heads, head_dim)


def decode_step_mask(attention_mask: torch.Tensor, sliding_window: int | None) -> torch.Tensor | None:
    """Boolean (batch, 1, 1, keys) mask for one new token over every earlier one: padded keys and keys
    beyond the sliding window hidden. None when every key is visible."""
    total = attention_mask.shape[1]
    visible = attention_mask.bool()
    if sliding_window is not None and total > sliding_window:
        visible = visible & (torch.arange(total, device=visible.device) > total - 1 - sliding_window)
    return None if bool(visible.all()) else visible[:, None, None, :]


class KVCache:
    """Keys and values of every decoder layer for a batch being generated (inference only).

    Preallocated for `capacity` positions on the first append (in the dtype the layers produce, so bf16
    autocast is respected); `length` is how many positions it holds.
    """

    def __init__(self, layers: int, capacity: int) -> None:
        self.layers = layers
        self.capacity = capacity
        self.length = 0
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store a layer's new keys/values after the cached ones; return the layer's keys/values so far."""
        if self.keys is None or self.values is None:
            batch, heads, _, head_dim = k.shape
            self.keys = k.new_zeros(self.layers, batch, heads, self.capacity, head_dim)
            self.values = v.new_zeros(self.layers, batch, heads, self.capacity, head_dim)
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} positions cannot take {end}")
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class TextModel(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        if config.model_type != "mistral":
            raise ValueError(f"the language model must be a Mistral, got text_config.model_type={config.model_type!r}")
        self.sliding_window = config.sliding_window
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)
        self.attention_dropout = config.attention_dropout
        self.use_varlen = True  # FlashAttention varlen for packed rows on CUDA (False: SDPA with a mask)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        use_checkpoint: bool = False,
    ) -> torch.Tensor:
        """Right padding needs no `attention_mask` (causal attention keeps it away from real tokens);
        `position_ids` restarting at 0 mark packed samples, which then attend only to themselves."""
        batch, length, _ = inputs_embeds.shape
        if position_ids is None:
            position_ids = torch.arange(length, device=inputs_embeds.device)[None].expand(batch, -1)
        cos, sin = self.rotary_emb(position_ids, inputs_embeds.dtype)
        dropout = self.attention_dropout if self.training else 0.0
        varlen = self.use_varlen and varlen_supported(inputs_embeds, dropout)
        plan = plan_text_attention(attention_mask, position_ids, self.sliding_window, varlen)
        x = inputs_embeds
        for layer in self.layers:
            x = run_layer(layer, use_checkpoint, x, cos, sin, plan)
        return self.norm(x)

    def decoder_layers(self) -> list[DecoderLayer]:
        """`layers` as the decoder layers they are (iterating an nn.ModuleList yields plain Modules)."""
        layers = [layer for layer in self.layers if isinstance(layer, DecoderLayer)]
        if len(layers) != len(self.layers):
            raise TypeError("text_model.layers holds modules other than DecoderLayers")
        return layers

    def forward_cached(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """Hidden states of the new positions, attending to the cache; the cache then holds them too.

        `attention_mask` covers the cached and the new positions (1 = real token). The first call (empty
        cache) takes the whole prompt, later calls one token per row.
        """
        queries = inputs_embeds.shape[1]
        total = attention_mask.shape[1]
        if cache.length + queries != total:
            raise ValueError(f"attention_mask covers {total} positions, the cache {cache.length} + {queries} new")
        cos, sin = self.rotary_emb(position_ids, inputs_embeds.dtype)
        if cache.length == 0:
            mask = causal_mask(attention_mask, total, self.sliding_window, inputs_embeds.device)
        elif queries == 1:
            mask = decode_step_mask(attention_mask, self.sliding_window)
        else:
            raise ValueError("after the prompt, the cache takes one new token per row at a time")
        x = inputs_embeds
        for index, layer in enumerate(self.decoder_layers()):
            x = layer.forward_cached(x, cos, sin, mask, cache, index)
        cache.length = total
        return self.norm(x)


# ---------------------------------------------------------------------------------------------------
# 4. The whole model: images -> features -> merged token stream -> language model -> loss
# ---------------------------------------------------------------------------------------------------


def patch_mask_from_pixels(pixel_mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """A patch is valid only when every one of its pixels is; a partly covered edge patch is dropped."""
    images, height, width = pixel_mask.shape
    rows, cols = height // patch_size, width // patch_size
    cells = pixel_mask[:, : rows * patch_size, : cols * patch_size].reshape(images, rows, patch_size, cols, patch_size)
    return cells.bool().all(dim=4).all(dim=2)


class Idefics2Model(nn.Module):
    def __init__(self, config: Idefics2Config) -> None:
        super().__init__()
        self.config = config
        self.vision_model = VisionTransformer(vision_config(config))
        self.connector = Connector(config)
        self.text_model = TextModel(text_config(config))

    def image_features(
        self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor | None, use_checkpoint: bool = False
    ) -> torch.Tensor:
        """(batch, images, 3, H, W) -> (real images * latents, text width), in batch-then-image order.

        Padding images (every value exactly 0) are dropped, as the processor pads with zeros.
        """
        pixels = pixel_values.flatten(0, 1).to(self.vision_model.embeddings.patch_embedding.weight.dtype)
        real = pixels.flatten(1).ne(0).any(dim=1)
        if not bool(real.any()):
            return pixels.new_zeros(0, text_config(self.config).hidden_size)
        pixels = pixels[real]
        if pixel_attention_mask is None:
            pixel_mask = pixels.new_ones(pixels.shape[0], *pixels.shape[2:], dtype=torch.bool)
        else:
            pixel_mask = pixel_attention_mask.flatten(0, 1)[real]
        patch_mask = patch_mask_from_pixels(pixel_mask, self.vision_model.embeddings.patch_size)
        states = self.vision_model(pixels, patch_mask, use_checkpoint)
        latents = self.connector(states, patch_mask.flatten(1), use_checkpoint)
        return latents.flatten(0, 1)

    def blank_image_features(self) -> torch.Tensor:
        """The vision encoder and connector run on one blank patch: (latents, text width)."""
        patch = self.vision_model.embeddings.patch_size
        weight = self.vision_model.embeddings.patch_embedding.weight
        pixels = weight.new_zeros(1, vision_config(self.config).num_channels, patch, patch)
        patch_mask = torch.ones(1, 1, 1, dtype=torch.bool, device=weight.device)
        return self.connector(self.vision_model(pixels, patch_mask), patch_mask.flatten(1))[0]

    def embed_inputs(
        self,
        input_ids: torch.Tensor | None,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_checkpoint: bool = False,
        keep_image_path: bool = False,
    ) -> torch.Tensor:
        """Token embeddings with the image features written, in order, over the `<image>` tokens.

        `inputs_embeds`, when given, replaces the token-embedding lookup; images are still placed at
        the `<image>` positions of `input_ids`. `keep_image_path`: a batch without images adds the
        features of a blank patch weighted 0, so that every image-path parameter takes part in the
        step (with zero gradient), as DDP without unused-parameter search and FSDP require.
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            inputs_embeds = self.text_model.embed_tokens(input_ids)
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("pixel_values need input_ids to locate the <image> tokens")
            features = self.image_features(pixel_values, pixel_attention_mask, use_checkpoint)
            slots = input_ids == self.config.image_token_id
            if int(slots.sum()) != features.shape[0]:
                latents = perceiver_config(self.config).resampler_n_latents
                raise ValueError(
                    f"{int(slots.sum())} <image> tokens, but {features.shape[0] // latents} real "
                    f"images x {latents} latents = {features.shape[0]} image features"
                )
            if features.shape[0]:
                return inputs_embeds.masked_scatter(slots[..., None], features.to(inputs_embeds.dtype))
        if keep_image_path:
            inputs_embeds = inputs_embeds + 0 * self.blank_image_features().sum().to(inputs_embeds.dtype)
        return inputs_embeds


def neftune_noise(embeds: torch.Tensor, alpha: float) -> torch.Tensor:
    """NEFTune: uniform noise of magnitude alpha / sqrt(padded length * width)."""
    magnitude = alpha / math.sqrt(embeds.shape[1] * embeds.shape[2])
    return embeds + torch.empty_like(embeds).uniform_(-magnitude, magnitude)


LOSS_CHUNK_ELEMENTS = 2**26  # logits per chunk of the chunked loss: 256 MiB in float32


def next_token_targets(labels: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The label each position predicts: `labels` shifted left by one, -100 at the end of a row and
    wherever the next position starts another packed sample, so that no loss crosses samples."""
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    if position_ids is not None:
        next_starts_sample = torch.diff(position_ids, dim=-1) != 1
        targets[:, :-1] = targets[:, :-1].masked_fill(next_starts_sample, IGNORE_INDEX)
    return targets


def reduce_loss(total: torch.Tensor, targets: int, num_items_in_batch: int | torch.Tensor | None) -> torch.Tensor:
    """Mean over the batch's target tokens, or their sum divided by `num_items_in_batch` (the target
    count of a whole accumulated batch) so that gradient accumulation weighs every token equally."""
    return total / (targets if num_items_in_batch is None else num_items_in_batch)


def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy in float32 over targets != -100 (see `next_token_targets`)."""
    targets = targets.flatten().to(logits.device)
    total = F.cross_entropy(logits.flatten(0, 1).float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return reduce_loss(total, int((targets != IGNORE_INDEX).sum()), num_items_in_batch)


def _chunk_loss_sum(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def chunked_lm_loss(
    hidden: torch.Tensor,
    head: nn.Module,
    targets: torch.Tensor,
    vocab_size: int,
    num_items_in_batch: int | torch.Tensor | None = None,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """`causal_lm_loss(head(hidden), targets)` without ever holding a [tokens x vocab] logits tensor.

    Only positions with a target go through the head, `chunk_rows` at a time (default: about
    LOSS_CHUNK_ELEMENTS logits per chunk); each chunk's logits are recomputed in backward instead of
    being kept. A batch without targets still runs the head once, on no rows, so the graph keeps it.
    """
    flat = targets.flatten().to(hidden.device)
    keep = (flat != IGNORE_INDEX).nonzero().flatten()
    rows = hidden.flatten(0, 1).index_select(0, keep)
    wanted = flat.index_select(0, keep)
    chunk = chunk_rows or max(1, LOSS_CHUNK_ELEMENTS // vocab_size)
    total = sum(
        (
            checkpoint(_chunk_loss_sum, head, rows[start : start + chunk], wanted[start : start + chunk], use_reentrant=False)
            for start in range(0, max(1, len(keep)), chunk)
        ),
        start=hidden.new_zeros((), dtype=torch.float32),
    )
    return reduce_loss(total, len(keep), num_items_in_batch)


@dataclass
class Idefics2Output:
    logits: torch.Tensor | None  # None when the loss was computed chunk by chunk (`return_logits=False`)
    loss: torch.Tensor | None = None


class Idefics2ForConditionalGeneration(nn.Module):
    """Idefics2 with its LM head and loss.

    `gradient_checkpointing` recomputes every vision, perceiver and decoder layer in backward.
    `neftune_alpha` (e.g. 5.0) adds NEFTune noise in training mode to the merged embeddings, image
    positions included, as the Idefics2 authors did. `keep_image_path` makes a batch without images
    still run the image path (see `Idefics2Model.embed_inputs`), for DDP and FSDP: in training, and in
    validation under FSDP, where every rank must run the same sharded modules.
    """

    def __init__(self, config: Idefics2Config) -> None:
        super().__init__()
        self.config = config
        self.model = Idefics2Model(config)
        text = text_config(config)
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.text_model.embed_tokens.weight
        self.gradient_checkpointing = False
        self.neftune_alpha: float | None = None
        self.keep_image_path = False

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.text_model.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        return_logits: bool = True,
    ) -> Idefics2Output:
        """Logits, and the loss when `labels` are given.

        Pad on the right (positions count from 0; outputs at padding positions are unspecified).
        Packed rows pass `position_ids` restarting at 0 for each sample: every sample then attends, and
        is scored, as if it were alone. `return_logits=False` (training) computes the loss over target
        positions only, chunk by chunk, and returns no logits.
        """
        use_checkpoint = self.gradient_checkpointing and self.training
        embeds = self.model.embed_inputs(
            input_ids,
            pixel_values,
            pixel_attention_mask,
            inputs_embeds,
            use_checkpoint,
            keep_image_path=self.keep_image_path,
        )
        if self.training and self.neftune_alpha:
            embeds = neftune_noise(embeds, self.neftune_alpha)
        hidden = self.model.text_model(embeds, attention_mask, position_ids, use_checkpoint)
        targets = None if labels is None else next_token_targets(labels.to(hidden.device), position_ids)
        if targets is not None and not return_logits:
            return Idefics2Output(
                logits=None, loss=chunked_lm_loss(hidden, self.lm_head, targets, text_config(self.config).vocab_size, num_items_in_batch)
            )
        logits = self.lm_head(hidden)
        loss = None if targets is None else causal_lm_loss(logits, targets, num_items_in_batch)
        return Idefics2Output(logits=logits, loss=loss)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        eos_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
        stop: Callable[[torch.Tensor], torch.Tensor] | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Greedy decoding: the prompt followed by the new ids. Batched prompts must be left-padded.

        A row finishes at any of `eos_token_id`, or when `stop` (given the new ids so far, (batch, n))
        returns True for it; its later positions hold `pad_token_id` (default: the first EOS id, else 0).
        With `use_cache` the prompt runs once and each step feeds one token through a KV cache;
        without it every step re-runs the decoder over the whole sequence (same tokens, slower).
        """
        eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        pad = pad_token_id if pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
        eos = torch.tensor(eos_ids, dtype=input_ids.dtype, device=input_ids.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text = self.model.text_model
        embeds = self.model.embed_inputs(input_ids, pixel_values, pixel_attention_mask)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = KVCache(len(text.layers), input_ids.shape[1] + max_new_tokens) if use_cache else None
        hidden = (
            text.forward_cached(embeds, attention_mask, position_ids, cache)
            if cache is not None
            else text(embeds, attention_mask, position_ids)
        )
        new_ids: list[torch.Tensor] = []
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for step in range(max_new_tokens):
            next_ids = torch.where(finished, pad, self.lm_head(hidden[:, -1]).argmax(-1))
            new_ids.append(next_ids)
            finished |= torch.isin(next_ids, eos)
            if stop is not None:
                finished |= stop(torch.stack(new_ids, dim=1)).to(finished.device)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
            new_embeds = text.embed_tokens(next_ids[:, None])
            if cache is not None:
                position_ids = position_ids[:, -1:] + 1
                hidden = text.forward_cached(new_embeds, attention_mask, position_ids, cache)
            else:
                embeds = torch.cat([embeds, new_embeds], dim=1)
                position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
                hidden = text(embeds, attention_mask, position_ids)
        if not new_ids:
            return input_ids
        return torch.cat([input_ids, torch.stack(new_ids, dim=1)], dim=1)

    # -------------------------------------------------------------------------------------------
    # Loading: a released Idefics2 checkpoint, or a fresh model from a SigLIP and a Mistral
    # -------------------------------------------------------------------------------------------

    @classmethod
    def from_idefics2_checkpoint(
        cls, name_or_path: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> Idefics2ForConditionalGeneration:
        """Load an Idefics2 checkpoint (a local directory or a Hub id) saved as safetensors."""
        directory = checkpoint_directory(name_or_path)
        config = Idefics2Config.from_pretrained(directory)
        state = read_safetensors(directory, device)
        return cls._from_state(config, state, dtype)

    @classmethod
    def from_backbones(
        cls,
        vision: str | Path,
        text: str | Path,
        *,
        image_size: int = 980,
        image_token_id: int = 32_001,
        vocab_size: int | None = None,
        perceiver: dict | None = None,
        dtype: torch.dtype | None = None,
    ) -> Idefics2ForConditionalGeneration:
        """Build a new Idefics2 from a SigLIP vision model and a Mistral causal LM (paths or Hub ids).

        The vision position table is interpolated (bicubic) to the `image_size / patch_size` grid,
        the connector is initialised fresh, and `vocab_size` above the LM's vocabulary appends rows
        (initialised to the mean row) for new tokens such as `<image>`. `perceiver` overrides fields
        of the default perceiver (64 latents, 3 layers, 16 heads of 96, 4 KV heads).
        """
        load_dtype = dtype or "auto"
        vision_model = load_backbone(SiglipVisionModel, vision, "vision", load_dtype)
        text_model = load_backbone(AutoModelForCausalLM, text, "text", load_dtype)
        text_vocab = text_model.config.vocab_size
        vocab_size = vocab_size or text_vocab
        if vocab_size < text_vocab or not 0 <= image_token_id < vocab_size:
            raise ValueError(f"need text vocab {text_vocab} <= vocab_size {vocab_size} > image_token_id {image_token_id}")
        config = backbones_config(vision_model, text_model, image_size, image_token_id, vocab_size, perceiver)
        state = {**vision_backbone_state(vision_model, image_size), **text_backbone_state(text_model, vocab_size)}
        connector = Connector(config)
        init_connector(connector, text_config(config).initializer_range)
        weight_dtype = state["lm_head.weight"].dtype
        state.update({f"model.connector.{name}": tensor.to(weight_dtype) for name, tensor in connector.state_dict().items()})
        return cls._from_state(config, state, dtype)

    @classmethod
    def _from_state(
        cls, config: Idefics2Config, state: dict[str, torch.Tensor], dtype: torch.dtype | None
    ) -> Idefics2ForConditionalGeneration:
        """Build on the meta device and adopt the given tensors (no second copy of the weights)."""
        with torch.device("meta"):
            model = cls(config)
        if config.tie_word_embeddings:
            state.setdefault("lm_head.weight", state["model.text_model.embed_tokens.weight"])
        if dtype is not None:
            state = {name: tensor.to(dtype) for name, tensor in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.text_model.embed_tokens.weight
        return model


def checkpoint_directory(name_or_path: str | Path) -> Path:
    """A local directory as is; a Hub id through the local Hugging Face cache (or a download)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    try:
        return Path(snapshot_download(str(name_or_path), allow_patterns=["*.json", "*.safetensors"]))
    except (OSError, ValueError) as error:  # not cached offline, unknown repository, malformed id
        raise FileNotFoundError(
            f"Idefics2 checkpoint {name_or_path!r} is not a local directory and could not be "
            f"fetched from the Hub ({error}); pass a local checkpoint directory"
        ) from error


def read_safetensors(directory: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors`, or of the shards its index lists."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / "model.safetensors").exists():
        shards = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"no model.safetensors (or index) in {directory}")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(directory / shard, device=str(device)))
    return state


def load_backbone(
    model_class: type[SiglipVisionModel] | type[AutoModelForCausalLM], name_or_path: str | Path, role: str, dtype: torch.dtype | str
) -> PreTrainedModel:
    try:
        return model_class.from_pretrained(str(name_or_path), dtype=dtype)
    except OSError as error:
        raise FileNotFoundError(
            f"{role} backbone {name_or_path!r} is not available offline or locally ({error}); pass a local directory as `{role}`"
        ) from error


def backbones_config(
    vision_model: PreTrainedModel,
    text_model: PreTrainedModel,
    image_size: int,
    image_token_id: int,
    vocab_size: int,
    perceiver: dict | None,
) -> Idefics2Config:
    """The Idefics2 config of a SigLIP vision side at `image_size`, a perceiver as wide as the LM (with
    `perceiver`'s overrides), and the LM with `vocab_size` rows; nothing tied."""
    vision_fields = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_channels",
        "patch_size",
        "hidden_act",
        "layer_norm_eps",
        "attention_dropout",
    )
    vision_settings = {name: getattr(vision_model.config, name) for name in vision_fields}
    text_settings = text_model.config.to_dict()
    return Idefics2Config(
        vision_config={**vision_settings, "image_size": image_size},
        perceiver_config={"hidden_size": text_settings["hidden_size"], **(perceiver or {})},
        text_config={**text_settings, "vocab_size": vocab_size, "tie_word_embeddings": False},
        image_token_id=image_token_id,
        tie_word_embeddings=False,
    )


def vision_backbone_state(vision_model: PreTrainedModel, image_size: int) -> dict[str, torch.Tensor]:
    """SigLIP's weights under Idefics2's names, its position table resized to the `image_size` grid."""
    state = {}
    for name, tensor in vision_model.state_dict().items():
        name = name.removeprefix("vision_model.")
        if not name.startswith("head."):  # SigLIP's pooling head has no role in Idefics2
            state[f"model.vision_model.{name}"] = tensor
    table = "model.vision_model.embeddings.position_embedding.weight"
    state[table] = resize_position_table(state[table], image_size // vision_model.config.patch_size)
    return state


def text_backbone_state(text_model: PreTrainedModel, vocab_size: int) -> dict[str, torch.Tensor]:
    """The LM's weights under Idefics2's names, an untied LM head, both vocabulary matrices grown to
    `vocab_size` rows."""
    text_state = text_model.state_dict()
    text_state.setdefault("lm_head.weight", text_state["model.embed_tokens.weight"])
    state = {}
    for name, tensor in text_state.items():
        if name == "lm_head.weight":
            state[name] = append_mean_rows(tensor, vocab_size)
        else:
            name = "model.text_model." + name.removeprefix("model.")
            state[name] = append_mean_rows(tensor, vocab_size) if name.endswith("embed_tokens.weight") else tensor
    return state


def resize_position_table(table: torch.Tensor, grid: int) -> torch.Tensor:
    """Bicubic resize of a square (n*n, width) position table to (grid*grid, width)."""
    side = math.isqrt(table.shape[0])
    if side == grid:
        return table
    square = table.float().reshape(side, side, -1).permute(2, 0, 1)[None]
    resized = F.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
    return resized[0].permute(1, 2, 0).reshape(grid * grid, -1).to(table.dtype)


def append_mean_rows(matrix: torch.Tensor, rows: int) -> torch.Tensor:
    """Grow a (vocab, width) matrix to `rows` rows; new rows start at the mean of the old ones."""
    extra = rows - matrix.shape[0]
    if extra == 0:
        return matrix
    mean = matrix.float().mean(dim=0, keepdim=True).to(matrix.dtype)
    return torch.cat([matrix, mean.expand(extra, -1)], dim=0)


def init_connector(connector: Connector, std: float) -> None:
    """Fresh connector: normal(0, std) projections, unit norms, unit-variance random latents."""
    for module in connector.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
    nn.init.normal_(connector.perceiver_resampler.latents)
