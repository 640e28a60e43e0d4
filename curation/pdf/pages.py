"""PDF page samples: the WebDataset format of `curate pdfs`, and the result of processing one document.

One sample per page, one image per sample (so `datasets.load_dataset("webdataset", ...)` loads it):

    <key>.png | <key>.jpg   the rendered page (PNG or JPEG, mode RGB or L)
    <key>.txt               the page text, UTF-8: its lines joined by "\\n"
    <key>.json              {
                              "doc_id": str,          document id (see curation.pdf.sources)
                              "page_index": int,      0-based page in the document
                              "page_count": int,      pages in the document
                              "source": str,          where the document came from (file, or shard:key)
                              "source_kind": str,     pdf | tiff | image
                              "text_source": str,     annotation | transcription | text_layer | tesseract | none
                              "render": {"dpi": float, "width": int, "height": int,
                                         "mode": "RGB" | "L", "format": "png" | "jpeg", "quality": int},
                              "lines": {"text": [str], "box": [[x0, y0, x1, y1]]},
                              "words": {"text": [str], "box": [[x0, y0, x1, y1]]}
                            }

`key = sample_key(f"{doc_id}_p{page_index:05d}")` (see curation.shards: distinct ids, distinct keys).
Boxes are fractions of the rendered image (origin top-left, page rotation applied), clamped to [0, 1];
`lines`/`words` list only entries whose box is known (empty lists otherwise), while the text holds every line.
`dpi` is the effective resolution of a rendered PDF page; for TIFF/image pages it is 0.0 (their resolution is not known). `quality` is the
JPEG quality setting (0 for PNG).

Failures name the page (None for the whole document) with a ledger reason of stage `pdf` (the
reasons and what they mean: the ledger table in docs/formats.md).
After a timeout or crash on page k, page k and every selected page after it get that reason.
Pages with no text anywhere are kept, with empty text and `text_source` "none".
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from curation.errors import Rejection
from curation.pdf.settings import PdfSettings
from curation.pdf.text import Span

if TYPE_CHECKING:
    from curation.ledger import LedgerEntry

# curation.shards and curation.ledger are imported where used: they load pyarrow, which the worker
# process (it imports this module) would otherwise carry for nothing.

LEDGER_STAGE = "pdf"


def page_key(doc_id: str, page_index: int) -> str:
    from curation.shards import sample_key

    return sample_key(f"{doc_id}_p{page_index:05d}")


@dataclass
class SourceItem:
    """One document. `data` is empty when the document was not read because it is over the size cap."""

    doc_id: str
    source: str
    kind: str  # pdf | tiff | image | none (a shard sample with no document member)
    data: bytes
    size: int
    annotation: bytes | None = None  # OCR JSON
    transcription: str | None = None


def _block(spans: list[Span]) -> dict[str, list]:
    return {"text": [s.text for s in spans], "box": [list(s.box) for s in spans]}


@dataclass
class PageSample:
    doc_id: str
    page_index: int
    page_count: int
    source: str
    source_kind: str
    image: bytes
    image_ext: str  # png | jpg
    width: int
    height: int
    dpi: float
    mode: str
    text: str
    text_source: str
    lines: list[Span] = field(default_factory=list)
    words: list[Span] = field(default_factory=list)
    jpeg_quality: int = 0

    @property
    def key(self) -> str:
        return page_key(self.doc_id, self.page_index)

    @property
    def id(self) -> str:
        """The page's ledger id (its shard key), as cleaning steps name their samples."""
        return self.key

    def metadata(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "page_index": self.page_index,
            "page_count": self.page_count,
            "source": self.source,
            "source_kind": self.source_kind,
            "text_source": self.text_source,
            "render": {
                "dpi": float(self.dpi),
                "width": self.width,
                "height": self.height,
                "mode": self.mode,
                "format": "jpeg" if self.image_ext == "jpg" else "png",
                "quality": self.jpeg_quality,
            },
            "lines": _block(self.lines),
            "words": _block(self.words),
        }

    def to_wds(self) -> dict[str, Any]:
        """The WebDataset sample (`__key__` plus one bytes entry per extension)."""
        return {
            "__key__": self.key,
            self.image_ext: self.image,
            "txt": self.text.encode("utf-8"),
            "json": json.dumps(self.metadata(), ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        }


class PageFailure(NamedTuple):
    """A page that gives no sample (`page` None: the whole document), and why."""

    page: int | None
    rejection: Rejection

    @property
    def reason(self) -> str:
        return self.rejection.reason

    @property
    def detail(self) -> str:
        return self.rejection.detail

    def message(self) -> dict[str, Any]:
        """The failure as JSON values, as the worker process sends it."""
        return {"page": self.page, "reason": self.reason, "detail": self.detail}


@dataclass
class DocumentResult:
    doc_id: str
    page_count: int | None = None
    pages: list[PageSample] = field(default_factory=list)
    failures: list[PageFailure] = field(default_factory=list)

    def ledger_entries(self, partition: str, stage: str = LEDGER_STAGE) -> list[LedgerEntry]:
        """One entry per failure (see `failure_entry`)."""
        return [failure_entry(self.doc_id, failure, partition, stage) for failure in self.failures]


def failure_entry(doc_id: str, failure: PageFailure, partition: str, stage: str = LEDGER_STAGE) -> LedgerEntry:
    """The ledger entry of a failure: its id is the page key, or the document id for a whole-document failure."""
    from curation.ledger import LedgerEntry

    item = doc_id if failure.page is None else page_key(doc_id, failure.page)
    return LedgerEntry.of(failure.rejection, partition, stage, item)


def select_pages(page_count: int, doc_id: str, settings: PdfSettings) -> list[int]:
    """Page indices to render, ascending; a random sample is seeded by (seed, doc_id), so reruns agree."""
    if settings.page_selection == "all":
        return list(range(page_count))
    wanted = min(settings.num_pages, page_count)
    if settings.page_selection == "first":
        return list(range(wanted))
    rng = random.Random(f"{settings.seed}:{doc_id}")
    return sorted(rng.sample(range(page_count), wanted))
