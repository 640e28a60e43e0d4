"""The per-partition cleaning pass for OBELICS documents: parse, image checks, language id, opt-out.

It is a pure function of the partition's rows and the run's settings, so every pipeline phase can rerun
it and get the same documents; only the perplexity selection is applied after it. The input count is
the file's own row count; rows that cannot be read are ledgered `unreadable_input` one by one (ids
`<partition>#row<N>`), so every row is either a document or a ledger entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curation.documents import InterleavedDocument, parse_document
from curation.errors import SampleError
from curation.images import DEFAULT_MAX_PIXELS, open_image
from curation.langid import LanguageIdentifier
from curation.ledger import LedgerEntry
from curation.optout import OnUnchecked, OptOutVerdicts, remove_opted_out
from curation.readers import UnreadableRows, count_rows, iter_rows_checked
from curation.storage import StoragePath


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


def clean_partition(
    path: StoragePath,
    partition: str,
    settings: CleaningSettings,
    verdicts: OptOutVerdicts,
    langid: LanguageIdentifier | None = None,
) -> CleanedPartition:
    out = CleanedPartition(partition)
    seen: set[str] = set()

    def drop(doc_id: str, stage: str, reason: str, detail: str = "") -> None:
        out.ledger.append(LedgerEntry(doc_id, partition, stage, reason, detail))

    out.n_input = count_rows(path).units
    index = 0
    for row in iter_rows_checked(path):
        if isinstance(row, UnreadableRows):
            for row_id in row.ledger_ids(partition):
                drop(row_id, "read", "unreadable_input", row.detail)
            index = row.indices().stop
            continue
        index += 1
        try:
            doc = parse_document(row)
        except SampleError as exc:
            drop(_row_id(partition, index - 1, row), "parse", exc.reason, exc.detail)
            continue
        if doc.id in seen:
            drop(f"{doc.id}#row{index - 1}", "parse", "duplicate_id", f"id {doc.id} already seen in this partition")
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


def partition_image_urls(path: StoragePath) -> list[str]:
    """All image URLs of a partition's parseable rows (for the opt-out check).

    Raises UnreadableInputError for a file that cannot be read at all.
    """
    urls: list[str] = []
    for row in iter_rows_checked(path):
        if isinstance(row, UnreadableRows):
            continue  # ledgered by the cleaning pass
        try:
            doc = parse_document(row)
        except SampleError:
            continue
        urls.extend(doc.image_urls())
    return urls
