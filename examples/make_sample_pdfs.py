"""Rebuild the bundled PDF demo inputs in examples/pdfs/ (seconds, deterministic).

python -m examples.make_sample_pdfs

files/              loose PDFs: a multi-page report (several page sizes, a rotated page, a photo),
                    a scanned letter with no text layer (needs --ocr tesseract), and two that the
                    ledger must catch: a password-protected file and a corrupt one
pdfa/               a PDFA-style shard (`.pdf` + `.json` with pages[].lines/words, [x, y, w, h] boxes)
idl/                an IDL-style shard (`.pdf` + flat pages[].{text,bbox,score} JSON, and a scan kept
                    only as a multi-page `.tif`)
rendered_text/      an image + transcription shard, as in Rendered Text (`.png` + `.txt`)
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

from PIL import Image, ImageDraw

from curation.pdf.document import render_document
from curation.pdf.pages import SourceItem
from curation.pdf.settings import PdfSettings
from curation.pdf.text import Box, PageText
from examples.assets import english_paragraphs
from tests.fixtures.pdf_writer import SyntheticPage, build_pdf, jpeg_bytes, scanned_page, text_image_with_boxes

HERE = Path(__file__).resolve().parent
CHARS_PER_LINE = 80


def _wrap(paragraph: str, width: int = CHARS_PER_LINE) -> list[str]:
    lines, current = [], ""
    for word in paragraph.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return lines + [current] if current else lines


def _lines(prose: list[str], start: int, count: int, width: int = CHARS_PER_LINE) -> list[str]:
    """`count` wrapped lines of prose from paragraph `start` on (Latin-1 only: the PDFs use Helvetica)."""
    lines: list[str] = []
    for paragraph in prose[start:]:
        lines += _wrap(paragraph.encode("latin-1", errors="replace").decode("latin-1"), width)
        if len(lines) >= count:
            break
    return lines[:count]


def _photo(size: int = 96) -> bytes:
    image = Image.new("RGB", (size, size), (40, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(240, 200, 40))
    return jpeg_bytes(image)


def _report(prose: list[str]) -> bytes:
    pages = [
        SyntheticPage(lines=["Annual report"] + _lines(prose, 0, 30), font_size=11),
        SyntheticPage(595.0, 842.0, lines=_lines(prose, 10, 40), font_size=10),
        SyntheticPage(842.0, 595.0, lines=["A landscape page with a figure"], image=_photo(), image_box=(300, 150, 240, 240)),
        SyntheticPage(500.0, 300.0, lines=["This page is stored rotated by 90 degrees"], rotate=90),
    ]
    return build_pdf(pages)


def _xywh(box: Box) -> list[float]:
    x0, y0, x1, y1 = box
    return [round(x0, 6), round(y0, 6), round(x1 - x0, 6), round(y1 - y0, 6)]


def _pdfa_page(text: PageText) -> dict:
    """A PDFA-style page entry from extracted lines/words (words are matched to lines in order)."""
    word_slice, line_pos, cursor = [], [], 0
    for line_no, line in enumerate(text.lines):
        count = len(line.text.split())
        word_slice.append([cursor, cursor + count])
        line_pos.extend([[line_no, i] for i in range(count)])
        cursor += count
    return {
        "images_bbox": [],
        "images_bbox_no_text_overlap": [],
        "lines": {
            "text": [s.text for s in text.lines],
            "bbox": [_xywh(s.box) for s in text.lines],
            "score": [1.0] * len(text.lines),
            "word_slice": word_slice,
        },
        "words": {
            "text": [s.text for s in text.words],
            "bbox": [_xywh(s.box) for s in text.words],
            "line_pos": line_pos,
            "score": [1.0] * len(text.words),
        },
    }


def _idl_page(lines: list[str], boxes: list[list[float]]) -> dict:
    return {"text": lines, "bbox": boxes, "score": [0.99] * len(lines)}


def _extracted(pdf: bytes) -> list[PageText]:
    result = render_document(SourceItem("x", "x", "pdf", pdf, len(pdf)), PdfSettings(max_side=64))
    return [PageText(p.text, p.text_source, p.lines, p.words) for p in result.pages]


def _write_tar(path: Path, samples: list[dict[str, str | bytes]]) -> None:
    """A webdataset tar: each sample's `__key__` (str) names its members (bytes), one per extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            key = sample["__key__"]
            assert isinstance(key, str)
            for ext, payload in sample.items():
                if ext == "__key__":
                    continue
                assert isinstance(payload, bytes)
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mode, info.mtime = len(payload), 0o644, 0
                tar.addfile(info, io.BytesIO(payload))


