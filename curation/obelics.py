"""The per-partition cleaning pass for OBELICS documents: read, parse, then a list of cleaning steps.

The steps (`curation.obelics_steps`: image checks, language id, opt-out; then any the user adds, see
`curation.steps`) run on each parsed document in order. The pass is a pure function of the partition's
rows and the run's settings, so every pipeline phase can rerun it and get the same documents; only the
perplexity selection is applied after it. The input count is the file's own row count; rows that cannot
be read are ledgered `unreadable_input` one by one (ids `<partition>#row<N>`), so every row is either a
document or a ledger entry.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from curation.documents import InterleavedDocument, parse_document
from curation.errors import Rejection, SampleError
from curation.images import DEFAULT_MAX_PIXELS
from curation.langid import LanguageIdentifier
from curation.ledger import LedgerEntry
from curation.obelics_steps import ImageCheck, Interleaved, LanguageFilter, OptOut
from curation.optout import OnUnchecked, OptOutVerdicts
from curation.readers import UnreadableRows, count_rows, iter_rows_checked
from curation.steps import Step, Steps
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
    removed_images: list[dict] = field(default_factory=list)  # {id, url, reason, detail}
    n_input: int = 0


def _row_id(partition: str, index: int, row: object) -> str:
    if isinstance(row, dict) and isinstance(row.get("id"), (str, int)) and row.get("id") != "":
        return str(row["id"])
    return f"{partition}#row{index}"  # an unparseable row still gets a stable, traceable id


def cleaning_steps(
    settings: CleaningSettings,
    verdicts: OptOutVerdicts,
    langid: LanguageIdentifier | Path | None = None,
    extra: Sequence[Step[InterleavedDocument]] = (),
) -> Steps[InterleavedDocument]:
    """The cleaning chain: image checks, the interleaved check, language id (given a model), opt-out, then
    the `extra` steps in their order. Its fingerprint is what a run records of the cleaning."""
    steps: list[Step[InterleavedDocument]] = [ImageCheck(settings.max_image_pixels), Interleaved()]
    if langid is not None:
        steps.append(LanguageFilter(langid, settings.min_lang_prob))
    steps.append(OptOut(verdicts, settings.on_unchecked))
    return Steps([*steps, *extra])


def clean_partition(
    path: StoragePath,
    partition: str,
    settings: CleaningSettings,
    verdicts: OptOutVerdicts,
    langid: LanguageIdentifier | Path | None = None,
    steps: Sequence[Step[InterleavedDocument]] = (),
) -> CleanedPartition:
    """Read the rows, parse them into documents (one per id), and run the cleaning chain (with the extra
    `steps` at its end) on each; every row ends up a document or a ledger row."""
    chain = cleaning_steps(settings, verdicts, langid, steps)
    out = CleanedPartition(partition)
    out.n_input = count_rows(path).units
    for doc in _documents(path, partition, out.ledger):
        outcome = chain.run(doc, partition)
        out.removed_images.extend(outcome.removed)
        if outcome.dropped is not None:
            out.ledger.append(outcome.dropped)
        else:
            out.documents.append(outcome.sample)
    return out


def _documents(path: StoragePath, partition: str, ledger: list[LedgerEntry]) -> Iterator[InterleavedDocument]:
    """The partition's parsed documents, first of each id; unreadable, unparseable and repeated rows are ledgered."""
    seen: set[str] = set()
    index = 0
    for row in iter_rows_checked(path):
        if isinstance(row, UnreadableRows):
            ledger += [LedgerEntry(row_id, partition, "read", "unreadable_input", row.detail) for row_id in row.ledger_ids(partition)]
            index = row.indices().stop
            continue
        index += 1
        try:
            doc = parse_document(row)
        except SampleError as exc:
            ledger.append(LedgerEntry.of(exc.rejection, partition, "parse", _row_id(partition, index - 1, row)))
            continue
        if doc.id in seen:
            repeated = Rejection("duplicate_id", f"id {doc.id} already seen in this partition", f"{doc.id}#row{index - 1}")
            ledger.append(LedgerEntry.of(repeated, partition, "parse"))
            continue
        seen.add(doc.id)
        yield doc
