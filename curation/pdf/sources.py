"""Document inputs: folders or globs of PDF files, and WebDataset shards of PDFA, IDL or image+text form.

Every document becomes a SourceItem with a stable id: a loose file's path under its input root (no
suffix), or a shard sample's own `__key__` (PDFA and IDL keys are unique across their datasets).

Shard samples, by the members they hold (first match wins, as chug does):
    .pdf (+ .json OCR)            PDFA (`pages[].lines/words`) or IDL (`pages[].{text,bbox,score}`)
    .tif/.tiff (+ .json)          IDL scans without a PDF: one page per TIFF frame
    .png/.jpg/.jpeg/.webp (+ .txt transcription and/or .json)   page images such as Rendered Text

Partitions: each shard is one; loose PDFs are grouped per folder into sorted chunks. Inputs may be
local paths or object-store URLs (`curation.storage`), globs included (`s3://bucket/pdfa/*.tar`);
documents are read from the store in place (shards member by member, files whole into memory).

A partition's document count comes from the input itself (`count_documents`: the shard's tar listing,
or the files found), and reading yields every one of them once: as a SourceItem, or as a
SkippedDocument (`duplicate_id` for a second shard sample with a key already seen, `unreadable_input`
for a file that cannot be read or for the unreadable rest of a damaged shard).
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from curation.errors import UserError
from curation.pdf.pages import SourceItem
from curation.readers import partition_name
from curation.shards import OVERSIZED, TOO_LARGE, DamagedTarError, iter_tar_samples, list_tar
from curation.storage import ObjectPath, StoragePath, glob_paths, relative, storage_path

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PDF_SUFFIX = ".pdf"
DOCUMENT_MEMBERS = (
    ("pdf", "pdf"),
    ("tif", "tiff"),
    ("tiff", "tiff"),
    ("png", "image"),
    ("jpg", "image"),
    ("jpeg", "image"),
    ("webp", "image"),
)
DEFAULT_FILES_PER_PARTITION = 256


@dataclass(frozen=True)
class PdfPartition:
    name: str
    shard: StoragePath | None = None  # a WebDataset shard ...
    files: tuple[StoragePath, ...] = ()  # ... or loose PDF files
    root: StoragePath | None = None  # what loose-file ids are relative to


def _is_shard(path: StoragePath) -> bool:
    return path.name.endswith(SHARD_SUFFIXES)


def _is_input_file(match: StoragePath, listed: bool) -> bool:
    """A PDF or shard that a glob found in an object listing: taken as a file without asking the store
    (a request per match, one after the other, is hours for a million PDFs); other matches are asked."""
    return listed and isinstance(match, ObjectPath) and (match.suffix.lower() == PDF_SUFFIX or _is_shard(match))


def discover_inputs(inputs: list[str]) -> list[tuple[StoragePath, StoragePath]]:
    """(file, root) for every PDF and shard under `inputs` (files, folders or glob patterns), sorted."""
    found: dict[StoragePath, StoragePath] = {}
    for entry in inputs:
        pattern = glob.has_magic(entry)
        matches = glob_paths(entry) if pattern else [storage_path(entry)]
        if not matches or not (pattern or matches[0].exists()):  # what a glob matched was listed: it exists
            raise FileNotFoundError(f"input not found: {entry}")
        for match in matches:
            if _is_input_file(match, pattern):
                found.setdefault(match, match.parent)
            elif match.is_dir():
                files: list[StoragePath] = sorted(match.rglob("*"))
                for path in files:
                    # object listings hold files only: no request per file to ask
                    if (isinstance(path, ObjectPath) or path.is_file()) and (path.suffix.lower() == PDF_SUFFIX or _is_shard(path)):
                        found.setdefault(path, match)
            elif match.suffix.lower() == PDF_SUFFIX or _is_shard(match):
                found.setdefault(match, match.parent)
            elif not pattern:
                raise UserError(f"unsupported input {match} (expected .pdf files, shards or folders)")
    if not found:
        raise UserError(f"no PDF files or shards found in {', '.join(inputs)}")
    return sorted(found.items())


def discover_partitions(inputs: list[str], files_per_partition: int = DEFAULT_FILES_PER_PARTITION) -> list[PdfPartition]:
    """One partition per shard; loose PDFs in chunks of `files_per_partition` per folder."""
    partitions: dict[str, PdfPartition] = {}

    def add(part: PdfPartition) -> None:
        if part.name in partitions:
            raise UserError(f"two inputs map to partition {part.name!r}")
        partitions[part.name] = part

    loose: dict[tuple[StoragePath, StoragePath], list[StoragePath]] = {}
    for path, root in discover_inputs(inputs):
        if _is_shard(path):
            stem = path.name[: -len(next(s for s in SHARD_SUFFIXES if path.name.endswith(s)))]
            add(PdfPartition(partition_name(path.with_name(stem), root), shard=path))
        else:
            loose.setdefault((root, path.parent), []).append(path)
    for (root, folder), files in sorted(loose.items()):
        base = partition_name(folder, root) if folder != root else partition_name(root, root.parent)
        for start in range(0, len(files), files_per_partition):
            chunk = tuple(files[start : start + files_per_partition])
            add(PdfPartition(f"{base}-pdfs-{start // files_per_partition:05d}", files=chunk, root=root))
    return sorted(partitions.values(), key=lambda p: p.name)


@dataclass(frozen=True)
class SkippedDocument:
    """An input unit that is not processed, with its ledger reason (`unreadable_input`, `duplicate_id`)."""

    id: str
    reason: str
    detail: str


def file_item(path: StoragePath, root: StoragePath, max_doc_bytes: int) -> SourceItem | SkippedDocument:
    doc_id = relative(path, root).with_suffix("").as_posix()
    try:
        size = path.stat().st_size
        data = path.read_bytes() if size <= max_doc_bytes else b""
    except OSError as exc:  # gone or unreadable since discovery: this document only
        return SkippedDocument(doc_id, "unreadable_input", f"{type(exc).__name__}: {exc}")
    return SourceItem(doc_id, str(path), "pdf", data, size)


def shard_item(sample: dict[str, Any], shard_name: str, max_doc_bytes: int) -> SourceItem:
    """A shard sample as a document: the first document member found, with its OCR JSON / transcription."""
    key = sample["__key__"]
    members = {ext.lower(): value for ext, value in sample.items() if not ext.startswith("__")}
    oversized = {ext.lower(): size for ext, size in sample.get(OVERSIZED, {}).items()}
    source = f"{shard_name}:{key}"
    transcription = members.get("txt")
    text = transcription.decode("utf-8", errors="replace") if transcription is not None else None
    for ext, kind in DOCUMENT_MEMBERS:
        if ext in members:
            data = members[ext]
            size = len(data)
            return SourceItem(key, source, kind, data if size <= max_doc_bytes else b"", size, members.get("json"), text)
        if ext in oversized:  # over the read cap: never read, a too_large document
            return SourceItem(key, source, kind, b"", oversized[ext], members.get("json"), text)
    return SourceItem(key, source, "none", b"", 0, members.get("json"), text)


def count_documents(partition: PdfPartition, max_doc_bytes: int) -> int:
    """Input units of the partition, from the input itself: the shard's samples (plus one for a damaged
    rest), or its files. Raises UnreadableInputError for a shard with nothing readable in it."""
    if partition.shard is not None:
        return list_tar(partition.shard, max_member_bytes=max_doc_bytes).units
    return len(partition.files)


def _shard_items(shard: StoragePath, max_doc_bytes: int) -> Iterator[SourceItem | SkippedDocument]:
    seen: set[str] = set()
    try:
        for index, sample in enumerate(iter_tar_samples(shard, max_member_bytes=max_doc_bytes)):
            key = sample["__key__"]
            if key in seen:
                yield SkippedDocument(f"{key}#sample{index}", "duplicate_id", f"key {key!r} already seen in this shard")
                continue
            seen.add(key)
            if TOO_LARGE in sample:  # over the reader's sample caps: nothing of it was kept
                yield SkippedDocument(key, "too_large", sample[TOO_LARGE])
                continue
            yield shard_item(sample, shard.name, max_doc_bytes)
    except DamagedTarError as exc:
        yield SkippedDocument(f"{shard.name}#unreadable", "unreadable_input", exc.detail)


def iter_partition_items(partition: PdfPartition, max_doc_bytes: int) -> Iterator[SourceItem | SkippedDocument]:
    """The partition's documents in a stable order, `count_documents` of them.

    A shard member over `max_doc_bytes`, or a shard sample over the reader's sample caps, becomes a
    `too_large` document (never read).
    """
    if partition.shard is not None:
        yield from _shard_items(partition.shard, max_doc_bytes)
        return
    for path in partition.files:
        yield file_item(path, partition.root or path.parent, max_doc_bytes)
