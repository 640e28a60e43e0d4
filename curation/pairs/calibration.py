"""Calibrating the NSFW threshold on a labelled sample: the precision/recall every threshold implies.

Semantics match `--nsfw-threshold T` (`select_high_scores(max_score=T)`): a sample is removed when its
score is strictly above T. Each point of the curve removes the k highest scores, ties included, and its
threshold is the largest float below the lowest removed score, so passing it back as `--nsfw-threshold`
removes exactly that set from the labelled sample. Everything is computed exactly from the sorted scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from curation.errors import UserError


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """One point per distinct score, from the strictest threshold (fewest removed) to the loosest."""

    thresholds: np.ndarray  # remove scores > threshold
    precision: np.ndarray  # NSFW among removed
    recall: np.ndarray  # removed among NSFW
    removal_rate: np.ndarray  # removed among all
    true_positives: np.ndarray  # NSFW removed (counts)
    removed: np.ndarray  # counts
    positives: int
    population: int


@dataclass(frozen=True)
class CalibrationResult:
    threshold: float
    precision: float
    recall: float
    removal_rate: float
    removed: int
    positives: int
    population: int


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape or scores.size == 0:
        raise UserError(f"need equal-length, non-empty 1-d scores and labels: {scores.shape} vs {labels.shape}")
    if not np.isfinite(scores).all():
        raise UserError("scores must be finite")
    if not np.isin(labels, (0, 1)).all():
        raise UserError("labels must be 0 (safe) or 1 (NSFW)")
    return scores, labels.astype(bool)


def precision_recall_curve(scores: np.ndarray, labels: np.ndarray) -> PrecisionRecallCurve:
    """Precision, recall and removal rate at every distinct threshold; `labels` are 1 for NSFW."""
    scores, labels = _check(scores, labels)
    positives = int(labels.sum())
    if positives == 0:
        raise UserError("the labelled sample has no NSFW example; recall is undefined")
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    group_ends = np.r_[np.flatnonzero(np.diff(ranked) != 0), ranked.size - 1]  # last index of each tie group
    true_positives = np.cumsum(hits)[group_ends]
    removed = group_ends + 1
    return PrecisionRecallCurve(
        thresholds=np.nextafter(ranked[group_ends], -np.inf),
        precision=true_positives / removed,
        recall=true_positives / positives,
        removal_rate=removed / scores.size,
        true_positives=true_positives,
        removed=removed,
        positives=positives,
        population=int(scores.size),
    )


def calibrate(scores: np.ndarray, labels: np.ndarray, target_recall: float) -> CalibrationResult:
    """The strictest threshold (fewest removals) whose recall on the labelled sample is >= `target_recall`."""
    if not 0.0 < target_recall <= 1.0:
        raise UserError(f"target recall must be in (0, 1], got {target_recall}")
    curve = precision_recall_curve(scores, labels)
    needed = math.ceil(target_recall * curve.positives - 1e-9)  # in counts, free of float rounding
    i = int(np.argmax(curve.true_positives >= needed))
    return CalibrationResult(
        threshold=float(curve.thresholds[i]),
        precision=float(curve.precision[i]),
        recall=float(curve.recall[i]),
        removal_rate=float(curve.removal_rate[i]),
        removed=int(curve.removed[i]),
        positives=curve.positives,
        population=curve.population,
    )
