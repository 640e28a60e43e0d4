"""Input partitions: parquet files, Arrow files of a `save_to_disk` dataset folder, or folders of either.

Inputs may be local paths or object-store URLs (`curation.storage`); files are read in place through
the filesystem (ranged reads), never copied whole first.

A partition is one input file; its name (derived from its path under the input root) names everything
written for it, so reruns and resumes line up without a run id.

Reading never loses rows quietly. A partition's row count comes from the file itself (the parquet
footer, or the Arrow record batches), not from the loop that consumes it. A parquet row group that
cannot be decoded is reported as a span of unreadable rows and reading goes on with the next one; an
Arrow stream that breaks reports the unreadable rest. A file whose footer or schema cannot be read at
all is unusable: `UnreadableInputError`, naming the file and why.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import UserError
from curation.storage import StoragePath, open_arrow_input, parquet_file, relative

INPUT_SUFFIXES = (".parquet", ".arrow")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


class UnreadableInputError(UserError):
    """An input file that cannot be read at all (not even its row count); the message names it and why."""

    def __init__(self, path: StoragePath | str, why: str) -> None:
        super().__init__(str(path), why)  # both in args, so the error pickles (it crosses Ray)
        self.path = str(path)
        self.why = why

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"


@dataclass(frozen=True)
class Partition:
    name: str
    path: StoragePath


@dataclass(frozen=True)
class UnreadableRows:
    """Rows `start` .. `stop - 1` of a file could not be read; `stop` None: the rest of the file (count unknown)."""

    start: int
    stop: int | None
    detail: str

    def indices(self) -> range:
        return range(self.start, self.start + 1 if self.stop is None else self.stop)

    def ledger_ids(self, prefix: str) -> list[str]:
        """`<prefix>#row<N>` for each unreadable row, or one `<prefix>#row<N>+` for an unknown rest."""
        if self.stop is None:
            return [f"{prefix}#row{self.start}+"]
        return [f"{prefix}#row{i}" for i in self.indices()]


def partition_name(path: StoragePath, root: StoragePath) -> str:
    relative_path = relative(path, root) if path != root else PurePosixPath(path.name)
    stem = str(relative_path.with_suffix(""))
    return _NAME_UNSAFE.sub("_", stem).strip("_") or "part"


def discover_partitions(inputs: list[StoragePath], suffixes: tuple[str, ...] = INPUT_SUFFIXES) -> list[Partition]:
    """Every input file under `inputs`, sorted; raises FileNotFoundError/ValueError on unusable input."""
    found: dict[str, Partition] = {}
    for root in inputs:
        if not root.exists():
            raise FileNotFoundError(f"input not found: {root}")
        files: list[StoragePath] = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in suffixes)
        for path in files:
            if path.suffix not in suffixes:
                raise UserError(f"unsupported input file {path} (expected {', '.join(suffixes)})")
            part = Partition(partition_name(path, root if root.is_dir() else root.parent), path)
            if part.name in found:
                raise UserError(f"two inputs map to partition {part.name!r}: {found[part.name].path} and {path}")
            found[part.name] = part
    if not found:
        raise UserError(f"no {'/'.join(suffixes)} files found in {', '.join(map(str, inputs))}")
    return sorted(found.values(), key=lambda p: p.name)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"  # one line, for ledgers and messages


def _parquet_file(path: StoragePath) -> pq.ParquetFile:
    try:
        return parquet_file(path)
    except (OSError, pa.ArrowException) as exc:
        raise UnreadableInputError(path, f"not a readable parquet file ({_describe(exc)})") from None


def _arrow_reader(source: pa.NativeFile) -> pa.ipc.RecordBatchStreamReader | pa.ipc.RecordBatchFileReader:
    try:
        return pa.ipc.open_stream(source)  # `datasets.save_to_disk` writes the stream format
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_file(source)


def _arrow_batches(path: StoragePath) -> Iterator[pa.RecordBatch]:
    """The file's record batches; UnreadableInputError if it is no Arrow file at all."""
    try:
        source = open_arrow_input(path)
    except (OSError, pa.ArrowException) as exc:
        raise UnreadableInputError(path, f"cannot be opened ({_describe(exc)})") from None
    with source:
        try:
            reader = _arrow_reader(source)
        except (OSError, pa.ArrowException) as exc:
            raise UnreadableInputError(path, f"not a readable Arrow file ({_describe(exc)})") from None
        if isinstance(reader, pa.ipc.RecordBatchFileReader):
            yield from (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            yield from reader


@dataclass(frozen=True)
class InputCount:
    """What an input says about its size: `readable` rows or samples, and why the rest of it is
    unreadable (None when nothing is)."""

    readable: int
    damage: str | None = None

    @property
    def units(self) -> int:
        """Input units for the accounting: the readable ones, plus one for an unreadable rest."""
        return self.readable + (self.damage is not None)


def count_rows(path: StoragePath) -> InputCount:
    """The row count from the file itself: the parquet footer, or the Arrow batches' lengths.

    Raises UnreadableInputError when not even that can be read.
    """
    if path.suffix == ".parquet":
        return InputCount(_parquet_file(path).metadata.num_rows)
    rows = 0
    batches = _arrow_batches(path)
    try:
        for batch in batches:
            rows += batch.num_rows
    except (OSError, pa.ArrowException) as exc:
        return InputCount(rows, _describe(exc))
    return InputCount(rows)


def _parquet_rows(path: StoragePath, batch_size: int) -> Iterator[dict[str, Any] | UnreadableRows]:
    parquet = _parquet_file(path)
    start = 0
    for group in range(parquet.metadata.num_row_groups):
        stop = start + parquet.metadata.row_group(group).num_rows
        position = start
        try:
            for batch in parquet.iter_batches(batch_size, row_groups=[group]):
                rows = batch.to_pylist()
                position += len(rows)
                yield from rows
        except (OSError, pa.ArrowException) as exc:
            yield UnreadableRows(position, stop, f"row group {group}: {_describe(exc)}")
        start = stop


def _arrow_rows(path: StoragePath) -> Iterator[dict[str, Any] | UnreadableRows]:
    position = 0
    batches = _arrow_batches(path)
    try:
        for batch in batches:
            rows = batch.to_pylist()
            position += len(rows)
            yield from rows
    except (OSError, pa.ArrowException) as exc:
        yield UnreadableRows(position, None, _describe(exc))


def iter_rows_checked(path: StoragePath, batch_size: int = 1024) -> Iterator[dict[str, Any] | UnreadableRows]:
    """Every row of a parquet or Arrow file as a dict, in order, with unreadable spans in their place.

    The rows plus the spans' lengths add up to `count_rows(path).units`. Raises UnreadableInputError for
    a file that cannot be opened at all.
    """
    if path.suffix == ".parquet":
        yield from _parquet_rows(path, batch_size)
    else:
        yield from _arrow_rows(path)


def _project(batch: pa.RecordBatch, columns: list[str]) -> pa.RecordBatch:
    """The batch's `columns` that it has, validated (invalid data raises ArrowException, as a decode would)."""
    batch = batch.select([name for name in columns if name in batch.schema.names])
    batch.validate(full=True)
    return batch


def iter_batches_checked(path: StoragePath, columns: list[str], batch_size: int = 1024) -> Iterator[pa.RecordBatch | UnreadableRows]:
    """The file's record batches reduced to `columns` (those it has), in order, with unreadable spans in
    their place, as `iter_rows_checked` has them.

    A parquet file is read column by column, so other columns cost nothing and their damage goes unseen
    here; an Arrow file is read whole and then reduced. Raises UnreadableInputError for a file that cannot
    be opened at all.
    """
    if path.suffix != ".parquet":
        position = 0
        try:
            for batch in _arrow_batches(path):
                yield _project(batch, columns)
                position += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            yield UnreadableRows(position, None, _describe(exc))
        return
    parquet = _parquet_file(path)
    present = [name for name in columns if name in parquet.schema_arrow.names]
    start = 0
    for group in range(parquet.metadata.num_row_groups):
        stop = start + parquet.metadata.row_group(group).num_rows
        position = start
        try:
            for batch in parquet.iter_batches(batch_size, row_groups=[group], columns=present):
                yield _project(batch, present)
                position += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            yield UnreadableRows(position, stop, f"row group {group}: {_describe(exc)}")
        start = stop


def iter_rows(path: StoragePath, batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Rows of a parquet or Arrow file we wrote ourselves (staging files), streamed batch by batch.

    Input files go through `iter_rows_checked`, which accounts for damage instead of raising.
    """
    for row in iter_rows_checked(path, batch_size):
        if isinstance(row, UnreadableRows):
            raise UnreadableInputError(path, f"rows from {row.start} unreadable ({row.detail})")
        yield row


def input_schema(path: StoragePath) -> pa.Schema:
    """The Arrow schema of a parquet or Arrow file, from its footer or stream header; UnreadableInputError if unreadable."""
    if path.suffix == ".parquet":
        return _parquet_file(path).schema_arrow
    try:
        with open_arrow_input(path) as source:
            return _arrow_reader(source).schema
    except (OSError, pa.ArrowException) as exc:
        raise UnreadableInputError(path, f"not a readable Arrow file ({_describe(exc)})") from None


def input_columns(path: StoragePath) -> list[str]:
    """Column names of a parquet or Arrow file, from its footer or schema; UnreadableInputError if unreadable."""
    return input_schema(path).names
