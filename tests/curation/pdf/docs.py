"""Documents and shards built in the tests."""

import io
import json
import tarfile
from pathlib import Path

from PIL import Image

from curation.pdf.pages import SourceItem
from tests.fixtures.pdf_writer import SyntheticPage, build_pdf, jpeg_bytes, scanned_page

PANGRAM = ["The quick brown fox jumps", "over the lazy dog 12345."]
SIZES = [(612.0, 792.0), (595.0, 842.0), (842.0, 595.0), (300.0, 150.0), (2000.0, 300.0)]


def item(data: bytes, doc_id: str = "doc", kind: str = "pdf", **extra) -> SourceItem:
    return SourceItem(doc_id, f"{doc_id}.{kind}", kind, data, len(data), **extra)


def text_lines(page_no: int, count: int = 3) -> list[str]:
    return [f"Page {page_no} line {i} says hello to the renderer" for i in range(count)]


def mixed_pdf() -> tuple[bytes, list[SyntheticPage]]:
    """Several page sizes, a rotated page, an embedded photo and a scanned (image-only) page."""
    pages = [SyntheticPage(w, h, lines=text_lines(i, 1 if h < 400 else 3), font_size=10) for i, (w, h) in enumerate(SIZES)]
    pages.append(SyntheticPage(400.0, 300.0, lines=["Turned sideways"], rotate=90))
    pages.append(SyntheticPage(400.0, 300.0, lines=["Upside down"], rotate=180))
    red = jpeg_bytes(Image.new("RGB", (64, 64), (220, 20, 20)))
    pages.append(SyntheticPage(lines=["A red square below"], image=red, image_box=(100.0, 100.0, 300.0, 300.0)))
    pages.append(scanned_page(PANGRAM))
    return build_pdf(pages), pages


def slow_page(strokes: int = 100_000) -> SyntheticPage:
    """A page that takes PDFium seconds to draw: many long anti-aliased strokes."""
    ops = b"\n".join(b"%d %d m %d %d l S" % (i % 600, i * 7 % 790, i * 13 % 600, i * 3 % 790) for i in range(strokes))
    return SyntheticPage(extra_content=ops)


def write_tar(path: Path, samples: list[dict[str, str | bytes]]) -> Path:
    """A webdataset tar: each sample's `__key__` (str) names its members (bytes), one per extension."""
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            key = sample["__key__"]
            assert isinstance(key, str)
            for ext, payload in sample.items():
                if ext == "__key__":
                    continue
                assert isinstance(payload, bytes)
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


def pdfa_json(pages: list[list[tuple[str, list[float]]]]) -> bytes:
    """PDFA form: per page, lines (text + [x, y, w, h]) and the words of each line."""
    out = []
    for lines in pages:
        words_text, words_box = [], []
        for text, (x, y, w, h) in lines:
            parts = text.split()
            step = w / len(parts)
            for j, part in enumerate(parts):
                words_text.append(part)
                words_box.append([x + j * step, y, step * 0.9, h])
        out.append(
            {
                "images_bbox": [],
                "images_bbox_no_text_overlap": [],
                "lines": {
                    "text": [t for t, _ in lines],
                    "bbox": [b for _, b in lines],
                    "score": [1.0] * len(lines),
                    "word_slice": [],
                },
                "words": {"text": words_text, "bbox": words_box, "line_pos": [], "score": [1.0] * len(words_text)},
            }
        )
    return json.dumps({"pages": out}).encode()


def idl_json(pages: list[list[tuple[str, list[float]]]]) -> bytes:
    """IDL form: per page, flat `text` (lines), `bbox` and `score` lists."""
    flat = [{"text": [t for t, _ in lines], "bbox": [b for _, b in lines], "score": [0.99] * len(lines)} for lines in pages]
    return json.dumps({"pages": flat}).encode()


def multipage_tiff(frames: list[Image.Image]) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:], compression="tiff_deflate")
    return buffer.getvalue()
