"""Benchmark items from local copies of their published files, streamed in row batches.

A benchmark is read from a parquet file, a folder of parquet files (a Hub snapshot: with several
splits, the files of the requested split are those named `<split>-*.parquet` or under a `<split>/`
folder), or a folder written by `datasets`' `save_to_disk` (a `DatasetDict`'s split, or a `Dataset`).
Only the columns the registry names are read, a batch of rows at a time, so memory is bounded by a
batch whatever the benchmark's size. Items come in file order; without an id column, an item's id
is its row number in that order.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import UserError
from training.evaluation.choices import choice_letters
from training.evaluation.registry import Benchmark

ROWS_PER_BATCH = 64
HF_DATASET_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")


class SourceError(UserError):
    pass


@dataclass
class EvalItem:
    """One benchmark question, its images (encoded bytes) and what a correct answer is."""

    id: str
    task: str  # open | multiple_choice | caption
    question: str = ""
    images: list[bytes] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # reference answers / captions
    choices: list[str] = field(default_factory=list)
    answer_letter: str | None = None  # the correct choice
    precision: int | None = None
    group: str | None = None
    category: str | None = None
    problem: str | None = None  # why the item cannot be evaluated (it is still counted)


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------


def _is_hf_folder(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in HF_DATASET_MARKERS)


def parquet_files(path: Path, split: str) -> list[Path]:
    """The parquet files of `split` under `path` (all of them when none is named after the split)."""
    if path.is_file():
        return [path]
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise SourceError(f"{path}: no parquet files and no save_to_disk folder")
    of_split = [file for file in files if file.name.startswith((f"{split}-", f"{split}.")) or split in file.relative_to(path).parts[:-1]]
    return of_split or files


def _hf_table(path: Path, split: str) -> pa.Table:
    import datasets  # heavy; only for this layout

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise SourceError(f"{path}: no split {split!r}; splits: {sorted(loaded)}")
        loaded = loaded[split]
    return loaded.data.table  # memory-mapped Arrow


def _check_columns(available: Sequence[str], wanted: Sequence[str], where: Path) -> None:
    missing = [name for name in wanted if name not in available]
    if missing:
        raise SourceError(
            f"{where}: no column(s) {missing}; the file has {list(available)} (fix the benchmark's `columns` in the registry)"
        )


def count_rows(path: Path, split: str) -> int:
    """Rows of the benchmark split, from the files' metadata (nothing is decoded)."""
    if _is_hf_folder(path):
        return _hf_table(path, split).num_rows
    return sum(pq.ParquetFile(file).metadata.num_rows for file in parquet_files(path, split))


def row_batches(path: Path, split: str, columns: Sequence[str]) -> Iterator[list[dict[str, Any]]]:
    """The split's rows, `ROWS_PER_BATCH` at a time, as dicts of the given columns."""
    if _is_hf_folder(path):
        table = _hf_table(path, split)
        _check_columns(table.column_names, columns, path)
        for batch in table.select(list(columns)).to_batches(max_chunksize=ROWS_PER_BATCH):
            yield batch.to_pylist()
        return
    for file in parquet_files(path, split):
        parquet = pq.ParquetFile(file)
        _check_columns(parquet.schema_arrow.names, columns, file)
        for batch in parquet.iter_batches(batch_size=ROWS_PER_BATCH, columns=list(columns)):
            yield batch.to_pylist()


# ---------------------------------------------------------------------------------------------------
# Rows -> items
# ---------------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _image_bytes(value: Any) -> tuple[list[bytes], str | None]:
    """Encoded images of an image cell (a struct, a list of them, raw bytes or empty) and any problem."""
    if value is None:
        return [], None
    if isinstance(value, list):
        images, problems = [], []
        for element in value:
            found, problem = _image_bytes(element)
            images += found
            problems += [problem] if problem else []
        return images, problems[0] if problems else None
    if isinstance(value, (bytes, bytearray)):
        return [bytes(value)], None
    if isinstance(value, dict):
        if value.get("bytes"):
            return [value["bytes"]], None
        if value.get("path"):
            return [], f"image stored as a path only ({value['path']!r})"
        return [], None
    return [], f"unreadable image cell of type {type(value).__name__}"


