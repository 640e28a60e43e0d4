"""Raw rows of one source file, in batches, with their real types, and every unreadable row accounted for.

Formats: parquet (streamed row group by row group), Arrow IPC (`save_to_disk`), JSON and JSON lines
(`cauldron.source_json`), and zip / tar archives of JSON or JSON lines members (read in memory, never
extracted). Types: a `datasets.ClassLabel` column stores class indices; they are decoded through the
names in the file's `huggingface` schema metadata (or the folder's `dataset_info.json`), so NLVR2's
`label` 0 reads "True" as its publisher meant. An index outside the names reads as an invalid value.

Accounting: every row the file holds comes back once, either in a `RowBatch` or as a `Rejection` naming
it with a reason. A parquet row group that cannot be decoded gives one `Rejection` per row (its size is
in the footer); a JSON array or an archive cut short gives one for the unreadable rest, whose size
cannot be known. A row whose split column (`split`, `set_name`, ...) names an evaluation split is
rejected too (`eval_split_row`) unless evaluation splits are allowed. A file that cannot be opened at
all raises `SourceError` naming the file.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Any

import pyarrow as pa

from cauldron.source_files import Refused, SourceError, SourceFile, eval_split_word, file_kind, printable
from cauldron.source_json import Damaged, iter_json, iter_json_lines
from curation.errors import Rejection
from curation.shards import DamagedTarError, iter_tar_members
from curation.storage import ObjectPath, StoragePath, open_arrow_input, parquet_file

BATCH_ROWS = 256
MAX_MEMBER_BYTES = 4 * 2**30  # one JSON member of an archive, uncompressed
ROW_SPLIT_COLUMNS = ("split", "set_name", "data_split", "split_name", "data_subtype")


@dataclass
class RowBatch:
    ids: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)


ReadItem = RowBatch | Rejection | Refused  # a Rejection names the row it stands for


# ---- types: ClassLabel columns --------------------------------------------------------------------


@dataclass(frozen=True)
class LabelColumn:
    names: tuple[str, ...]
    is_list: bool  # Sequence(ClassLabel): a list of indices


def label_columns(features: Mapping[str, Any]) -> dict[str, LabelColumn]:
    """Top-level ClassLabel (and list-of-ClassLabel) columns of a `datasets` features dict."""
    found = {}
    for column, spec in features.items():
        is_list = False
        if isinstance(spec, list) and len(spec) == 1:  # `[feature]` is datasets' shorthand for a list
            spec, is_list = spec[0], True
        elif isinstance(spec, dict) and spec.get("_type") in ("Sequence", "List", "LargeList"):
            spec, is_list = spec.get("feature"), True
        if isinstance(spec, dict) and spec.get("_type") == "ClassLabel" and spec.get("names"):
            found[column] = LabelColumn(tuple(str(name) for name in spec["names"]), is_list)
    return found


def features_of(metadata: Mapping[bytes, bytes] | None, folder: StoragePath | None = None) -> dict[str, Any]:
    """The `datasets` features recorded in a schema's `huggingface` metadata, else in `dataset_info.json`."""
    try:
        if metadata and b"huggingface" in metadata:
            return json.loads(metadata[b"huggingface"]).get("info", {}).get("features") or {}
        info = folder / "dataset_info.json" if folder else None
        if info and info.is_file():
            return json.loads(info.read_text(encoding="utf-8")).get("features") or {}
    except (ValueError, AttributeError, OSError):
        pass
    return {}


