"""Select over scores: drop the top fraction exactly (a global rank over all scores) and/or above a threshold.

Scores live in sidecar tables keyed by sample id; this module sees them as two parallel arrays. Ties are
broken by id so the same scores always give the same selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.errors import UserError


@dataclass(frozen=True)
class Selection:
    drop_ids: frozenset[str]
    reasons: dict[str, str]  # id -> ledger reason, for the dropped ids
    cutoff: float | None  # the lowest dropped score by the fraction rule (None when that rule dropped nothing)
    population: int
    dropped_fraction: float


def select_high_scores(
    ids: list[str],
    scores: np.ndarray,
    *,
    top_fraction: float | None = None,
    max_score: float | None = None,
    fraction_reason: str,
    threshold_reason: str,
) -> Selection:
    """Drop the `top_fraction` highest scores (exactly round(fraction * N) ids) and any score above `max_score`.

    NaN scores are treated as the highest (an unscorable sample is never silently kept by a fraction rule).
    """
    n = len(ids)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"{n} ids but scores of shape {scores.shape}")
    reasons: dict[str, str] = {}
    cutoff = None
    if top_fraction:
        if not 0.0 <= top_fraction < 1.0:
            raise UserError(f"top fraction must be in [0, 1), got {top_fraction}")
        k = int(round(top_fraction * n))
        if k:
            ranked = np.where(np.isnan(scores), np.inf, scores)
            id_rank = np.argsort(np.argsort(np.asarray(ids, dtype=object)))  # id order as the tie-break
            order = np.lexsort((id_rank, -ranked))
            top = order[:k]
            for i in top:
                reasons[ids[i]] = fraction_reason
            cutoff = float(ranked[top[-1]])
    if max_score is not None:
        for i in np.flatnonzero(~(scores <= max_score)):
            reasons.setdefault(ids[i], threshold_reason)
    return Selection(
        drop_ids=frozenset(reasons),
        reasons=reasons,
        cutoff=cutoff,
        population=n,
        dropped_fraction=len(reasons) / n if n else 0.0,
    )