def _answers(value: Any, field_name: str | None) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if field_name:
        values = [element.get(field_name) if isinstance(element, dict) else element for element in values]
    return [text for text in map(_text, values) if text]


def _column(benchmark: Benchmark, name: str | None, role: str) -> str:
    """A column the item's task reads (the registry check requires it for the benchmark's tasks)."""
    if name is None:
        raise SourceError(f"{benchmark.name}: its items need columns.{role}")
    return name


def _choices(benchmark: Benchmark, row: dict[str, Any]) -> list[str]:
    spec = benchmark.columns
    if isinstance(spec.choices, tuple):
        values = [row[name] for name in spec.choices]
        return [text for text in map(_text, values) if text and text.lower() != "nan"]
    value = row[_column(benchmark, spec.choices, "choices")]
    if spec.choices_format == "literal" and isinstance(value, str):
        try:
            value = ast.literal_eval(value)  # a literal only: no code runs
        except (ValueError, SyntaxError):
            raise SourceError(f"{benchmark.name}: choices {value!r} are not a Python list literal") from None
    return [_text(choice) for choice in value or []]


def _gold_letter(benchmark: Benchmark, value: Any, choices: list[str]) -> str | None:
    """The correct choice's letter, or None when the key does not name one of the choices."""
    letters = choice_letters(len(choices))
    text = _text(value)
    fmt = benchmark.columns.answer_format
    if fmt == "letter":
        return text.upper() if len(text) == 1 and text.upper() in letters else None
    if fmt == "index":
        try:
            index = int(float(text))
        except ValueError:
            return None
        return letters[index] if 0 <= index < len(letters) else None
    matches = [letter for letter, choice in zip(letters, choices, strict=True) if choice == text]
    return matches[0] if len(matches) == 1 else None


def row_to_item(benchmark: Benchmark, row: dict[str, Any], number: int, with_images: bool = True) -> EvalItem:
    spec = benchmark.columns
    item_id = _text(row[spec.id]) if spec.id else str(number)
    task = benchmark.item_task(row[spec.type] if spec.type else None)
    question = _text(row[spec.question]) if spec.question else ""
    context = _text(row[spec.context]) if spec.context else ""
    item = EvalItem(id=item_id, task=task, question=f"{context}\n{question}" if context else question)
    if spec.breakdown:
        item.category = _text(row[spec.breakdown])
    if spec.group:
        group = _text(row[spec.group])
        item.group = str(int(float(group)) % spec.group_modulo) if spec.group_modulo else group
    if spec.precision and _text(row[spec.precision]):
        item.precision = int(float(row[spec.precision]))
    if with_images:
        for name in spec.images:
            images, problem = _image_bytes(row[name])
            item.images += images
            item.problem = item.problem or problem
    if task == "multiple_choice":
        item.choices = _choices(benchmark, row)
        if not item.choices:
            item.problem = item.problem or "no choices"
            return item
        answer = row[_column(benchmark, spec.answer_key, "answer_key")]
        item.answer_letter = _gold_letter(benchmark, answer, item.choices)
        if item.answer_letter is None:
            item.problem = item.problem or f"answer {answer!r} names none of the choices"
    else:
        item.answers = _answers(row[_column(benchmark, spec.answers, "answers")], spec.answer_field)
    return item


def iter_items(
    benchmark: Benchmark, path: Path, split: str | None = None, limit: int | None = None, with_images: bool = True
) -> Iterator[EvalItem]:
    """The benchmark's items in file order (the first `limit` of them when given)."""
    split = split or benchmark.split
    columns = [name for name in benchmark.columns.names() if with_images or name not in benchmark.columns.images]
    number = 0
    for rows in row_batches(path, split, columns):
        for row in rows:
            if limit is not None and number >= limit:
                return
            yield row_to_item(benchmark, row, number, with_images)
            number += 1