def _label(names: tuple[str, ...], value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    return None if value == -1 else f"<class index {value!r} outside {len(names)} names>"


def decode_labels(rows: list[dict[str, Any]], labels: Mapping[str, LabelColumn]) -> None:
    for row in rows:
        for column, spec in labels.items():
            value = row.get(column)
            if spec.is_list and isinstance(value, list):
                row[column] = [_label(spec.names, item) for item in value]
            elif not spec.is_list:
                row[column] = _label(spec.names, value)


# ---- the per-row evaluation guard -----------------------------------------------------------------


def row_split(row: Mapping[str, Any]) -> str | None:
    """The evaluation split a row names in one of its split columns, or None."""
    for column in ROW_SPLIT_COLUMNS:
        value = row.get(column)
        if isinstance(value, str) and eval_split_word(value):
            return f"{column}={value!r}"
    return None


class _Batcher:
    """Collects rows into batches, applying label decoding and the per-row split guard."""

    def __init__(self, labels: Mapping[str, LabelColumn], allow_eval_splits: bool) -> None:
        self.labels = labels
        self.allow_eval_splits = allow_eval_splits
        self.batch = RowBatch()

    def add(self, row_id: str, row: Any) -> Iterator[ReadItem]:
        if not isinstance(row, dict):
            yield Rejection("bad_record", f"a JSON {type(row).__name__}, not an object", row_id)
            return
        split = None if self.allow_eval_splits else row_split(row)
        if split:
            yield Rejection("eval_split_row", f"row of an evaluation split ({split}); pass --allow-eval-splits to keep it", row_id)
            return
        self.batch.ids.append(row_id)
        self.batch.rows.append(row)
        if len(self.batch.rows) >= BATCH_ROWS:
            yield from self.flush()

    def flush(self) -> Iterator[RowBatch]:
        if self.batch.rows:
            decode_labels(self.batch.rows, self.labels)
            yield self.batch
        self.batch = RowBatch()


# ---- formats ------------------------------------------------------------------------------------


def _parquet_items(file: SourceFile, prefix: str, allow_eval_splits: bool) -> Iterator[ReadItem]:
    try:
        parquet = parquet_file(file.path)
    except (OSError, pa.ArrowException) as error:
        raise SourceError(f"{file.path}: not a readable parquet file ({error})") from None
    batcher = _Batcher(label_columns(features_of(parquet.schema_arrow.metadata)), allow_eval_splits)
    start = 0
    for group in range(parquet.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        done = 0
        try:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[group]):
                for offset, row in enumerate(batch.to_pylist()):
                    yield from batcher.add(f"{prefix}#{start + done + offset}", row)
                done += batch.num_rows
        except (OSError, pa.ArrowException) as error:
            yield from batcher.flush()
            for index in range(start + done, start + size):
                yield Rejection("unreadable_row_group", f"row group {group}: {error}"[:300], f"{prefix}#{index}")
        start += size
    yield from batcher.flush()


def _arrow_items(file: SourceFile, prefix: str, allow_eval_splits: bool) -> Iterator[ReadItem]:
    try:
        source = open_arrow_input(file.path)
        try:
            reader = pa.ipc.open_stream(source)  # `datasets.save_to_disk` writes the stream format
            batches = iter(reader)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except (OSError, pa.ArrowException) as error:
        raise SourceError(f"{file.path}: not a readable Arrow file ({error})") from None
    batcher = _Batcher(label_columns(features_of(reader.schema.metadata, file.path.parent)), allow_eval_splits)
    index = 0
    try:
        for batch in batches:
            for row in batch.to_pylist():
                yield from batcher.add(f"{prefix}#{index}", row)
                index += 1
    except (OSError, pa.ArrowException) as error:
        yield from batcher.flush()
        yield Rejection("truncated_file", f"the Arrow stream breaks after {index} rows: {error}"[:300], f"{prefix}#{index}-")
    yield from batcher.flush()
    source.close()


STREAM_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError)


def _json_items(stream: io.BufferedIOBase | IO[bytes], kind: str, prefix: str, allow_eval_splits: bool) -> Iterator[ReadItem]:
    """Rows of a JSON / JSON lines stream; a read error of the stream itself ends it with one `Rejection` for the rest."""
    batcher = _Batcher({}, allow_eval_splits)
    count = 0  # records (or damaged records) seen so far
    try:
        for index, record in enumerate(iter_json_lines(stream) if kind == "jsonl" else iter_json(stream)):
            count = index + 1
            if isinstance(record, Damaged):
                yield from batcher.flush()
                suffix = f"{record.index}-" if record.rest else str(record.index)
                yield Rejection(record.reason, record.detail, f"{prefix}#{suffix}")
            else:
                yield from batcher.add(f"{prefix}#{index}", record)
    except (*STREAM_ERRORS, _TooLarge) as error:
        yield from batcher.flush()
        reason = "record_too_large" if isinstance(error, _TooLarge) else "damaged_file"
        yield Rejection(reason, f"{type(error).__name__}: {error}"[:300], f"{prefix}#{count}-")
        return
    yield from batcher.flush()


def _open_json(path: StoragePath) -> io.BufferedIOBase | IO[bytes]:
    compressed = path.name.lower().endswith(".gz")
    if isinstance(path, ObjectPath):
        return path.open("rb", compression="gzip" if compressed else None)
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _local_json_items(file: SourceFile, prefix: str, allow_eval_splits: bool) -> Iterator[ReadItem]:
    try:
        stream = _open_json(file.path)
    except OSError as error:
        raise SourceError(f"{file.path}: cannot be opened ({error})") from None
    with stream:
        yield from _json_items(stream, file.kind, prefix, allow_eval_splits)


