"""The per-partition cleaning pass for OBELICS documents: parse, image checks, language id, opt-out.

It is a pure function of the partition's rows and the run's settings, so every pipeline phase can rerun
it and get the same documents; only the perplexity selection is applied after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from curation.documents import InterleavedDocument, parse_document
from curation.errors import SampleError
from curation.images import DEFAULT_MAX_PIXELS, open_image
from curation.langid import LanguageIdentifier
from curation.ledger import LedgerEntry
from curation.optout import OnUnchecked, OptOutVerdicts, remove_opted_out
from curation.readers import iter_rows


@dataclass(frozen=True)
class CleaningSettings:
    min_lang_prob: float = 0.0
    on_unchecked: OnUnchecked = "fail"
    max_image_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class CleanedPartition:
    partition: str
    documents: list[InterleavedDocument] = field(default_factory=list)
    ledger: list[LedgerEntry] = field(default_factory=list)
    removed_images: list[dict] = field(default_factory=list)  # {id, url, position, reason}
    n_input: int = 0


def _row_id(partition: str, index: int, row: object) -> str:
    if isinstance(row, dict) and isinstance(row.get("id"), (str, int)) and row.get("id") != "":
        return str(row["id"])
    return f"{partition}#row{index}"  # an unparseable row still gets a stable, traceable id


def _drop_bad_images(doc: InterleavedDocument, max_pixels: int, removed: list[dict]) -> InterleavedDocument:
    def bad(position: int) -> bool:
        image = doc.images[position]
        if not isinstance(image, bytes):
            return False
        try:
            open_image(image, max_pixels)
        except SampleError as exc:
            removed.append({"id": doc.id, "url": doc.image_url(position), "reason": exc.reason, "detail": exc.detail})
            return True
        return False

    return doc.without_images(bad)


@dataclass(frozen=True)
class _ReadFailure:
    detail: str


def _rows_or_error(path: Path):
    """The partition's rows; a file that cannot be read (further) ends with one _ReadFailure."""
    try:
        yield from iter_rows(path)
    except (OSError, pa.ArrowException) as exc:
        yield _ReadFailure(f"{type(exc).__name__}: {exc}")


def clean_partition(
    path: Path,
    partition: str,
    settings: CleaningSettings,
    verdicts: OptOutVerdicts,
    langid: LanguageIdentifier | None = None,
) -> CleanedPartition:
    out = CleanedPartition(partition)
    seen: set[str] = set()

    def drop(doc_id: str, stage: str, reason: str, detail: str = "") -> None:
        out.ledger.append(LedgerEntry(doc_id, partition, stage, reason, detail))

    for index, row in enumerate(_rows_or_error(path)):
        out.n_input += 1
        if isinstance(row, _ReadFailure):
            drop(f"{partition}#unreadable", "read", "unreadable_input", row.detail)
            continue
        try:
            doc = parse_document(row)
        except SampleError as exc:
            drop(_row_id(partition, index, row), "parse", exc.reason, exc.detail)
            continue
        if doc.id in seen:
            drop(f"{doc.id}#row{index}", "parse", "duplicate_id", f"id {doc.id} already seen in this partition")
            continue
        seen.add(doc.id)
        removed: list[dict] = []
        doc = _drop_bad_images(doc, settings.max_image_pixels, removed)
        out.removed_images.extend(removed)
        if removed and (reason := doc.emptiness_reason()):
            drop(doc.id, "images", removed[0]["reason"], f"all images unusable, {reason}")
            continue
        if (reason := doc.emptiness_reason()) is not None:
            drop(doc.id, "parse", reason)
            continue
        if langid is not None:
            prob = langid.probability(doc.text)
            if prob < settings.min_lang_prob:
                drop(doc.id, "lang", "lang", f"p(lang)={prob:.3f} < {settings.min_lang_prob}")
                continue
        outcome = remove_opted_out(doc, verdicts, settings.on_unchecked)
        out.removed_images.extend(
            {"id": doc.id, "url": url, "reason": "opt_out", "detail": source} for url, source in outcome.removed
        )
        if outcome.drop_reason:
            drop(doc.id, "opt_out", outcome.drop_reason, outcome.drop_detail)
            continue
        out.documents.append(outcome.document)
    return out


def partition_image_urls(path: Path) -> tuple[list[str], int]:
    """All image URLs of a partition's parseable rows (for the opt-out check), and its row count."""
    urls: list[str] = []
    n = 0
    for row in _rows_or_error(path):
        n += 1
        try:
            doc = parse_document(row)
        except SampleError:
            continue
        urls.extend(doc.image_urls())
    return urls, n
