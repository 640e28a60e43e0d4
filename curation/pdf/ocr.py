"""OCR of page images with tesseract (through pytesseract), to lines and words with normalised boxes.

Tesseract's OpenMP threads oversubscribe a machine where every core already runs a worker, which
makes parallel OCR many times slower; it runs with OMP_THREAD_LIMIT=1 unless the environment says
otherwise.
"""

from __future__ import annotations

import os
import shutil

from PIL import Image

from curation.errors import SampleError
from curation.pdf.text import PageText, Span, clamp_box


def require_tesseract() -> None:
    """Fail fast (before a run) when OCR is asked for but the tesseract binary is missing."""
    if shutil.which("tesseract") is None:
        raise RuntimeError("--ocr tesseract needs the tesseract binary: apt-get install tesseract-ocr tesseract-ocr-eng")


def ocr_page(image: Image.Image, lang: str = "eng") -> PageText:
    """Lines (tesseract's own line grouping) joined by newlines, with word and line boxes."""
    import pytesseract  # imported on first use: it pulls in pandas, which a worker without OCR does not need

    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # inherited by the tesseract subprocess
    try:
        data = pytesseract.image_to_data(image, lang=lang, output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractNotFoundError:
        raise SampleError("ocr_unavailable", "the tesseract binary is not installed") from None
    except pytesseract.TesseractError as exc:
        raise SampleError("ocr_error", str(exc)) from None
    width, height = image.size
    lines: dict[tuple[int, int, int], list[Span]] = {}
    for i, word in enumerate(data["text"]):
        word = word.strip()
        if data["level"][i] != 5 or not word:
            continue
        left, top, right, bottom = (
            data["left"][i],
            data["top"][i],
            data["left"][i] + data["width"][i],
            data["top"][i] + data["height"][i],
        )
        box = clamp_box(left / width, top / height, right / width, bottom / height)
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        lines.setdefault(key, []).append(Span(word, box))
    out_lines, out_words = [], []
    for words in lines.values():  # insertion order is tesseract's reading order
        out_words.extend(words)
        box = clamp_box(
            min(w.box[0] for w in words),
            min(w.box[1] for w in words),
            max(w.box[2] for w in words),
            max(w.box[3] for w in words),
        )
        out_lines.append(Span(" ".join(w.text for w in words), box))
    if not out_lines:
        return PageText("", "tesseract")
    return PageText("\n".join(line.text for line in out_lines), "tesseract", out_lines, out_words)
