"""A partition task holds one rendered page at a time, however many pages a document has."""

import random
import tracemalloc

from PIL import Image

from curation.pdf.settings import PdfSettings
from curation.pdf.sources import PdfPartition, discover_partitions
from pipelines.pdfs import PdfsConfig, write_pdf_partition
from tests.fixtures.pdf_writer import SyntheticPage, build_pdf, jpeg_bytes

PAGES = 40


def noise_pdf(pages: int) -> bytes:
    """Pages filled with a noise photo: each renders to a PNG of ~200 KB that does not compress."""
    rng = random.Random(0)
    noise = Image.frombytes("RGB", (160, 160), bytes(rng.randrange(256) for _ in range(160 * 160 * 3)))
    photo = jpeg_bytes(noise)
    return build_pdf([SyntheticPage(300.0, 300.0, image=photo) for _ in range(pages)])


def _partition(tmp_path, name: str, pages: int) -> tuple[PdfsConfig, PdfPartition]:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "doc.pdf").write_bytes(noise_pdf(pages))
    config = PdfsConfig([str(folder)], tmp_path / f"{name}-out", PdfSettings(max_side=300), pages_per_shard=1)
    (partition,) = discover_partitions(config.inputs)
    return config, partition


def test_a_many_page_document_is_written_page_by_page(tmp_path):
    write_pdf_partition(*_partition(tmp_path, "warm", 1), "fp")  # imports and caches, outside the measure
    config, partition = _partition(tmp_path, "big", PAGES)
    tracemalloc.start()
    try:
        manifest = write_pdf_partition(config, partition, "fp")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    page_bytes = max(s["bytes"] for s in manifest["shards"])
    assert manifest["count"] == manifest["input"] == PAGES and page_bytes > 150_000
    # the whole document held at once is PAGES * page_bytes (~9 MB, measured 11 MB); page by page: ~2 MB
    assert peak < PAGES * page_bytes / 3, (peak, page_bytes)
