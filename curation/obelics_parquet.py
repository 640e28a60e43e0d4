"""`--parquet` output of `curate obelics`: the kept documents as OBELICS Hub rows, one file per partition.

Every file has the same schema, the Hub's columns plus our `id`:

    images            list<string>   the image's URL at image nodes, null at text nodes
    metadata          string         JSON list: a dict per image node, null per text node
    general_metadata  string         JSON dict (page URL, WARC location)
    texts             list<string>   the text at text nodes, null at image nodes
    id                string         the document id (as in the shards and the ledger)

A partition whose documents were all dropped still gets its file, empty but with this schema, so
`datasets.load_dataset("parquet", ...)` and `pyarrow.dataset` read the folder as one table. Rows are
written in row groups as they come (the partition is never held whole) into a temporary file that
replaces the final one on `close`. Image bytes are not in these files: they are in the shards.
"""

from __future__ import annotations

from contextlib import ExitStack

import pyarrow as pa
import pyarrow.parquet as pq

from curation.atomic import atomic_path
from curation.documents import InterleavedDocument
from curation.interleaved_format import document_record
from curation.storage import StoragePath

OBELICS_PARQUET_SCHEMA = pa.schema(
    [
        ("images", pa.list_(pa.string())),
        ("metadata", pa.string()),
        ("general_metadata", pa.string()),
        ("texts", pa.list_(pa.string())),
        ("id", pa.string()),
    ]
)
ROWS_PER_GROUP = 1000


class ObelicsParquetWriter:
    """Writes documents as Hub rows to `path`, a row group every `rows_per_group` documents."""

    def __init__(self, path: StoragePath, rows_per_group: int = ROWS_PER_GROUP) -> None:
        self._stack = ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(path))
        self._writer = self._stack.enter_context(pq.ParquetWriter(self._tmp, OBELICS_PARQUET_SCHEMA))
        self._rows: list[dict] = []
        self._rows_per_group = rows_per_group

    def write(self, doc: InterleavedDocument) -> None:
        self._rows.append(document_record(doc))
        if len(self._rows) >= self._rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=OBELICS_PARQUET_SCHEMA))
            self._rows = []

    def close(self) -> None:
        """Write what is left and put the file in place (an empty file, with the schema, if nothing came)."""
        self._flush()
        self._stack.close()
