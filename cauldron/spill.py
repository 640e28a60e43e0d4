"""Streaming parquet output for the build: rows go out in row groups, files appear atomically when complete.

`ParquetSink` buffers rows as Python dicts up to `rows_per_group`, writes them as one row group and
forgets them, so memory is bounded by a row group whatever the file's size; the file is written under
a temporary name and renamed on `close` (on object storage: written locally and uploaded on `close`,
see `curation.atomic`). The spill schema is what the per-file pass of
`cauldron build` hands to the subset merge: Cauldron rows plus the row id and the merge key.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pyarrow as pa
import pyarrow.parquet as pq

from cauldron.merge import KEY_BYTES
from cauldron.schema import CAULDRON_ARROW_SCHEMA
from curation.ledger import LEDGER_SCHEMA, LedgerEntry
from curation.storage import ObjectPath, StoragePath

ROWS_PER_GROUP = 256
GROUP_BYTES = 64 * 2**20  # a row group is also closed once its images reach this size

SPILL_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("key", pa.binary(KEY_BYTES)),  # merge key: digest of the row's image pixel hashes; null when text-only
        CAULDRON_ARROW_SCHEMA.field("images"),
        CAULDRON_ARROW_SCHEMA.field("texts"),
    ]
)
BUCKET_SCHEMA = pa.schema(
    [("leader", pa.int64()), ("position", pa.int64()), *[SPILL_SCHEMA.field(n) for n in ("row_id", "images", "texts")]]
)


class ParquetSink:
    """Rows appended one at a time, written in row groups; `close` makes the file appear, `abort` drops it."""

    def __init__(self, path: StoragePath, schema: pa.Schema, rows_per_group: int = ROWS_PER_GROUP, group_bytes: int = GROUP_BYTES) -> None:
        self.path = path
        self.schema = schema
        self.rows_per_group = rows_per_group
        self.group_bytes = group_bytes
        self.scratch: str | None = None
        if isinstance(path, ObjectPath):
            self.scratch = tempfile.mkdtemp(prefix="potion-sink-")
            self.partial = Path(self.scratch) / path.name
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        self.writer = pq.ParquetWriter(self.partial, schema)
        self.buffer: list[dict[str, Any]] = []
        self.buffered_bytes = 0
        self.rows = 0

    def append(self, row: dict[str, Any]) -> None:
        self.buffer.append(row)
        self.rows += 1
        self.buffered_bytes += sum(len(image["bytes"] or b"") for image in row.get("images") or ())
        if len(self.buffer) >= self.rows_per_group or self.buffered_bytes >= self.group_bytes:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.buffer = []
            self.buffered_bytes = 0

    def write_table(self, table: pa.Table) -> None:
        """Write rows that are already a table (after whatever is buffered)."""
        self.flush()
        self.writer.write_table(table.cast(self.schema))
        self.rows += table.num_rows

    def close(self) -> StoragePath:
        self.flush()
        self.writer.close()
        if isinstance(self.path, ObjectPath):
            self.path.upload(self.partial)
            self._drop_scratch()
        else:
            os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        self.writer.close()
        self.partial.unlink(missing_ok=True)
        self._drop_scratch()

    def _drop_scratch(self) -> None:
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class LedgerSink(ParquetSink):
    """Ledger entries streamed to one parquet file in the ledger's schema."""

    def __init__(self, path: StoragePath) -> None:
        super().__init__(path, LEDGER_SCHEMA, rows_per_group=4096)

    def add(self, entry: LedgerEntry) -> None:
        self.append({"id": entry.id, "partition": entry.partition, "stage": entry.stage, "reason": entry.reason, "detail": entry.detail})


def image_structs(images: list[bytes]) -> list[dict[str, Any]]:
    return [{"bytes": data, "path": None} for data in images]
