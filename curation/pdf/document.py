"""One document to page samples, in the calling process: open, select pages, render, attach text.

`iter_document` yields progress events so that the worker process can report each step as it
finishes (and its parent can time each step); `render_document` collects them. Neither isolates the
caller from PDFium: use `curation.pdf.worker.process_document` for untrusted input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.resources import files

import pypdfium2 as pdfium
from PIL import Image

from curation.errors import Rejection, SampleError
from curation.pdf.ocr import ocr_page
from curation.pdf.pages import DocumentResult, PageFailure, PageSample, SourceItem, select_pages
from curation.pdf.render import (
    POINTS_PER_INCH,
    encode_image,
    fit_raster,
    fit_size,
    open_raster,
    pdf_page_size,
    raster_frame,
    render_pdf_page,
)
from curation.pdf.settings import PdfSettings
from curation.pdf.text import NO_TEXT, PageText, parse_annotation, text_layer, transcription_text

# PDFium's FPDF_GetLastError codes for a document that does not open.
_LOAD_ERRORS = {
    pdfium.raw.FPDF_ERR_PASSWORD: ("encrypted", "needs a password"),
    pdfium.raw.FPDF_ERR_SECURITY: ("encrypted", "unsupported security handler"),
    pdfium.raw.FPDF_ERR_FORMAT: ("corrupt_pdf", "not a PDF or corrupted"),
    pdfium.raw.FPDF_ERR_FILE: ("corrupt_pdf", "unreadable file"),
}
_NO_CODE = ("zero_pages", "PDFium found no pages (empty page tree)")


def _load_error_code(data: bytes) -> int:
    try:
        pdfium.PdfDocument(data).close()
    except pdfium.PdfiumError as exc:
        return exc.err_code
    return pdfium.raw.FPDF_ERR_UNKNOWN  # loads now: not reproducible, call it unknown


def _failed_load_code(data: bytes) -> int | None:
    """The error code that loading `data` sets, or None when it sets none.

    PDFium refuses a document with an empty page tree without setting its last-error code, which then
    still holds an earlier document's code. So set a known code first (loading nothing gives FORMAT),
    and where the load leaves it unchanged, check again from a second known code (PASSWORD).
    """
    for sentinel in (b"", _locked_sentinel()):
        before = _load_error_code(sentinel)
        code = _load_error_code(data)
        if code != before:
            return code
    return None


# A one-page PDF locked with a user password (RC4): loading it sets the PASSWORD code. Shipped as
# package data so the library carries no PDF writer of its own.
_LOCKED_SENTINEL = files("curation.pdf") / "data" / "locked_sentinel.pdf"
_locked: bytes | None = None


def _locked_sentinel() -> bytes:
    global _locked
    if _locked is None:
        _locked = _LOCKED_SENTINEL.read_bytes()
    return _locked


def load_pdf(data: bytes) -> pdfium.PdfDocument:
    """Open PDF bytes; SampleError(`encrypted` / `corrupt_pdf` / `zero_pages`) when PDFium refuses them."""
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = _failed_load_code(data)
        reason, detail = _NO_CODE if code is None else _LOAD_ERRORS.get(code, ("corrupt_pdf", str(exc)))
        raise SampleError(reason, detail) from None


@dataclass(frozen=True)
class DocumentOpened:
    page_count: int
    selected: list[int]


DocumentEvent = DocumentOpened | PageSample | PageFailure


class _Document:
    """An open document: page count and, per page, the output image and its text."""

    kind: str
    page_count: int

    def page(self, index: int, settings: PdfSettings, find_text: bool) -> tuple[Image.Image, float, PageText]:
        """The output image, its effective DPI (0.0 when unknown) and, if `find_text`, the page's text."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _PdfDocument(_Document):
    kind = "pdf"

    def __init__(self, data: bytes):
        self.pdf = load_pdf(data)
        self.page_count = len(self.pdf)

    def page(self, index: int, settings: PdfSettings, find_text: bool) -> tuple[Image.Image, float, PageText]:
        try:
            page = self.pdf[index]
        except pdfium.PdfiumError as exc:
            raise SampleError("render_error", f"page does not load: {exc}") from None
        try:
            width, height = pdf_page_size(page, settings)
            image = render_pdf_page(page, width, height, settings.mode)
            text = text_layer(page) if find_text else NO_TEXT
            if find_text and not text.text.strip() and settings.ocr == "tesseract":
                page_w, page_h = page.get_size()
                scale = settings.ocr_dpi / POINTS_PER_INCH
                ocr_w, ocr_h = fit_size(page_w, page_h, scale, settings.ocr_max_side)
                text = ocr_page(render_pdf_page(page, ocr_w, ocr_h, "L"), settings.ocr_lang)
            return image, POINTS_PER_INCH * width / page.get_width(), text
        finally:
            page.close()

    def close(self) -> None:
        self.pdf.close()


