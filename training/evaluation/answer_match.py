"""Answer matching rules other than VQA accuracy, each as its benchmark defines it.

- ANLS (DocVQA): answers and prediction lower-cased with whitespace collapsed; per human answer the
  similarity 1 - Levenshtein / max(length) counts when the normalised distance is below 0.5 (else 0);
  an item scores its best answer.
- Relaxed accuracy (ChartQA, after Methani et al.): when both strings read as numbers (a trailing
  ``%`` divides by 100) and the target is not zero, correct within 5% relative error; otherwise the
  strings must be equal ignoring case.
- Open answers (MMMU open questions, MathVista free-form): a numeric answer is matched by the first
  number in the prediction (thousands commas dropped), both rounded to the answer's precision (its
  decimals, or the given precision); a text answer by equality after lower-casing, collapsing
  whitespace and dropping a final period. Deterministic, where the benchmarks' own tools use heuristic
  or LLM-based answer extraction.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

ANLS_THRESHOLD = 0.5
RELAXED_TOLERANCE = 0.05
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), two rows of the usual table."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _collapse(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str, answers: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """Average Normalised Levenshtein Similarity of one item: its best answer's thresholded similarity."""
    if not answers:
        raise ValueError("ANLS needs at least one answer")
    predicted = _collapse(prediction)
    best = 0.0
    for answer in answers:
        target = _collapse(answer)
        longest = max(len(target), len(predicted))
        distance = levenshtein(target, predicted) / longest if longest else 0.0
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def _as_number(text: str) -> float | None:
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_match(prediction: str, target: str, tolerance: float = RELAXED_TOLERANCE) -> bool:
    """ChartQA's relaxed correctness for one answer."""
    predicted, expected = _as_number(prediction), _as_number(target)
    if predicted is not None and expected:
        return abs(predicted - expected) / abs(expected) <= tolerance
    return prediction.lower() == target.lower()


def relaxed_accuracy(prediction: str, answers: Sequence[str], tolerance: float = RELAXED_TOLERANCE) -> float:
    """1.0 when the prediction relaxed-matches any of the answers (ChartQA has one)."""
    prediction = prediction.strip()
    return float(any(relaxed_match(prediction, answer.strip(), tolerance) for answer in answers))


def first_number(text: str) -> float | None:
    found = NUMBER.search(text)
    return float(found.group().replace(",", "")) if found else None


def _decimals(text: str) -> int:
    _, _, fraction = text.strip().rstrip("%").partition(".")
    return len(fraction) if fraction.isdigit() else 0


def _plain_text(text: str) -> str:
    return _collapse(text).removesuffix(".")


def open_answer_match(prediction: str, answer: str, precision: int | None = None) -> bool:
    """Whether a free-form prediction gives the answer (see the module docstring for the rule)."""
    expected = _as_number(answer.strip().replace(",", ""))
    if expected is None or math.isnan(expected):
        return _plain_text(prediction) == _plain_text(answer)
    predicted = first_number(prediction)
    if predicted is None:
        return False
    digits = _decimals(answer) if precision is None else precision
    return round(predicted, digits) == round(expected, digits)


def open_accuracy(prediction: str, answers: Sequence[str], precision: int | None = None) -> float:
    return float(any(open_answer_match(prediction, answer, precision) for answer in answers))
