"""Page text with boxes: from a shard's OCR JSON (PDFA / IDL forms), a transcription, or a PDF text layer.

Boxes are `[x0, y0, x1, y1]` fractions of the rendered page (origin top-left, page rotation applied),
clamped to [0, 1]. Source annotations store `[x, y, w, h]` fractions; they are converted.
"""

from __future__ import annotations

import ctypes
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from curation.errors import SampleError
from curation.untrusted_json import loads as load_json

Box = tuple[float, float, float, float]
BOX_DIGITS = 5
_HYPHEN_MARK = "\x02"  # PDFium's code for a hyphen that ends a line


@dataclass(frozen=True)
class Span:
    text: str
    box: Box


@dataclass
class PageText:
    """A page's text (lines joined by newlines) and the lines/words whose boxes are known."""

    text: str
    source: str  # annotation | transcription | text_layer | tesseract | none
    lines: list[Span] = field(default_factory=list)
    words: list[Span] = field(default_factory=list)


NO_TEXT = PageText("", "none")


def _unit(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else round(value, BOX_DIGITS)


def clamp_box(x0: float, y0: float, x1: float, y1: float) -> Box:
    """`[x0, y0, x1, y1]` with x0 <= x1 and y0 <= y1, each clamped to [0, 1] and rounded."""
    if x0 > x1:
        x0, x1 = x1, x0
    if y0 > y1:
        y0, y1 = y1, y0
    return _unit(x0), _unit(y0), _unit(x1), _unit(y1)


def _xywh_box(raw: Any) -> Box | None:
    if not isinstance(raw, (list, tuple)) or len(raw) != 4:
        return None
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in raw):
        return None
    x, y, w, h = raw
    return clamp_box(x, y, x + w, y + h)


def _spans(block: Any) -> tuple[list[str], list[Span]]:
    """Texts and boxed spans of a `{text: [...], bbox: [[x, y, w, h], ...]}` block."""
    if not isinstance(block, dict):
        return [], []
    texts = block.get("text") or []
    boxes = block.get("bbox") or []
    if isinstance(texts, str):
        texts = texts.splitlines()
    if not isinstance(texts, list) or not isinstance(boxes, list):
        raise SampleError("bad_annotation", "text/bbox are not lists")
    texts = [t if isinstance(t, str) else "" for t in texts]
    spans = []
    for i, text in enumerate(texts):
        box = _xywh_box(boxes[i]) if i < len(boxes) else None
        if box is not None:
            spans.append(Span(text, box))
    return texts, spans


def _annotation_page(page: Any) -> PageText:
    if not isinstance(page, dict):
        raise SampleError("bad_annotation", f"page entry is {type(page).__name__}, not an object")
    if "lines" in page:  # PDFA form: lines and words blocks
        line_texts, lines = _spans(page["lines"])
        _, words = _spans(page.get("words"))
    else:  # IDL form: the page itself is the lines block
        line_texts, lines = _spans(page)
        words = []
    return PageText("\n".join(line_texts), "annotation", lines, words)


