"""Scoring: each item against its references with the benchmark's metric, then the benchmark's score.

Every item of the evaluated split is counted. An item that could not be evaluated (an image stored
only as a path, a gold answer naming no choice) or that has no prediction scores 0 under its status;
a multiple-choice answer naming no choice is `unparsed` and scores 0; an item without reference
answers (a test split) is `no_reference` and left out of the score. Scores are percentages (CIDEr is
x100, as papers print it). Benchmarks with circular variants (MMBench) count a question as correct only
when all its variants are; the score is then over questions.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from training.evaluation.answer_match import anls, open_accuracy, relaxed_accuracy
from training.evaluation.captions import cider
from training.evaluation.choices import parse_choice
from training.evaluation.registry import Benchmark
from training.evaluation.sources import EvalItem
from training.evaluation.vqa_accuracy import vqa_accuracy

OK, UNPARSED, NO_REFERENCE, MISSING = "ok", "unparsed", "no_reference", "missing_prediction"
OPEN_METRICS = {
    "vqa_accuracy": lambda prediction, item: vqa_accuracy(prediction, item.answers),
    "anls": lambda prediction, item: anls(prediction, item.answers),
    "relaxed_accuracy": lambda prediction, item: relaxed_accuracy(prediction, item.answers),
    "open_accuracy": lambda prediction, item: open_accuracy(prediction, item.answers, item.precision),
    "mixed": lambda prediction, item: open_accuracy(prediction, item.answers, item.precision),
}


@dataclass
class ItemScore:
    score: float | None  # None: not scored (no reference), or a corpus metric filled in at the end
    parsed: str | None = None  # the letter read from a multiple-choice answer
    status: str = OK


def score_item(benchmark: Benchmark, item: EvalItem, prediction: str | None) -> ItemScore:
    if item.problem:
        return ItemScore(0.0, None, f"error: {item.problem}")
    if prediction is None:
        return ItemScore(0.0, None, MISSING)
    if item.task == "multiple_choice":
        letter = parse_choice(prediction, item.choices)
        return ItemScore(float(letter == item.answer_letter), letter, OK if letter else UNPARSED)
    if not item.answers:
        return ItemScore(None, None, NO_REFERENCE)
    if item.task == "caption":
        return ItemScore(None)  # CIDEr is a corpus metric: see Scoreboard.finish
    return ItemScore(OPEN_METRICS[benchmark.metric](prediction, item))


@dataclass
class BenchmarkResult:
    name: str
    paper_name: str
    metric: str
    score: float | None  # percent (CIDEr x100); None when nothing could be scored
    items: int  # counted from the benchmark files
    scored: int
    statuses: dict[str, int]
    breakdown: dict[str, float] = field(default_factory=dict)
    questions: int | None = None  # circular benchmarks: questions (groups of variants)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Scoreboard:
    """Running totals of one benchmark; corpus metrics keep their (text-only) predictions until `finish`."""

    def __init__(self, benchmark: Benchmark) -> None:
        self.benchmark = benchmark
        self.items = 0
        self.statuses: Counter[str] = Counter()
        self.total = 0.0
        self.scored = 0
        self.by_category: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        self.groups: dict[str, bool] = {}
        self.captions: dict[str, str] = {}
        self.references: dict[str, list[str]] = {}
        self.categories: dict[str, str | None] = {}

    def add(self, item: EvalItem, prediction: str | None, result: ItemScore) -> None:
        self.items += 1
        self.statuses[result.status] += 1
        if item.task == "caption" and result.status == OK and prediction is not None:
            self.captions[item.id] = prediction
            self.references[item.id] = item.answers
            self.categories[item.id] = item.category
            return
        if result.score is None:
            return
        self._count(result.score, item.category)
        if item.group is not None:
            self.groups[item.group] = self.groups.get(item.group, True) and result.score == 1.0

    def _count(self, score: float, category: str | None) -> None:
        self.total += score
        self.scored += 1
        if category is not None:
            totals = self.by_category[category]
            totals[0] += score
            totals[1] += 1

    def finish(self, items_in_files: int) -> tuple[BenchmarkResult, dict[str, float]]:
        """The result, and the per-item scores computed only now (CIDEr), by item id."""
        late: dict[str, float] = {}
        if self.captions:
            _, late = cider(self.captions, self.references)
            for item, value in late.items():
                self._count(value, self.categories[item])
        if items_in_files != self.items:
            raise RuntimeError(f"{self.benchmark.name}: the files hold {items_in_files} items but {self.items} were evaluated")
        scale = 100.0
        score = scale * self.total / self.scored if self.scored else None
        questions = None
        if self.groups:
            questions = len(self.groups)
            score = scale * sum(self.groups.values()) / questions
        breakdown = {name: scale * total / count for name, (total, count) in sorted(self.by_category.items())}
        result = BenchmarkResult(
            self.benchmark.name,
            self.benchmark.paper_name,
            self.benchmark.metric,
            score,
            self.items,
            self.scored,
            dict(self.statuses),
            breakdown,
            questions,
        )
        return result, late