class _RasterDocument(_Document):
    """A multi-page TIFF or a single page image: frames are pages."""

    def __init__(self, data: bytes, kind: str):
        self.kind = kind
        self.image = open_raster(data)
        try:
            self.page_count = getattr(self.image, "n_frames", 1)
        except MemoryError:
            raise
        except Exception as exc:  # counting TIFF frames walks the file
            raise SampleError("decode_error", f"{type(exc).__name__}: {exc}") from None

    def page(self, index: int, settings: PdfSettings, find_text: bool) -> tuple[Image.Image, float, PageText]:
        frame = raster_frame(self.image, index, settings.max_pixels)
        text = NO_TEXT
        if find_text and settings.ocr == "tesseract":
            ocr_w, ocr_h = fit_size(frame.width, frame.height, 1.0, settings.ocr_max_side)
            source = frame.convert("L")
            if (ocr_w, ocr_h) != source.size:
                source = source.resize((ocr_w, ocr_h), Image.Resampling.LANCZOS)
            text = ocr_page(source, settings.ocr_lang)
        return fit_raster(frame, settings), 0.0, text

    def close(self) -> None:
        self.image.close()


def _open(item: SourceItem) -> _Document:
    if item.kind == "pdf":
        return _PdfDocument(item.data)
    if item.kind in ("tiff", "image"):
        return _RasterDocument(item.data, item.kind)
    raise SampleError("no_document", "the sample holds no .pdf, .tif or image member")


def _page_text(
    index: int, document: _Document, annotations: dict[int, PageText], item: SourceItem, settings: PdfSettings
) -> tuple[Image.Image, float, PageText]:
    """Text from the annotation, else the transcription (single images), else the page itself."""
    if index in annotations:
        known = annotations[index]
    elif item.transcription is not None and item.transcription.strip() and document.kind == "image":
        known = transcription_text(item.transcription)
    else:
        return document.page(index, settings, find_text=True)
    image, dpi, _ = document.page(index, settings, find_text=False)
    return image, dpi, known


def iter_document(item: SourceItem, settings: PdfSettings) -> Iterator[DocumentEvent]:
    """DocumentOpened, then a PageSample or PageFailure per selected page; or one document failure."""
    if item.size > settings.max_doc_bytes:
        yield PageFailure(None, Rejection("too_large", f"{item.size} bytes, over the {settings.max_doc_bytes} byte cap"))
        return
    try:
        annotations = parse_annotation(item.annotation) if item.annotation else {}
        document = _open(item)
    except SampleError as exc:
        yield PageFailure(None, exc.rejection)
        return
    except MemoryError:
        yield PageFailure(None, Rejection("memory_limit", "out of memory while opening"))
        return
    try:
        if document.page_count == 0:
            yield PageFailure(None, Rejection("zero_pages", "the document has no pages"))
            return
        if document.page_count > settings.max_doc_pages:
            detail = f"{document.page_count} pages, over the {settings.max_doc_pages} page cap"
            yield PageFailure(None, Rejection("too_large", detail))
            return
        selected = select_pages(document.page_count, item.doc_id, settings)
        yield DocumentOpened(document.page_count, selected)
        for index in selected:
            yield _page_event(index, document, annotations, item, settings)
    finally:
        document.close()


def _page_event(
    index: int, document: _Document, annotations: dict[int, PageText], item: SourceItem, settings: PdfSettings
) -> PageSample | PageFailure:
    try:
        image, dpi, text = _page_text(index, document, annotations, item, settings)
        payload, ext = encode_image(image, settings)
    except SampleError as exc:
        return PageFailure(index, exc.rejection)
    except MemoryError:
        return PageFailure(index, Rejection("memory_limit", "out of memory while rendering"))
    except Exception as exc:  # a malformed page must not end the document
        return PageFailure(index, Rejection("render_error", f"{type(exc).__name__}: {exc}"))
    return PageSample(
        doc_id=item.doc_id,
        page_index=index,
        page_count=document.page_count,
        source=item.source,
        source_kind=document.kind,
        image=payload,
        image_ext=ext,
        width=image.width,
        height=image.height,
        dpi=round(dpi, 3),
        mode=image.mode,
        text=text.text,
        text_source=text.source,
        lines=text.lines,
        words=text.words,
        jpeg_quality=settings.jpeg_quality if ext == "jpg" else 0,
    )


def collect_events(doc_id: str, events: Iterable[DocumentEvent]) -> DocumentResult:
    """A document's events gathered into one result (every page held: for small documents and tests)."""
    result = DocumentResult(doc_id)
    for event in events:
        if isinstance(event, DocumentOpened):
            result.page_count = event.page_count
        elif isinstance(event, PageSample):
            result.pages.append(event)
        else:
            result.failures.append(event)
    return result


def render_document(item: SourceItem, settings: PdfSettings) -> DocumentResult:
    """All of `iter_document`, collected (in this process: no time or memory limit)."""
    return collect_events(item.doc_id, iter_document(item, settings))
