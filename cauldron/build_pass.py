"""The first pass of `cauldron build` over one source file: read, adapt, hash, check against the eval sets.

Rows stream through in batches (`cauldron.source_readers`), so memory is bounded by a row group
whatever the file's size. Each row is adapted (`cauldron.adapters`, images resolved to bytes through
`cauldron.image_refs`), each image decoded once for both its exact pixel hash and its pHash (and
rows repeating the same encoded image, as several questions about one picture do, reuse it): the
first makes the row's merge key, both go to the evaluation index (`cauldron.dedup`). Survivors go to
a spill file with their merge key; every other input row is in the file's ledger part with its reason.
The merge itself needs every file of the subset and happens after (`cauldron.build_merge`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cauldron.adapter_types import Adapter, EvalIds
from cauldron.adapters import adapt_row
from cauldron.dedup import EvalIndex, EvalMatch, Fingerprint, FingerprintCache, fingerprint_rows
from cauldron.image_refs import ImageResolver
from cauldron.merge import merge_key
from cauldron.schema import CauldronRow
from cauldron.source_files import Refused, SourceError, SourceFile
from cauldron.source_readers import RowBatch, read_source_file
from cauldron.spill import SPILL_SCHEMA, LedgerSink, ParquetSink, image_structs
from cauldron.url_images import FetchedUrls, fetch_urls
from curation.errors import Rejection, SampleError
from curation.images import DEFAULT_MAX_PIXELS
from curation.ledger import LedgerEntry
from curation.pairs.download import DownloadIncompleteError, DownloadOptions
from curation.pairs.staging_sync import LocalStaging, staged_locally
from curation.storage import StoragePath

EVAL_EXAMPLES = 3  # eval matches kept in the file's result for the report


@dataclass(frozen=True)
class PassSettings:
    subset: str
    adapter: Adapter
    root: StoragePath
    seed: int = 0
    allow_eval_splits: bool = False
    fetch: DownloadOptions | None = None  # download URL-only images with these options; None: do not
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class FilePass:
    """What one file's pass produced; `input == kept + dropped` (checked)."""

    file: str
    spill: str
    ledger: str
    input: int = 0
    kept: int = 0
    dropped: int = 0
    refused: list[dict[str, str]] = field(default_factory=list)
    eval_matches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def load_eval_ids(spec: EvalIds | None, root: StoragePath) -> set[str] | None:
    if spec is None:
        return None
    path = root / spec.file_name
    if not path.is_file():
        return None
    return {line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()}


class _FileRun:
    """State of one file's pass: the sinks, the counters, and the ledger helper."""

    def __init__(self, settings: PassSettings, file: SourceFile, work: StoragePath, index: EvalIndex | None) -> None:
        self.settings = settings
        self.file = file
        self.index = index
        self.result = FilePass(file.relative, str(work / f"{file.name}.spill.parquet"), str(work / f"{file.name}.ledger.parquet"))
        self.spill = ParquetSink(work / f"{file.name}.spill.parquet", SPILL_SCHEMA)
        self.ledger = LedgerSink(work / f"{file.name}.ledger.parquet")
        self.eval_ids = load_eval_ids(settings.adapter.eval_ids, settings.root)
        self.fingerprints = FingerprintCache()

    def drop(self, row_id: str, stage: str, reason: str, detail: str = "") -> None:
        self.result.dropped += 1
        self.ledger.add(LedgerEntry(row_id, self.settings.subset, stage, reason, detail))

    def ledger_rejection(self, unread: Rejection) -> None:
        """A row the reader could not give (it names the row)."""
        self.result.dropped += 1
        self.ledger.add(LedgerEntry.of(unread, self.settings.subset, "read"))

    def keep(self, row_id: str, row: CauldronRow, prints: list[Fingerprint]) -> None:
        self.result.kept += 1
        self.spill.append(
            {
                "row_id": row_id,
                "key": merge_key([exact for exact, _ in prints]),
                "images": image_structs(row["images"]),
                "texts": row["texts"],
            }
        )

    def evaluation_row(self, raw: dict[str, Any]) -> str | None:
        """Why a row belongs to an evaluation split by the adapter's id list, or None."""
        spec = self.settings.adapter.eval_ids
        if spec is None or self.settings.allow_eval_splits:
            return None
        key = spec.key(raw)
        if key is None:
            return None
        if self.eval_ids is None:
            raise SourceError(
                f"{self.settings.subset}: the release files mix train and test rows; put {spec.file_name} "
                f"(from {spec.url}) in {self.settings.root}, or pass --allow-eval-splits"
            )
        return f"{key} is listed in {spec.file_name}" if key in self.eval_ids else None

    def adapt_batch(self, batch: RowBatch, resolve: ImageResolver) -> tuple[list[str], list[CauldronRow]]:
        ids, rows = [], []
        for row_id, raw in zip(batch.ids, batch.rows, strict=True):
            listed = self.evaluation_row(raw)
            if listed:
                self.drop(row_id, "split_guard", "eval_split_row", listed)
                continue
            try:
                rows.append(
                    adapt_row(self.settings.adapter, raw, key=row_id, seed=self.settings.seed, source=self.settings.subset, resolve=resolve)
                )
                ids.append(row_id)
            except SampleError as rejected:
                self.drop(row_id, "adapt", rejected.reason, rejected.detail)
        return ids, rows

    def check_batch(self, ids: list[str], rows: list[CauldronRow]) -> None:
        prints = fingerprint_rows(rows, self.settings.max_pixels, self.fingerprints)
        outcomes: list[EvalMatch | Rejection | None] = self.index.match_fingerprinted(rows, prints) if self.index else [None] * len(rows)
        for row_id, row, row_prints, outcome in zip(ids, rows, prints, outcomes, strict=True):
            if isinstance(row_prints, Rejection):
                self.drop(row_id, "hash", row_prints.reason, row_prints.detail)
            elif isinstance(outcome, EvalMatch):
                match = outcome.to_dict()
                self.drop(row_id, "eval_dedup", f"eval_{match['kind']}", json.dumps(match))
                if len(self.result.eval_matches) < EVAL_EXAMPLES:
                    self.result.eval_matches.append((row_id, match))
            else:
                self.keep(row_id, row, row_prints)


