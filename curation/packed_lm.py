"""A causal LM's final hidden states over packed rows, with attention isolated per sequence.

A batch is a few rows of equal width; each row holds whole sequences back to back and its padding tail
is one more (never scored) sequence. Every token attends only to earlier tokens of its own sequence and
sees its position within that sequence, so a packed sequence is computed exactly as it would be alone.

How the isolation is obtained depends on the model:
- Falcon-RW (ALiBi): transformers cannot pack it (its flash attention refuses ALiBi, and its SDPA path
  derives the ALiBi bias from the position in the row, not in the sequence), so `FalconAlibiBackbone`
  runs the model's own layers with the ALiBi bias computed per sequence exactly as transformers computes
  it for a sequence alone. Attention is SDPA called per sequence (exact; the CPU default) or flex
  attention with the bias as a score modifier and a block-sparse mask that skips the blocks between
  sequences (the GPU default).
- Models whose transformers code isolates sequences from restarting `position_ids` (the families in
  `POSITION_PACKED_TYPES`, checked by the tests): `PositionIdsBackbone`.
- Anything else: `PaddedBackbone`, one sequence per row, right-padded, padding masked out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers import FalconForCausalLM, PreTrainedModel

# transformers model types whose decoder builds its mask with `create_causal_mask` from position ids.
POSITION_PACKED_TYPES = frozenset({"falcon", "llama", "mistral", "qwen2", "qwen3"})


@dataclass(frozen=True)
class PackedRows:
    input_ids: torch.Tensor  # [rows, width]
    positions: torch.Tensor  # [rows, width] position within the token's own sequence
    segments: torch.Tensor  # [rows, width] sequence number within the row; the padding tail is the last
    lengths: tuple[tuple[int, ...], ...]  # per row, the lengths of its sequences in order (padding excluded)
    scored: torch.Tensor  # [T] flat indices (into rows * width) of the tokens whose successor is scored
    targets: torch.Tensor  # [T] the successors
    owners: torch.Tensor  # [T] the document each scored token belongs to


def build_rows(
    rows: Sequence[Sequence[int]],
    sequences: Sequence[Sequence[int]],
    owners: Sequence[int],
    width: int,
    n_rows: int,
    pad_id: int,
    device: str,
) -> PackedRows:
    """Tensors for `rows` (lists of sequence indices) padded to [n_rows, width]; extra rows are padding."""
    ids = np.full((n_rows, width), pad_id, dtype=np.int64)
    positions = np.tile(np.arange(width, dtype=np.int64), (n_rows, 1))
    segments = np.zeros((n_rows, width), dtype=np.int64)
    scored, scored_owners = [], []
    for r, row in enumerate(rows):
        offset = 0
        for s, i in enumerate(row):
            n = len(sequences[i])
            ids[r, offset : offset + n] = sequences[i]
            positions[r, offset : offset + n] = np.arange(n)
            segments[r, offset : offset + n] = s
            scored.append(np.arange(r * width + offset, r * width + offset + n - 1))
            scored_owners.append(np.full(n - 1, owners[i], dtype=np.int64))
            offset += n
        positions[r, offset:] = np.arange(width - offset)
        segments[r, offset:] = len(row)
    flat = np.concatenate(scored)
    host = {
        "input_ids": ids,
        "positions": positions,
        "segments": segments,
        "scored": flat,
        "targets": ids.reshape(-1)[flat + 1],
        "owners": np.concatenate(scored_owners),
    }
    lengths = tuple(tuple(len(sequences[i]) for i in row) for row in rows)
    return PackedRows(lengths=lengths, **{name: _to_device(array, device) for name, array in host.items()})


def _to_device(array: np.ndarray, device: str) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    if device.startswith("cuda"):  # pinned, so the copy overlaps the previous batch's kernels
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class Backbone(Protocol):
    packs: bool  # False: one sequence per row

    def __call__(self, rows: PackedRows) -> torch.Tensor:
        """Final hidden states [rows, width, hidden] (after the last norm, before the LM head)."""
        ...


def backbone_for(model: PreTrainedModel, attention: Literal["sdpa", "flex"], compile: bool) -> Backbone:
    from transformers import FalconForCausalLM

    config = model.config
    if config.model_type == "falcon" and config.alibi:
        if config.parallel_attn or config.new_decoder_architecture or config.multi_query:
            return PaddedBackbone(model)
        if not isinstance(model, FalconForCausalLM):
            raise TypeError(f"a Falcon ALiBi model must be a FalconForCausalLM, got a {type(model).__name__}")
        return FalconAlibiBackbone(model, attention, compile)
    if config.model_type in POSITION_PACKED_TYPES:
        return PositionIdsBackbone(model, compile)
    return PaddedBackbone(model)


class PositionIdsBackbone:
    """transformers' packed-sequence path: no attention mask, position ids restarting per sequence.

    The cache must stay off: transformers only looks for packed position ids when there is none.
    """

    packs = True

    def __init__(self, model: PreTrainedModel, compile: bool) -> None:
        self.base = model.base_model
        self.forward = torch.compile(self.base) if compile else self.base

    def __call__(self, rows: PackedRows) -> torch.Tensor:
        return self.forward(input_ids=rows.input_ids, position_ids=rows.positions, use_cache=False).last_hidden_state


class PaddedBackbone:
    """One right-padded sequence per row (segment 0), the padding masked out of attention."""

    packs = False

    def __init__(self, model: PreTrainedModel) -> None:
        self.base = model.base_model

    def __call__(self, rows: PackedRows) -> torch.Tensor:
        mask = (rows.segments == 0).long()
        return self.base(input_ids=rows.input_ids, attention_mask=mask, use_cache=False).last_hidden_state


class FalconAlibiBackbone:
    """Falcon-RW's layers (sequential attention and MLP, ALiBi, one K/V per head) over packed rows.

    `sdpa`: one SDPA call per sequence with the bias transformers builds for it alone (work grows with
    the sum of squared sequence lengths, as without packing). `flex`: one flex-attention call per layer
    with the ALiBi bias as a score modifier and a block-sparse mask; `compile` implies it (the layers and
    the attention become one compiled graph with one shape).
    """

    packs = True

    def __init__(self, model: FalconForCausalLM, attention: Literal["sdpa", "flex"], compile: bool) -> None:
        from transformers.models.falcon.modeling_falcon import FalconDecoderLayer, build_alibi_tensor

        self.transformer = model.transformer
        self.blocks = [block for block in self.transformer.h if isinstance(block, FalconDecoderLayer)]
        if len(self.blocks) != len(self.transformer.h):
            raise TypeError("the Falcon model's transformer.h holds modules other than FalconDecoderLayers")
        heads = model.config.num_attention_heads
        self.attention = "flex" if compile else attention
        self.bias_scale = math.sqrt(model.config.hidden_size // heads)
        # transformers' per-head slopes, rounded to bf16 as it rounds them (slope x position 1).
        ones = torch.ones(1, 2, dtype=torch.long, device=model.device)
        self.slopes = build_alibi_tensor(ones, heads, torch.bfloat16).view(heads, 2)[:, 1]
        self.flex_layers = torch.compile(self._flex_layers) if compile else self._flex_layers

    def __call__(self, rows: PackedRows) -> torch.Tensor:
        hidden = self.transformer.word_embeddings(rows.input_ids)
        if self.attention == "flex":
            return self.flex_layers(hidden, self._alibi(rows.positions, hidden.dtype), _block_mask(rows.segments))
        biases = self._sequence_biases(rows.lengths, hidden.dtype, hidden.device)
        return self._layers(hidden, lambda q, k, v: _attend_per_sequence(q, k, v, biases))

    def _alibi(self, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The ALiBi bias of each key, [..., heads, keys], as transformers computes it: bf16(slope) x position
        in bf16, then the model dtype, then / sqrt(head_dim)."""
        return (self.slopes[:, None] * positions[..., None, :]).to(dtype) / self.bias_scale

    def _sequence_biases(self, lengths, dtype: torch.dtype, device) -> list[tuple[int, int, int, torch.Tensor]]:
        """(row, start, end, [1, heads, n, n] bias) for every sequence: ALiBi where causal, the dtype's min elsewhere.

        The min is added rather than filled in: ALiBi + min rounds to min, so the values are transformers'.
        """
        longest = max((n for row_lengths in lengths for n in row_lengths), default=0)
        blocked = torch.full((longest, longest), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)
        key_bias = self._alibi(torch.arange(longest, device=device), dtype)[:, None, :]  # [heads, 1, keys]
        by_length: dict[int, torch.Tensor] = {}
        out = []
        for row, row_lengths in enumerate(lengths):
            start = 0
            for n in row_lengths:
                if n not in by_length:
                    by_length[n] = (key_bias[:, :, :n] + blocked[:n, :n])[None]
                out.append((row, start, start + n, by_length[n]))
                start += n
        return out

    def _flex_layers(self, hidden: torch.Tensor, key_bias: torch.Tensor, block_mask) -> torch.Tensor:
        return self._layers(hidden, lambda q, k, v: _flex(q, k, v, key_bias, block_mask))

    def _layers(self, hidden: torch.Tensor, attend) -> torch.Tensor:
        for block in self.blocks:
            attention = block.self_attention
            query, key, value = attention._split_heads(attention.query_key_value(block.input_layernorm(hidden)))
            rows, width, heads, head_dim = query.shape
            out = attend(*(x.transpose(1, 2) for x in (query, key, value)))  # [rows, width, heads, head_dim]
            hidden = hidden + attention.dense(out.reshape(rows, width, heads * head_dim))
            hidden = hidden + block.mlp(block.post_attention_layernorm(hidden))
        return self.transformer.ln_f(hidden)


