"""Settings for turning documents into page samples (rendering, text, page selection, limits)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from curation.errors import UserError
from curation.images import DEFAULT_MAX_PIXELS

PAGE_SELECTIONS = ("all", "first", "random")
MODES = ("RGB", "L")
IMAGE_FORMATS = ("png", "jpeg")
OCR_ENGINES = ("none", "tesseract")


@dataclass(frozen=True)
class PdfSettings:
    """How pages are rendered and which are kept.

    Size: a page is rendered at `dpi` (None: as large as `max_side` allows), never with a side over
    `max_side`; when its short side would be under `min_side` it is enlarged as far as `max_side`
    permits, and a page that still falls short becomes a `page_too_small` failure.
    Selection: `all` pages, the `first` `num_pages`, or a `random` sample of `num_pages` seeded by
    (`seed`, document id). Documents over `max_doc_bytes` or `max_doc_pages` are `too_large`.
    Limits: each step in the worker (opening a document, producing one page) must finish within
    `time_limit_s`, and a whole document within `doc_time_limit_s` of the worker's time (so that a
    document of thousands of slow pages cannot hold its partition for days); the worker's address
    space is capped at `memory_limit_mb`.
    """

    max_side: int = 980
    min_side: int = 0
    dpi: float | None = None
    mode: str = "RGB"
    image_format: str = "png"
    jpeg_quality: int = 90
    page_selection: str = "all"
    num_pages: int = 1
    seed: int = 0
    max_doc_pages: int = 5000
    max_doc_bytes: int = 128 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    ocr: str = "none"
    ocr_lang: str = "eng"
    ocr_dpi: float = 300.0
    ocr_max_side: int = 4000
    time_limit_s: float = 60.0
    doc_time_limit_s: float = 900.0
    memory_limit_mb: int = 2048

    def __post_init__(self) -> None:
        if self.max_side < 1 or self.min_side < 0 or self.min_side > self.max_side:
            raise UserError(f"need 0 <= min_side <= max_side and max_side >= 1, got {self.min_side}, {self.max_side}")
        if self.dpi is not None and self.dpi <= 0:
            raise UserError(f"dpi must be positive, got {self.dpi}")
        for name, value, allowed in (
            ("mode", self.mode, MODES),
            ("image_format", self.image_format, IMAGE_FORMATS),
            ("page_selection", self.page_selection, PAGE_SELECTIONS),
            ("ocr", self.ocr, OCR_ENGINES),
        ):
            if value not in allowed:
                raise UserError(f"{name} must be one of {allowed}, got {value!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise UserError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.num_pages < 1 or self.max_doc_pages < 1 or self.max_doc_bytes < 1:
            raise UserError("num_pages, max_doc_pages and max_doc_bytes must be positive")
        if self.time_limit_s <= 0 or self.doc_time_limit_s <= 0 or self.memory_limit_mb < 64:
            raise UserError("time_limit_s and doc_time_limit_s must be positive and memory_limit_mb at least 64")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PdfSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UserError(f"unknown PDF settings: {sorted(unknown)}")
        return cls(**values)
