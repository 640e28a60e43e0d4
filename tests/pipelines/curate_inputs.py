"""Small generated inputs for driving `curate` end to end: OBELICS parquet with image bytes, folders of PDFs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from tests.fixtures.pdf_writer import SyntheticPage, build_pdf

PROSE = "The function returns a new list containing the items of the sequence in sorted order."
FORMATS = ("PNG", "JPEG", "WEBP")


def encoded(seed: int, fmt: str, size: tuple[int, int] = (24, 18)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _document(part: int, n: int, url_only: bool) -> dict:
    """1 to 4 image nodes, each with a text node before or after it; metadata keys vary between images."""
    texts, images, metadata = [], [], []
    for node in range(1 + n % 4):
        url = f"https://img.example/{part}/{n}/{node}"
        image = {"bytes": None if url_only else encoded(100 * part + 10 * n + node, FORMATS[node % 3]), "path": url}
        meta = {"src": url, **({"alt_text": "alt"} if node % 2 else {})}
        nodes = [(None, image, meta), (f"{PROSE} Part {part} document {n} node {node}.", None, None)]
        for text, img, m in nodes if n % 2 == 0 else nodes[::-1]:
            texts.append(text)
            images.append(img)
            metadata.append(m)
    general = {"url": f"https://site.example/{part}/{n}", **({"warc_record_offset": n} if n % 3 else {})}
    return {
        "id": f"doc-{part}-{n}",
        "texts": texts,
        "images": images,
        "metadata": json.dumps(metadata),
        "general_metadata": json.dumps(general),
    }


def write_obelics(folder: Path, partitions: int = 2, docs: int = 14, url_only_first: int = 0) -> None:
    """OBELICS-schema parquet, images as `{"bytes", "path"}` structs; the first `url_only_first` documents of
    the first partition carry URLs only."""
    folder.mkdir(parents=True)
    for part in range(partitions):
        rows = [_document(part, n, url_only=part == 0 and n < url_only_first) for n in range(docs)]
        pq.write_table(pa.Table.from_pylist(rows), folder / f"part-{part}.parquet")


def write_pdfs(folder: Path, blank: int = 3, with_text: int = 3) -> None:
    """`blank` two-page documents without text (sorted first), then `with_text` two-page documents."""
    folder.mkdir(parents=True)
    for i in range(blank):
        (folder / f"a-blank{i}.pdf").write_bytes(build_pdf([SyntheticPage(lines=[])] * 2))
    for i in range(with_text):
        pages = [SyntheticPage(lines=[f"Document {i} page {p} in {folder.name}", "A second line."]) for p in range(2)]
        (folder / f"b-text{i}.pdf").write_bytes(build_pdf(pages))