def _attend_per_sequence(query, key, value, biases) -> torch.Tensor:
    """SDPA on each sequence's slice alone, into [rows, width, heads, head_dim]; padding tails stay zero."""
    rows, heads, width, head_dim = query.shape
    out = query.new_zeros(rows, width, heads, head_dim)
    for row, start, end, bias in biases:
        q, k, v = (x[row : row + 1, :, start:end] for x in (query, key, value))
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out[row, start:end] = attended[0].transpose(0, 1)
    return out


def _block_mask(segments: torch.Tensor):
    from torch.nn.attention.flex_attention import create_block_mask

    def same_sequence_causal(b, h, q, k):
        return (segments[b, q] == segments[b, k]) & (k <= q)

    rows, width = segments.shape
    return create_block_mask(same_sequence_causal, rows, None, width, width, device=segments.device)


def _flex(query, key, value, key_bias, block_mask) -> torch.Tensor:
    """Flex attention into [rows, width, heads, head_dim]."""
    from torch.nn.attention.flex_attention import flex_attention

    def alibi(score, b, h, q, k):
        return score + key_bias[b, h, k]

    # On GPU flex attention must be compiled to run as a fused kernel (inside a compiled region it is
    # already); on CPU it runs eagerly (tests).
    eager = not query.is_cuda or torch.compiler.is_compiling()
    attend = flex_attention if eager else _compiled_flex()
    return attend(query, key, value, score_mod=alibi, block_mask=block_mask).transpose(1, 2)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)
