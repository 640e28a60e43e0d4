"""Document perplexity under a causal LM (default Falcon-RW-1B), packed for throughput.

Rules (fixed and documented, since the paper leaves them open):
- Text: a document's text nodes joined with a blank line (image slots skipped), i.e. its merged text.
- Context token: the tokenizer's BOS token, else its EOS token, is prepended so that the first real
  token is scored too. No other special tokens are added.
- Long documents: `windows` (default) splits the tokens into consecutive windows of `max_length - 1`
  tokens, each scored with the context token in front; `truncate` scores only the first window.
- Aggregation: token-weighted mean negative log-likelihood over every scored token; ppl = exp(mean NLL).
- Batching: windows are packed into rows of `max_length` tokens (best fit, longest first), each window
  attending only to itself, and rows are grouped into batches under a token budget. A model whose
  attention cannot be isolated per window gets one window per row, length-sorted, padding masked out.
  Packing changes no score: each window sees exactly the inputs it would see alone.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DEFAULT_PPL_MODEL = "tiiuae/falcon-rw-1b"


@dataclass(frozen=True)
class PerplexityConfig:
    model: str = DEFAULT_PPL_MODEL
    max_length: int | None = None  # None: the model's context length, capped at 2048
    long_docs: Literal["windows", "truncate"] = "windows"
    batch_tokens: int = 8192
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    attention: Literal["auto", "sdpa", "flex"] = "auto"  # auto: flex attention on GPU, SDPA on CPU
    compile: bool = False  # torch.compile the model's layers (fixed batch shapes, one compilation)


@dataclass(frozen=True)
class PerplexityScore:
    nll_sum: float
    n_tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_sum / self.n_tokens) if self.n_tokens else float("nan")


def split_windows(token_ids: Sequence[int], start: int | None, window: int, truncate: bool) -> list[list[int]]:
    """The model inputs for one document: windows of `window` tokens, each preceded by `start` if any."""
    prefix = [start] if start is not None else []
    chunks = [list(token_ids[i : i + window]) for i in range(0, len(token_ids), window)] or [[]]
    if truncate:
        chunks = chunks[:1]
    return [prefix + chunk for chunk in chunks if len(prefix) + len(chunk) >= 2]


def plan_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """One sequence per row: indices grouped longest first so that rows x longest row <= batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Sequence indices packed into rows of at most `capacity` tokens: best fit, longest first.

    Each sequence goes to the open row with the least room that still holds it, else to a new row, so
    rows end up nearly full and only the last few carry much padding.
    """
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, row index), sorted
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"sequence {i} has {n} tokens, more than the row capacity {capacity}")
        k = bisect_left(room, (n, -1))
        if k == len(room):
            rows.append([i])
            free, row = capacity - n, len(rows) - 1
        else:
            free, row = room.pop(k)
            rows[row].append(i)
            free -= n
        if free >= 2:  # a window has at least 2 tokens
            insort(room, (free, row))
    return rows
