"""The perplexity scorer: a causal LM over packed rows (rules in curation.perplexity).

Per batch: the backbone gives the final hidden states of the packed rows (`curation.packed_lm`); only
the positions whose next token is scored go through the LM head, a chunk of tokens at a time, so that
no [tokens x vocabulary] float32 tensor is ever held. Each chunk's logits come out of the head in the
model dtype (as `model(...).logits` would) and the log-softmax runs in float32; per-document sums
accumulate in float64 on the device, which is read back once per call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from curation.models import load_pretrained, resolve_device
from curation.packed_lm import Backbone, backbone_for, build_rows
from curation.perplexity import PerplexityConfig, PerplexityScore, pack_rows, plan_batches, split_windows

LOGIT_CHUNK_ELEMENTS = 2**26  # logits per head chunk: 256 MiB in float32


def _context_token(tokenizer) -> int | None:
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return None


def _dtype(config: PerplexityConfig, device: str) -> torch.dtype:
    if config.dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, config.dtype)


def token_nll(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """-log p(target) in float32 for each row of `hidden` [T, d], `chunk` tokens through the head at a time."""
    out = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
    for start in range(0, len(targets), chunk):
        end = start + chunk
        logits = head(hidden[start:end])
        log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
        out[start:end] = -log_probs.gather(1, targets[start:end, None])[:, 0]
    return out


class PerplexityScorer:
    """Scores texts with a loaded causal LM; `PerplexityScorer.load(config)` loads it by hub id or path."""

    def __init__(self, model, tokenizer, config: PerplexityConfig = PerplexityConfig()):
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(device=self.device, dtype=_dtype(config, self.device)).eval()
        self.tokenizer = tokenizer
        context = getattr(model.config, "max_position_embeddings", None) or 2048
        self.max_length = config.max_length or min(int(context), 2048)
        self.start_token = _context_token(tokenizer)
        self.pad_token = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        on_gpu = self.device.startswith("cuda")
        attention = config.attention if config.attention != "auto" else ("flex" if on_gpu else "sdpa")
        self.backbone: Backbone = backbone_for(self.model, attention, config.compile)
        self.head = self.model.get_output_embeddings()
        self.chunk_tokens = max(1, LOGIT_CHUNK_ELEMENTS // self.head.out_features)
        # Compiled kernels want one shape: packed batches are then always full-size.
        self.static_shapes = self.backbone.packs and (config.compile or on_gpu)

    @classmethod
    def load(cls, config: PerplexityConfig) -> PerplexityScorer:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = resolve_device(config.device)
        tokenizer = load_pretrained(AutoTokenizer.from_pretrained, config.model, "--ppl-model")
        model = load_pretrained(
            AutoModelForCausalLM.from_pretrained,
            config.model,
            "--ppl-model",
            dtype=_dtype(config, device),
            attn_implementation="sdpa",
        )
        return cls(model, tokenizer, config)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def windows(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """The model inputs of all documents (context token + window) and the document of each."""
        window = self.max_length - (1 if self.start_token is not None else 0)
        truncate = self.config.long_docs == "truncate"
        owners: list[int] = []
        sequences: list[list[int]] = []
        for doc_index, ids in enumerate(self.tokenize(texts)):
            for seq in split_windows(ids, self.start_token, window, truncate):
                owners.append(doc_index)
                sequences.append(seq)
        return sequences, owners

    def score_texts(self, texts: Sequence[str]) -> list[PerplexityScore]:
        sequences, owners = self.windows(texts)
        counts = np.zeros(len(texts), dtype=np.int64)
        np.add.at(counts, np.asarray(owners, dtype=np.int64), [len(s) - 1 for s in sequences])
        nll = torch.zeros(len(texts), dtype=torch.float64, device=self.device)
        with torch.inference_mode():
            for rows, width, n_rows in self._batches([len(s) for s in sequences]):
                batch = build_rows(rows, sequences, owners, width, n_rows, self.pad_token, self.device)
                hidden = self.backbone(batch)
                scored = hidden.reshape(-1, hidden.shape[-1])[batch.scored]
                nll.index_add_(0, batch.owners, token_nll(scored, self.head, batch.targets, self.chunk_tokens).double())
        return [PerplexityScore(float(a), int(b)) for a, b in zip(nll.cpu().numpy(), counts, strict=True)]

    def _batches(self, lengths: list[int]) -> Iterator[tuple[list[list[int]], int, int]]:
        """(rows as lists of sequence indices, row width, row count) per forward batch."""
        if not self.backbone.packs:
            for batch in plan_batches(lengths, self.config.batch_tokens):
                yield [[i] for i in batch], max(lengths[i] for i in batch), len(batch)
            return
        per_batch = max(1, self.config.batch_tokens // self.max_length)
        rows = pack_rows(lengths, self.max_length)
        for start in range(0, len(rows), per_batch):
            packed = rows[start : start + per_batch]
            if self.static_shapes:
                yield packed, self.max_length, per_batch
            else:
                yield packed, max(sum(lengths[i] for i in row) for row in packed), len(packed)