def _urls_of(settings: PassSettings, file: SourceFile) -> Iterator[str]:
    for item in read_source_file(file, settings.subset, settings.allow_eval_splits):
        if isinstance(item, RowBatch):
            for raw in item.rows:
                yield from settings.adapter.urls(raw)


def _fetched(settings: PassSettings, file: SourceFile, fetch: DownloadOptions, staging: LocalStaging) -> FetchedUrls:
    try:
        return fetch_urls(_urls_of(settings, file), staging, fetch)
    except DownloadIncompleteError as error:
        raise SourceError(f"{settings.subset}: image downloads for {file.relative} did not complete ({error})") from None


def run_file_pass(settings: PassSettings, file: SourceFile, work: StoragePath, index: EvalIndex | None) -> FilePass:
    """Read, adapt, hash and eval-check every row of `file`; write its spill and ledger part under `work`.

    URL images are fetched into `<work>/staging/<file>/`, reused on rerun. For a `work` on object storage
    that is a local copy of the store's staging (fetched images are read back at random offsets of the
    tars), seeded with the shards the store has; each new shard is published to the store as it completes.

    Raises SourceError (the message names the file) when the file cannot be used at all.
    """
    if settings.fetch is None or not settings.adapter.url_columns:
        return _file_pass(settings, file, work, index, None)
    with staged_locally(work / "staging" / file.name, pull=True) as staging:
        return _file_pass(settings, file, work, index, _fetched(settings, file, settings.fetch, staging))


def _file_pass(settings: PassSettings, file: SourceFile, work: StoragePath, index: EvalIndex | None, urls: FetchedUrls | None) -> FilePass:
    folder = file.path.parent if file.kind not in ("zip", "tar") else settings.root
    resolve = ImageResolver(settings.root, folder, urls)
    run = _FileRun(settings, file, work, index)
    try:
        for item in read_source_file(file, settings.subset, settings.allow_eval_splits):
            if isinstance(item, Refused):
                run.result.refused.append({"file": item.file, "reason": item.reason})
            elif isinstance(item, Rejection):
                run.result.input += 1
                run.ledger_rejection(item)
            else:
                run.result.input += len(item.rows)
                run.check_batch(*run.adapt_batch(item, resolve))
    except BaseException:
        run.spill.abort()
        run.ledger.abort()
        raise
    run.spill.close()
    run.ledger.close()
    result = run.result
    if result.input != result.kept + result.dropped:
        raise AssertionError(f"{file.path}: {result.input} rows in, {result.kept} kept + {result.dropped} dropped")
    return result
