"""Per-item predictions: written as parquet by a run, and read back (ours or another system's) to be
scored without a model, on identical metrics.

A predictions file maps item ids to answers. Accepted: our `predictions.parquet`; any parquet or CSV
with an id column (`id`, `question_id`, `questionId`, `pid` or `index`) and an answer column
(`prediction`, `answer`, `text` or `response`); JSON as an object {id: answer} or a list of such
records; JSON Lines of such records. Ids are compared as strings. Benchmark items without a
prediction are scored 0 as `missing_prediction`; predictions for ids the benchmark does not hold are
counted and reported, never scored.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import UserError
from training.evaluation.registry import Benchmark
from training.evaluation.scoring import BenchmarkResult, Scoreboard, score_item
from training.evaluation.sources import EvalItem, count_rows, iter_items

ID_KEYS = ("id", "question_id", "questionId", "pid", "index")
ANSWER_KEYS = ("prediction", "answer", "text", "response")
SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("id", pa.string()),
        ("question", pa.string()),
        ("prediction", pa.string()),
        ("parsed", pa.string()),
        ("references", pa.list_(pa.string())),
        ("correct_choice", pa.string()),
        ("score", pa.float64()),
        ("status", pa.string()),
        ("category", pa.string()),
    ]
)


def prediction_row(benchmark: str, item: EvalItem, prediction: str | None, result) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "id": item.id,
        "question": item.question,
        "prediction": prediction,
        "parsed": result.parsed,
        "references": item.answers,
        "correct_choice": item.answer_letter,
        "score": result.score,
        "status": result.status,
        "category": item.category,
    }


class PredictionsWriter:
    """Rows streamed to a parquet file (written under a temporary name, renamed on close)."""

    def __init__(self, path: Path, rows_per_group: int = 1024) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(self.partial, SCHEMA)
        self.rows: list[dict[str, Any]] = []
        self.rows_per_group = rows_per_group

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=SCHEMA))
            self.rows = []

    def close(self) -> Path:
        self._flush()
        self.writer.close()
        self.partial.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (the run failed: no predictions file is published)."""
        self.writer.close()
        self.partial.unlink(missing_ok=True)


def _pick(record: dict[str, Any], keys: tuple[str, ...], what: str, source: Path) -> Any:
    for key in keys:
        if key in record:
            return record[key]
    raise UserError(f"{source}: a prediction record has no {what} field (one of {', '.join(keys)}): {record!r}"[:300])


def _records(path: Path) -> list[dict[str, Any]] | dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    if suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if suffix == ".json":
        return json.loads(path.read_text())
    raise UserError(f"{path}: predictions must be .parquet, .csv, .json or .jsonl")


def read_predictions(path: Path, benchmark: str | None = None) -> dict[str, str]:
    """id -> answer. Our own parquet holds several benchmarks: `benchmark` picks one."""
    records = _records(path)
    if isinstance(records, dict):
        return {str(key): "" if value is None else str(value) for key, value in records.items()}
    if benchmark is not None and records and "benchmark" in records[0]:
        records = [record for record in records if record["benchmark"] == benchmark]
    answers: dict[str, str] = {}
    for record in records:
        item = str(_pick(record, ID_KEYS, "id", path))
        answer = _pick(record, ANSWER_KEYS, "answer", path)
        if item in answers:
            raise UserError(f"{path}: two predictions for id {item!r}")
        answers[item] = "" if answer is None else str(answer)
    return answers


class Recorder:
    """Scores items into a benchmark's Scoreboard and writes their rows; rows of corpus-scored items
    (captions) wait until `finish` has their scores."""

    def __init__(self, benchmark: Benchmark, writer: PredictionsWriter | None) -> None:
        self.benchmark = benchmark
        self.board = Scoreboard(benchmark)
        self.writer = writer
        self.held: list[dict[str, Any]] = []

    def add(self, item: EvalItem, answer: str | None) -> None:
        result = score_item(self.benchmark, item, answer)
        self.board.add(item, answer, result)
        if self.writer is None:
            return
        row = prediction_row(self.benchmark.name, item, answer, result)
        if result.score is None and item.task == "caption":
            self.held.append(row)
        else:
            self.writer.write(row)

    def finish(self, expected_items: int) -> BenchmarkResult:
        result, late = self.board.finish(expected_items)
        if self.writer is not None:  # rows are held only for a writer
            for row in self.held:
                row["score"] = late.get(row["id"])
                self.writer.write(row)
        return result


def score_predictions(
    benchmark: Benchmark, path: Path, predictions: dict[str, str], split: str | None = None, writer: PredictionsWriter | None = None
) -> tuple[BenchmarkResult, int]:
    """The benchmark's result for these predictions (images are not read), and how many ids it does not hold."""
    split = split or benchmark.split
    recorder = Recorder(benchmark, writer)
    seen: set[str] = set()
    for item in iter_items(benchmark, path, split, with_images=False):
        seen.add(item.id)
        recorder.add(item, predictions.get(item.id))
    return recorder.finish(count_rows(path, split)), len(set(predictions) - seen)
