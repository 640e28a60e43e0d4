"""A partition's score sidecar (and embeddings sidecar): written as scoring streams, read in step with the input.

Score sidecar `scores/<partition>.parquet`: one row per input unit of the partition (`id`, the `nsfw`
score or null, and the `reason` / `detail` it has none), in the order the partition's pairs are read.
The write phase walks it in step with its own read of the input, a batch at a time, so neither phase
holds a row per pair of the partition: memory is bounded by a row group or a read batch.

Schema metadata (the sidecar's keys): `scoring` (the settings' fingerprint), `input` (the input file's
identity) and `order` (`input`, the row order above); a sidecar with other keys is scored again.

Embeddings sidecar `embeddings/<partition>.parquet` (`--embeddings`): `id` + float16 `embedding` of each
scored pair (`curation.pairs.samples.embeddings_table`), with the same keys. A run that asks for
embeddings reuses a score sidecar only next to an embeddings sidecar with its keys (the flag is not part
of the scoring settings: a run without it reuses either).

Both are written to temporary files a row group at a time; the embeddings take their final name first
and the score sidecar last, so a score sidecar under its final name is complete. The temporary files a
writer killed mid-partition left are removed by the partition's next writer.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.atomic import atomic_path, remove_stale_temporaries
from curation.pairs.samples import embeddings_schema, embeddings_table
from curation.selection import DropRule
from curation.storage import StoragePath, parquet_file, read_parquet_schema

SCORE_SCHEMA = pa.schema([("id", pa.string()), ("nsfw", pa.float64()), ("reason", pa.string()), ("detail", pa.string())])
KEY_NAMES = ("scoring", "input", "order")
ORDER = "input"
ROWS_PER_GROUP = 8_192  # score rows buffered before a row group is written
EMBEDDINGS_PER_GROUP = 4_096  # 6 MB of float16 ViT-L/14 embeddings
READ_BATCH = 1_024


@dataclass(frozen=True)
class ScoreRow:
    id: str
    nsfw: float | None  # None: not scored, for `reason`
    reason: str | None = None
    detail: str | None = None


def sidecar_keys(scoring: str, input_key: str) -> dict[str, str]:
    """The keys a sidecar made now with these settings from this input carries."""
    return {"scoring": scoring, "input": input_key, "order": ORDER}


def keys_of(path: StoragePath) -> dict[str, str]:
    """The keys a sidecar was written with ('' for a key it lacks)."""
    metadata = read_parquet_schema(path).metadata or {}
    return {name: metadata.get(name.encode(), b"").decode() for name in KEY_NAMES}


class SidecarWriter:
    """Streams one partition's score rows (and embeddings) to temporary files; a clean exit puts them in
    place, embeddings first; an exception leaves neither."""

    def __init__(self, scores: StoragePath, keys: dict[str, str], embeddings: StoragePath | None = None, embedding_dim: int = 0):
        self._stack = ExitStack()
        self._rows: list[ScoreRow] = []
        self._embedded: list[pa.Table] = []
        self._embedded_rows = 0
        self._embedding_writer: pq.ParquetWriter | None = None
        for path in (scores, embeddings):
            if path is not None:  # what a writer killed mid-partition left (as large as its part of the file)
                remove_stale_temporaries(path.parent, glob.escape(path.name))
        with self._stack:  # closed again on a failure below; kept open (popped) on success
            scores_tmp = self._stack.enter_context(atomic_path(scores))
            self._score_writer = self._stack.enter_context(pq.ParquetWriter(scores_tmp, SCORE_SCHEMA.with_metadata(keys)))
            if embeddings is not None:
                embeddings_tmp = self._stack.enter_context(atomic_path(embeddings))
                schema = embeddings_schema(embedding_dim).with_metadata(keys)
                self._embedding_writer = self._stack.enter_context(pq.ParquetWriter(embeddings_tmp, schema))
            self._stack = self._stack.pop_all()

    def __enter__(self) -> SidecarWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if kind is None:
            self._flush_rows()
            self._flush_embeddings()
        self._stack.__exit__(kind, error, trace)

    def write(self, rows: Sequence[ScoreRow], embedded_ids: Sequence[str] = (), embeddings: np.ndarray | None = None) -> None:
        """Rows in input order; the embeddings (float32 or float16, one per id) of the scored ones among them."""
        self._rows.extend(rows)
        if len(self._rows) >= ROWS_PER_GROUP:
            self._flush_rows()
        if self._embedding_writer is not None and embeddings is not None and len(embedded_ids):
            self._embedded.append(embeddings_table(list(embedded_ids), embeddings))  # checks the shapes
            self._embedded_rows += len(embedded_ids)
            if self._embedded_rows >= EMBEDDINGS_PER_GROUP:
                self._flush_embeddings()

    def _flush_rows(self) -> None:
        if self._rows:
            columns = {name: [getattr(row, name) for row in self._rows] for name in SCORE_SCHEMA.names}
            self._score_writer.write_table(pa.table(columns, schema=SCORE_SCHEMA))
            self._rows = []

    def _flush_embeddings(self) -> None:
        if self._embedding_writer is not None and self._embedded:
            self._embedding_writer.write_table(pa.concat_tables(self._embedded))
            self._embedded, self._embedded_rows = [], 0


@dataclass(frozen=True)
class SidecarRow:
    """A score sidecar row as the write phase sees it: the row, and the selection's reason to drop it."""

    row: ScoreRow
    drop: str | None  # the rule's reason for a scored row it drops; None otherwise


def _picked(ids: list[str], rows: np.ndarray) -> list[str]:
    return [ids[i] for i in rows.tolist()]


def iter_sidecar(path: StoragePath, rule: DropRule) -> Iterator[SidecarRow]:
    """The sidecar's rows in order, a read batch at a time, each with `rule`'s verdict on its score."""
    for batch in parquet_file(path).iter_batches(READ_BATCH, columns=SCORE_SCHEMA.names):
        ids = batch.column("id").to_pylist()
        nsfw = batch.column("nsfw")
        scored = np.flatnonzero(pc.is_valid(nsfw).to_numpy(zero_copy_only=False))
        drops = np.full(len(ids), None, dtype=object)
        if len(scored):
            scores = pc.take(nsfw, pa.array(scored)).to_numpy(zero_copy_only=False)
            drops[scored] = rule.reasons(scores, partial(_picked, ids, scored))  # ids are read only on a tie
        columns = zip(ids, nsfw.to_pylist(), batch.column("reason").to_pylist(), batch.column("detail").to_pylist(), drops, strict=True)
        for sample_id, score, reason, detail, drop in columns:
            yield SidecarRow(ScoreRow(sample_id, score, reason, detail), drop)
