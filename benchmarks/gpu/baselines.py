"""Baselines the perplexity benchmarks measure against, kept here as they were.

- `PaddedPerplexityScorer`: the scorer before packing (commit 7b848cd): one window per row, rows
  right-padded to the longest in a length-sorted batch, the model's full logits, then a float32
  cross-entropy one row at a time.
- `plain_loop_nll`: what a transformers user writes: one window per forward pass, `labels=` loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from curation.perplexity import PerplexityScore, plan_batches
from curation.perplexity_model import PerplexityScorer


class PaddedPerplexityScorer(PerplexityScorer):
    def score_texts(self, texts: Sequence[str]) -> list[PerplexityScore]:
        sequences, owners = self.windows(texts)
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
        padded = any(len(seq) != width for seq in sequences)
        logits = self.model(input_ids=input_ids, attention_mask=mask.to(self.device) if padded else None).logits
        results = []
        for row, seq in enumerate(sequences):
            n = len(seq) - 1
            losses = F.cross_entropy(logits[row, :n].float(), input_ids[row, 1 : n + 1], reduction="sum")
            results.append((float(losses), n))
        return results


@torch.inference_mode()
def plain_loop_nll(model, sequences: Sequence[Sequence[int]], owners: Sequence[int], n_docs: int) -> list[PerplexityScore]:
    """Scores from one forward pass per window (`sequences`/`owners` as `PerplexityScorer.windows` gives)."""
    nll = np.zeros(n_docs)
    counts = np.zeros(n_docs, dtype=np.int64)
    device = next(model.parameters()).device
    for seq, owner in zip(sequences, owners):
        ids = torch.tensor([seq], device=device)
        nll[owner] += float(model(ids, labels=ids, use_cache=False).loss) * (len(seq) - 1)
        counts[owner] += len(seq) - 1
    return [PerplexityScore(float(a), int(b)) for a, b in zip(nll, counts)]