class _TooLarge(Exception):
    pass


class _Capped(io.RawIOBase):
    """A read-only view of a stream that refuses to go past `limit` bytes (archive bombs)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.stream = stream
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(min(len(buffer), self.left + 1))
        if len(data) > self.left:
            raise _TooLarge(f"member larger than {MAX_MEMBER_BYTES} bytes")
        self.left -= len(data)
        buffer[: len(data)] = data
        return len(data)


def _member_prefix(prefix: str, name: str) -> str:
    return f"{prefix}/{printable(PurePosixPath(name).as_posix().lstrip('/'))}"


def _member_guard(file: SourceFile, name: str, allow_eval_splits: bool) -> Refused | None:
    """Refuse a member whose name escapes the archive (never read, listed) or names an evaluation split."""
    if name.startswith("/") or ".." in PurePosixPath(name).parts:
        return Refused(f"{file.relative}/{printable(name)}", "unsafe member name (absolute or with '..')")
    word = None if allow_eval_splits else eval_split_word(name)
    return Refused(f"{file.relative}/{printable(name)}", f"evaluation split in the member name ({word!r})") if word else None


def _is_data_member(name: str) -> bool:
    parts = [p for p in PurePosixPath(name).parts if p != ".."]
    return file_kind(Path(name)) in ("json", "jsonl") and not any(p.startswith(".") for p in parts)


def _member_kind(name: str) -> str:
    return file_kind(Path(name)) or "json"


def _zip_items(file: SourceFile, prefix: str, allow_eval_splits: bool) -> Iterator[ReadItem]:
    try:
        archive = zipfile.ZipFile(file.path.open("rb") if isinstance(file.path, ObjectPath) else file.path)
    except (OSError, zipfile.BadZipFile) as error:
        raise SourceError(f"{file.path}: not a readable zip file ({error})") from None
    with archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if not info.is_dir() and _is_data_member(info.filename):
                yield from _member_items(file, prefix, info.filename, partial(archive.open, info), allow_eval_splits)


def _member_items(
    file: SourceFile, prefix: str, name: str, open_raw: Callable[[], IO[bytes] | None], allow_eval_splits: bool
) -> Iterator[ReadItem]:
    """One JSON (lines) member of an archive: refused by its name, or its rows."""
    refused = _member_guard(file, name, allow_eval_splits)
    if refused:
        yield refused
        return
    member = _member_prefix(prefix, name)
    try:
        raw = open_raw()
    except (*STREAM_ERRORS, NotImplementedError, RuntimeError) as error:
        yield Rejection("damaged_file", f"{type(error).__name__}: {error}"[:300], f"{member}#0-")
        return
    if raw is not None:
        with raw:
            yield from _json_items(_open_member(raw, name), _member_kind(name), member, allow_eval_splits)


def _open_member(raw: IO[bytes], name: str) -> io.BufferedIOBase:
    capped = io.BufferedReader(_Capped(raw, MAX_MEMBER_BYTES))
    return gzip.GzipFile(fileobj=capped) if name.lower().endswith(".gz") else capped


def _tar_items(file: SourceFile, prefix: str, allow_eval_splits: bool) -> Iterator[ReadItem]:
    members_read = 0
    try:
        for archive, info in iter_tar_members(file.path):
            members_read += 1
            if info.isfile() and _is_data_member(info.name):
                yield from _member_items(file, prefix, info.name, partial(archive.extractfile, info), allow_eval_splits)
    except DamagedTarError as error:
        if members_read == 0:
            raise SourceError(f"{file.path}: not a readable tar file ({error.detail})") from None
        yield Rejection(
            "damaged_file", f"the archive breaks after {members_read} members: {error.detail}"[:300], f"{prefix}#member{members_read}-"
        )


_READERS = {
    "parquet": _parquet_items,
    "arrow": _arrow_items,
    "json": _local_json_items,
    "jsonl": _local_json_items,
    "zip": _zip_items,
    "tar": _tar_items,
}


def read_source_file(file: SourceFile, subset: str, allow_eval_splits: bool = False) -> Iterator[ReadItem]:
    """Every row of `file` once: batches of rows (ids `<subset>/<file>#<index>`), `Rejection`s, and archive
    members refused by the evaluation guard. Raises SourceError when the file cannot be opened."""
    yield from _READERS[file.kind](file, f"{subset}/{file.name}", allow_eval_splits)
