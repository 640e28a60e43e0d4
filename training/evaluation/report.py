"""The evaluation report: a table for people, `results.json` for machines, and a bar chart PNG."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.evaluation.scoring import NO_REFERENCE, OK, BenchmarkResult

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.parquet"
CHART_FILE = "scores.png"
METRIC_LABELS = {
    "vqa_accuracy": "VQA acc.",
    "anls": "ANLS",
    "relaxed_accuracy": "relaxed acc.",
    "choice_accuracy": "accuracy",
    "open_accuracy": "accuracy",
    "cider": "CIDEr",
    "mixed": "accuracy",
}


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _problems(result: BenchmarkResult) -> str:
    counts = {status: n for status, n in sorted(result.statuses.items()) if status not in (OK,)}
    return ", ".join(f"{status} {n}" for status, n in counts.items()) or "none"


def table(results: Sequence[BenchmarkResult]) -> str:
    """One line per benchmark: score, metric, items, and what was not scored normally."""
    lines = [f"{'benchmark':<12} {'score':>7}  {'metric':<13} {'items':>7}  not scored normally", "-" * 72]
    for result in results:
        items = f"{result.items}" + (f" ({result.questions} q.)" if result.questions else "")
        lines.append(
            f"{result.paper_name:<12} {_score(result.score):>7}  {METRIC_LABELS[result.metric]:<13} {items:>7}  {_problems(result)}"
        )
        for name, value in result.breakdown.items():
            lines.append(f"  {name[:28]:<28} {value:6.1f}")
    return "\n".join(lines)


def write_results(output: Path, results: Sequence[BenchmarkResult], run: dict[str, Any]) -> Path:
    path = output / RESULTS_FILE
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"run": run, "benchmarks": [r.to_json() for r in results]}, indent=1))
    partial.replace(path)
    return path


def bar_chart(results: Sequence[BenchmarkResult], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(r.paper_name, r.score) for r in results if r.score is not None]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.1 * len(shown) + 2), 4))
    bars = axes.bar([name for name, _ in shown], [score for _, score in shown], color="#4c72b0")
    for bar, (_, score) in zip(bars, shown, strict=True):
        axes.annotate(f"{score:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    axes.set_ylabel("score (%, CIDEr x100)")
    axes.set_title(title, fontsize=9)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def unscored_note(results: Sequence[BenchmarkResult]) -> str | None:
    """A line naming benchmarks without reference answers (test splits), whose predictions were still written."""
    names = [r.paper_name for r in results if r.statuses.get(NO_REFERENCE)]
    return f"no reference answers (predictions written, not scored): {', '.join(names)}" if names else None