def parse_annotation(payload: bytes) -> dict[int, PageText]:
    """Per-page text of an OCR JSON: `{"pages": [...]}` (PDFA or IDL form), or one page's object.

    Pages without any text are left out, so they fall back to the next text source.
    Raises SampleError(`bad_annotation`) for JSON that is unreadable or of another shape.
    """
    try:
        document = load_json(payload)
    except ValueError as exc:
        raise SampleError("bad_annotation", f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SampleError("bad_annotation", "top level is not an object")
    pages = document.get("pages")
    if pages is None:
        if not ("lines" in document or "text" in document):
            return {}
        pages = [document]
    if not isinstance(pages, list):
        raise SampleError("bad_annotation", "`pages` is not a list")
    parsed = {i: _annotation_page(page) for i, page in enumerate(pages)}
    return {i: page for i, page in parsed.items() if page.text.strip()}


def transcription_text(text: str) -> PageText:
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    return PageText("\n".join(lines), "transcription")


class _PageToUnit:
    """The affine map from PDF user space to [0, 1] coordinates of the rendered page (rotation applied)."""

    RESOLUTION = 1_000_000

    def __init__(self, page: pdfium.PdfPage):
        origin = self._device(page, 0.0, 0.0)
        along_x = self._device(page, 1000.0, 0.0)
        along_y = self._device(page, 0.0, 1000.0)
        self.origin = origin
        self.dx = ((along_x[0] - origin[0]) / 1000.0, (along_x[1] - origin[1]) / 1000.0)
        self.dy = ((along_y[0] - origin[0]) / 1000.0, (along_y[1] - origin[1]) / 1000.0)

    def _device(self, page: pdfium.PdfPage, x: float, y: float) -> tuple[float, float]:
        out_x, out_y = ctypes.c_int(), ctypes.c_int()
        size = self.RESOLUTION
        pdfium_c.FPDF_PageToDevice(page.raw, 0, 0, size, size, 0, x, y, out_x, out_y)
        return out_x.value / size, out_y.value / size

    def box(self, left: float, bottom: float, right: float, top: float) -> Box:
        (ox, oy), (xx, xy), (yx, yy) = self.origin, self.dx, self.dy
        return clamp_box(
            ox + left * xx + bottom * yx,
            oy + left * xy + bottom * yy,
            ox + right * xx + top * yx,
            oy + right * xy + top * yy,
        )


_TOKENS = re.compile(r"\r\n|[\r\n]|\S+")
PageBox = tuple[float, float, float, float]  # left, bottom, right, top in PDF user space


def _page_chars(textpage: Any, count: int) -> str:
    """The character at each index of the text page (one call; per character if that does not line up)."""
    buffer = (ctypes.c_ushort * (count + 1))()
    units = pdfium_c.FPDFText_GetText(textpage, 0, count, buffer)
    text = bytes(buffer)[: max(0, units - 1) * 2].decode("utf-16-le", errors="replace")
    if len(text) == count:
        return text
    return "".join(chr(pdfium_c.FPDFText_GetUnicode(textpage, i) or 0x20) for i in range(count))


def _clean(token: str) -> str:
    return "".join("-" if c == _HYPHEN_MARK else c for c in token if c.isprintable() or c == _HYPHEN_MARK)


def _range_box(textpage: Any, start: int, length: int) -> PageBox | None:
    """The union of PDFium's rectangles for a run of characters, or None when it has none."""
    left, top, right, bottom = ctypes.c_double(), ctypes.c_double(), ctypes.c_double(), ctypes.c_double()
    box = None
    for i in range(pdfium_c.FPDFText_CountRects(textpage, start, length)):
        if not pdfium_c.FPDFText_GetRect(textpage, i, left, top, right, bottom):
            continue
        rect = (left.value, bottom.value, right.value, top.value)
        box = rect if box is None else _union([box, rect])
    return box


def _union(boxes: list[PageBox]) -> PageBox:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def text_layer(page: pdfium.PdfPage) -> PageText:
    """The page's embedded text: PDFium's reading order and line breaks, words split at whitespace.

    Words drawn outside the visible page are left out: they are not in the rendered image.
    """
    textpage = pdfium_c.FPDFText_LoadPage(page.raw)
    if not textpage:
        return NO_TEXT
    visible_left, visible_bottom, visible_right, visible_top = page.get_bbox()
    lines: list[list[tuple[str, PageBox | None]]] = [[]]
    try:
        chars = _page_chars(textpage, pdfium_c.FPDFText_CountChars(textpage))
        for match in _TOKENS.finditer(chars):
            token = match.group()
            if token[0] in "\r\n":
                if lines[-1]:
                    lines.append([])
                continue
            word = _clean(token)
            if not word:
                continue
            box = _range_box(textpage, match.start(), len(token))
            if box is not None:
                centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                if not (visible_left <= centre_x <= visible_right and visible_bottom <= centre_y <= visible_top):
                    continue
            lines[-1].append((word, box))
    finally:
        pdfium_c.FPDFText_ClosePage(textpage)

    to_unit = _PageToUnit(page)
    out_lines: list[Span] = []
    out_words: list[Span] = []
    texts: list[str] = []
    for line in lines:
        if not line:
            continue
        texts.append(" ".join(word for word, _ in line))
        boxes = [box for _, box in line if box is not None]
        out_words.extend(Span(word, to_unit.box(*box)) for word, box in line if box is not None)
        if boxes:
            out_lines.append(Span(texts[-1], to_unit.box(*_union(boxes))))
    if not texts:
        return NO_TEXT
    return PageText("\n".join(texts), "text_layer", out_lines, out_words)