def _tiff(frames: list[Image.Image]) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:], compression="tiff_deflate")
    return buffer.getvalue()


def build(out: Path) -> list[Path]:
    prose = english_paragraphs()
    written = []

    def save(path: Path, payload: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        written.append(path)

    letter = ["Dear reader,", "this letter was scanned", "and has no text layer.", "Kind regards"]
    save(out / "files" / "report.pdf", _report(prose))
    save(out / "files" / "scanned_letter.pdf", build_pdf([scanned_page(letter)]))
    save(out / "files" / "locked.pdf", build_pdf([SyntheticPage(lines=["confidential"])], user_password="demo"))
    save(out / "files" / "broken.pdf", build_pdf([SyntheticPage(lines=["cut short"])])[:400])

    pdfa_samples: list[dict[str, str | bytes]] = []
    for n in range(3):
        lines = _lines(prose, 20 + 10 * n, 48)
        pdf = build_pdf([SyntheticPage(lines=lines[:24]), SyntheticPage(lines=lines[24:])])
        annotation = {"pages": [_pdfa_page(page) for page in _extracted(pdf)]}
        pdfa_samples.append({"__key__": f"{1000 + n:07d}", "pdf": pdf, "json": json.dumps(annotation).encode()})
    _write_tar(out / "pdfa" / "pdfa-eng-sample-0000.tar", pdfa_samples)
    written.append(out / "pdfa" / "pdfa-eng-sample-0000.tar")

    memo = build_pdf([SyntheticPage(lines=_lines(prose, 60, 15))])
    memo_pages = _extracted(memo)
    memo_json = {"pages": [_idl_page([s.text for s in p.lines], [_xywh(s.box) for s in p.lines]) for p in memo_pages]}
    scan_pages = [_lines(prose, 70, 6, width=40), ["Page two of the scan", "Total: 1,234.56"]]
    scans = [text_image_with_boxes(lines, font_size=28) for lines in scan_pages]
    scan_json = {"pages": [_idl_page(lines, [list(b) for b in boxes]) for lines, (_, boxes) in zip(scan_pages, scans)]}
    _write_tar(
        out / "idl" / "idl-sample-00000.tar",
        [
            {"__key__": "idl_memo_0001", "pdf": memo, "json": json.dumps(memo_json).encode()},
            {
                "__key__": "idl_scan_0002",
                "tif": _tiff([image for image, _ in scans]),
                "json": json.dumps(scan_json).encode(),
            },
        ],
    )
    written.append(out / "idl" / "idl-sample-00000.tar")

    rendered: list[dict[str, str | bytes]] = []
    for n in range(3):
        lines = _lines(prose, 80 + n, 5, width=32)
        image, _ = text_image_with_boxes(lines, font_size=30, mode="RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        rendered.append({"__key__": f"rendered_{n:04d}", "png": buffer.getvalue(), "txt": "\n".join(lines).encode()})
    _write_tar(out / "rendered_text" / "rendered-sample-000000.tar", rendered)
    written.append(out / "rendered_text" / "rendered-sample-000000.tar")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "pdfs")
    for path in build(parser.parse_args().out):
        print(f"{path.stat().st_size:>8} bytes  {path}")


if __name__ == "__main__":
    main()
