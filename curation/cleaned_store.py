"""Cleaned OBELICS partitions kept on disk between the score and write phases, so each is cleaned once.

A cleaned partition is a folder of three parquet files:

    ledger.parquet          the cleaning pass's ledger rows (the ledger schema)
    removed_images.parquet  the image nodes it removed: id, url, reason, detail
    documents.parquet       the surviving documents: the Hub row (`InterleavedDocument.to_row`) plus
                            `image_bytes`, the bytes of each image node that carries them (null elsewhere)

Every file carries, in its schema metadata, the key of the cleaning that made it (a fingerprint of all it
depends on: the input file, the cleaning settings, the opt-out verdicts, the language-id model) and the
input count. Each file is written atomically and documents.parquet last, so a folder whose three files
carry the wanted key is complete; anything else (missing, partial, another key) is not used and the
caller cleans again. Cleaning is deterministic, so the output never depends on these files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import pyarrow as pa

from curation.atomic import write_parquet
from curation.documents import InterleavedDocument
from curation.ledger import LEDGER_SCHEMA, LedgerEntry
from curation.storage import ObjectPath, StoragePath, parquet_file, read_parquet, read_parquet_schema, remove_tree, stat_key

FORMAT_VERSION = 1
METADATA_KEY = b"potion.cleaned"
READ_BATCH = 1024
REMOVED_IMAGES_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("reason", pa.string()), ("detail", pa.string())])
DOCUMENTS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("texts", pa.list_(pa.string())),
        ("images", pa.list_(pa.string())),
        ("image_bytes", pa.list_(pa.binary())),
        ("metadata", pa.string()),
        ("general_metadata", pa.string()),
    ]
)


class Cleaned(Protocol):
    """What a cleaning pass yields (`curation.obelics.CleanedPartition`, or a `StoredPartition`)."""

    n_input: int
    ledger: list[LedgerEntry]
    removed_images: list[dict]

    @property
    def documents(self) -> Iterable[InterleavedDocument]: ...


def _stat(path: StoragePath | None) -> list[object] | None:
    if path is None:
        return None
    try:
        identity = stat_key(path)
    except OSError:
        return [str(path)]
    return [str(path if isinstance(path, ObjectPath) else path.resolve()), identity]


def cleaning_key(input_path: StoragePath, steps: object, verdicts_fingerprint: str, lid_model: StoragePath | None) -> str:
    """A fingerprint of everything a partition's cleaning depends on (`steps`: the cleaning steps' names and
    settings, JSON-able).

    The input and the language-id model enter by path and identity (`curation.storage.stat_key`: size and
    mtime, or size and the store's ETag), so a file replaced under the same name is cleaned again.
    """
    parts = [FORMAT_VERSION, _stat(input_path), steps, verdicts_fingerprint, _stat(lid_model)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _document_row(doc: InterleavedDocument) -> dict[str, Any]:
    row = doc.to_row()
    row["image_bytes"] = [image if isinstance(image, bytes) else None for image in doc.images]
    return row


def _document(row: dict[str, Any]) -> InterleavedDocument:
    images = [data if data is not None else url for url, data in zip(row["images"], row["image_bytes"], strict=True)]
    return InterleavedDocument(row["id"], row["texts"], images, json.loads(row["metadata"]), json.loads(row["general_metadata"]))


@dataclass(frozen=True)
class Stamp:
    """What each stored file says about itself: the cleaning key, the partition's input count, its rows."""

    key: str
    input: int
    rows: int

    def metadata(self) -> dict[bytes, bytes]:
        return {METADATA_KEY: json.dumps(asdict(self)).encode()}

    @classmethod
    def read(cls, path: StoragePath) -> Stamp | None:
        """The stamp of a stored file; None when it is missing or unreadable."""
        try:
            raw = (read_parquet_schema(path).metadata or {}).get(METADATA_KEY)
        except (OSError, pa.ArrowException):
            return None
        return cls(**json.loads(raw)) if raw else None


def save_cleaned(folder: StoragePath, cleaned: Cleaned, key: str) -> None:
    """Write a cleaning pass's result into `folder` (documents last), each file atomically."""
    ledger = pa.Table.from_pylist([asdict(e) for e in cleaned.ledger], schema=LEDGER_SCHEMA)
    removed = pa.Table.from_pylist(cleaned.removed_images, schema=REMOVED_IMAGES_SCHEMA)
    documents = pa.Table.from_pylist([_document_row(d) for d in cleaned.documents], schema=DOCUMENTS_SCHEMA)
    for name, table in (("ledger", ledger), ("removed_images", removed), ("documents", documents)):
        stamp = Stamp(key, cleaned.n_input, table.num_rows)
        write_parquet(folder / f"{name}.parquet", table.replace_schema_metadata(stamp.metadata()))


class StoredDocuments:
    """The documents of a stored partition, read back one batch at a time on each iteration."""

    def __init__(self, path: StoragePath, count: int) -> None:
        self.path = path
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[InterleavedDocument]:
        for batch in parquet_file(self.path).iter_batches(READ_BATCH):
            yield from (_document(row) for row in batch.to_pylist())


@dataclass
class StoredPartition:
    """A cleaning pass read back from disk; `documents` streams from the file."""

    n_input: int
    ledger: list[LedgerEntry]
    removed_images: list[dict]
    documents: StoredDocuments


def open_cleaned(folder: StoragePath, key: str) -> StoredPartition | None:
    """The partition stored in `folder` if it is complete and was made with `key`, else None."""
    ledger_path, removed_path, documents_path = (folder / f"{n}.parquet" for n in ("ledger", "removed_images", "documents"))
    stamps = [stamp for path in (ledger_path, removed_path, documents_path) if (stamp := Stamp.read(path)) and stamp.key == key]
    if len(stamps) != 3 or len({stamp.input for stamp in stamps}) != 1:
        return None
    ledger = [LedgerEntry(**row) for row in read_parquet(ledger_path).to_pylist()]
    removed = read_parquet(removed_path).to_pylist()
    return StoredPartition(stamps[0].input, ledger, removed, StoredDocuments(documents_path, stamps[2].rows))


def remove_cleaned(folder: StoragePath) -> None:
    """Delete a stored partition (its documents are a second copy of the partition's data)."""
    remove_tree(folder)
