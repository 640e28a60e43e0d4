"""The perplexity scorer: a causal LM over length-sorted, token-budgeted batches (rules in curation.perplexity)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from curation.models import load_pretrained, resolve_device
from curation.perplexity import PerplexityConfig, PerplexityScore, plan_batches, split_windows


def _context_token(tokenizer) -> int | None:
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return None


def _dtype(config: PerplexityConfig, device: str) -> torch.dtype:
    if config.dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, config.dtype)


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

    def score_texts(self, texts: Sequence[str]) -> list[PerplexityScore]:
        window = self.max_length - (1 if self.start_token is not None else 0)
        truncate = self.config.long_docs == "truncate"
        owners: list[int] = []
        sequences: list[list[int]] = []
        for doc_index, ids in enumerate(self.tokenize(texts)):
            for seq in split_windows(ids, self.start_token, window, truncate):
                owners.append(doc_index)
                sequences.append(seq)
        nll = np.zeros(len(texts))
        counts = np.zeros(len(texts), dtype=np.int64)
        for batch in plan_batches([len(s) for s in sequences], self.config.batch_tokens):
            for row, (loss, n) in zip(batch, self._score_batch([sequences[i] for i in batch])):
                nll[owners[row]] += loss
                counts[owners[row]] += n
        return [PerplexityScore(float(a), int(b)) for a, b in zip(nll, counts)]

    @torch.inference_mode()
    def _score_batch(self, sequences: list[list[int]]) -> list[tuple[float, int]]:
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        input_ids = input_ids.to(self.device)
        # Without padding no mask is needed, which keeps SDPA on its fused kernels.
        padded = any(len(seq) != width for seq in sequences)
        logits = self.model(input_ids=input_ids, attention_mask=mask.to(self.device) if padded else None).logits
        results = []
        for row, seq in enumerate(sequences):  # one row at a time keeps the fp32 logits copy small
            n = len(seq) - 1
            losses = F.cross_entropy(logits[row, :n].float(), input_ids[row, 1 : n + 1], reduction="sum")
            results.append((float(losses), n))
        return results
