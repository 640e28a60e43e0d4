import io
import json

import pytest
import webdataset as wds
from PIL import Image

from curation.pdf.pages import PageSample, SourceItem
from curation.pdf.settings import PdfSettings
from curation.pdf.sources import discover_partitions, iter_partition_items
from curation.shards import PartitionShardWriter
from tests.curation.pdf.docs import PANGRAM, idl_json, multipage_tiff, pdfa_json, text_lines, write_tar
from tests.fixtures.pdf_writer import SyntheticPage, build_pdf, text_image

PDFA_LINES = [
    [("Annotated first page", [0.1, 0.1, 0.5, 0.03]), ("with two lines", [0.1, 0.15, 0.3, 0.03])],
    [("Second page text", [0.2, 0.5, 0.4, 0.04])],
]
IDL_LINES = [[("IDL line", [0.05, 0.05, 0.2, 0.02])], [("Frame two", [0.3, 0.6, 0.25, 0.05])]]


def _pdf(pages: int) -> bytes:
    return build_pdf([SyntheticPage(lines=text_lines(i)) for i in range(pages)])


def _png(lines: list[str]) -> bytes:
    buffer = io.BytesIO()
    text_image(lines, font_size=24).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    pdfa = root / "pdfa"
    pdfa.mkdir()
    write_tar(
        pdfa / "pdfa-eng-train-0000.tar",
        [
            {"__key__": "0000001", "pdf": _pdf(2), "json": pdfa_json(PDFA_LINES)},
            {"__key__": "0000002", "pdf": _pdf(1)},  # no OCR JSON: the text layer is used
        ],
    )
    frames = [Image.new("L", (400, 500), 255), Image.new("L", (500, 400), 200)]
    write_tar(
        root / "idl-train-00000.tar",
        [
            {"__key__": "idl_a", "pdf": _pdf(2), "json": idl_json(IDL_LINES)},
            {"__key__": "idl_b", "tif": multipage_tiff(frames), "json": idl_json(IDL_LINES)},
            {"__key__": "idl_c", "pdf": _pdf(1), "tif": multipage_tiff(frames[:1])},
        ],
    )
    write_tar(
        root / "rendered-000044.tar",
        [
            {"__key__": "rt_1", "png": _png(PANGRAM), "txt": "\n".join(PANGRAM).encode()},
            {"__key__": "rt_2", "jpg": _png(["x"]), "json": json.dumps({"text": "Hand written"}).encode()},
            {"__key__": "rt_3", "json": b"{}"},
            {"__key__": "rt_4", "png": b"\x89PNG\r\n\x1a\n not really", "txt": b"text"},
            {"__key__": "rt_5", "tif": multipage_tiff(frames)[:300]},
        ],
    )
    loose = root / "loose" / "reports"
    loose.mkdir(parents=True)
    for name in ("b", "a", "c"):
        (loose / f"{name}.pdf").write_bytes(_pdf(1))
    return root


def _results(partitions, worker, settings=PdfSettings()):
    out = {}
    for partition in partitions:
        for source in iter_partition_items(partition, settings.max_doc_bytes):
            assert isinstance(source, SourceItem)
            out[source.doc_id] = (source, worker.process(source, settings))
    return out


def test_discovery_names_partitions_from_inputs(inputs):
    partitions = discover_partitions([str(inputs)], files_per_partition=2)
    names = [p.name for p in partitions]
    assert names == [
        "idl-train-00000",
        "loose_reports-pdfs-00000",
        "loose_reports-pdfs-00001",
        "pdfa_pdfa-eng-train-0000",
        "rendered-000044",
    ]
    loose = [p for p in partitions if p.files]
    assert [[f.name for f in p.files] for p in loose] == [["a.pdf", "b.pdf"], ["c.pdf"]]
    by_glob = discover_partitions([str(inputs / "loose" / "**" / "*.pdf")])
    assert [f.name for f in by_glob[0].files] == ["a.pdf", "b.pdf", "c.pdf"]
    sources = list(iter_partition_items(by_glob[0], 10**9))
    assert all(isinstance(s, SourceItem) for s in sources)
    ids = [s.doc_id for s in sources if isinstance(s, SourceItem)]
    assert ids == ["a", "b", "c"]  # relative to the glob's folder, without suffix
    with pytest.raises(FileNotFoundError):
        discover_partitions([str(inputs / "missing")])


def test_pdfa_shard_round_trips_to_page_samples_with_its_boxes(inputs, worker):
    results = _results(discover_partitions([str(inputs / "pdfa")]), worker)
    source, annotated = results["0000001"]
    assert source.source == "pdfa-eng-train-0000.tar:0000001" and not annotated.failures
    first, second = annotated.pages
    assert first.text == "Annotated first page\nwith two lines" and first.text_source == "annotation"
    assert [line.box for line in first.lines] == [(0.1, 0.1, 0.6, 0.13), (0.1, 0.15, 0.4, 0.18)]
    assert [w.text for w in first.words] == ["Annotated", "first", "page", "with", "two", "lines"]
    assert second.lines[0].box == pytest.approx((0.2, 0.5, 0.6, 0.54))
    plain = results["0000002"][1].pages[0]
    assert plain.text_source == "text_layer" and plain.text == "\n".join(text_lines(0))


def test_idl_shard_uses_pdf_or_tiff_frames_with_flat_annotations(inputs, worker):
    results = _results(discover_partitions([str(inputs / "idl-train-00000.tar")]), worker)
    pdf_doc = results["idl_a"][1]
    assert [p.text for p in pdf_doc.pages] == ["IDL line", "Frame two"]
    assert pdf_doc.pages[1].lines[0].box == pytest.approx((0.3, 0.6, 0.55, 0.65))
    tiff_doc = results["idl_b"][1]
    assert tiff_doc.page_count == 2 and [p.source_kind for p in tiff_doc.pages] == ["tiff", "tiff"]
    assert [(p.width, p.height) for p in tiff_doc.pages] == [(400, 500), (500, 400)]  # never enlarged
    assert tiff_doc.pages[0].lines[0].box == pytest.approx((0.05, 0.05, 0.25, 0.07))
    both = results["idl_c"][1]
    assert both.pages[0].source_kind == "pdf" and both.pages[0].text_source == "text_layer"


def test_image_text_shard_and_a_sample_without_document(inputs, worker):
    results = _results(discover_partitions([str(inputs / "rendered-000044.tar")]), worker)
    assert results["rt_1"][1].pages[0].text == "\n".join(PANGRAM)
    assert results["rt_1"][1].pages[0].text_source == "transcription"
    assert results["rt_2"][1].pages[0].text == "Hand written"
    assert results["rt_3"][1].failures[0].reason == "no_document"
    assert [(f.page, f.reason) for f in results["rt_4"][1].failures] == [(None, "decode_error")]
    assert [f.reason for f in results["rt_5"][1].failures] == ["decode_error"]


def test_page_shards_load_with_webdataset_and_datasets(inputs, worker, tmp_path):
    import datasets

    results = _results(discover_partitions([str(inputs)]), worker, PdfSettings(max_side=400))
    pages: list[PageSample] = [p for _, r in results.values() for p in r.pages]
    writer = PartitionShardWriter(tmp_path, "pages", samples_per_shard=5)
    for page in pages:
        writer.write(page.to_wds())
    manifest = writer.close()
    urls = [str(tmp_path / s["name"]) for s in manifest["shards"]]

    read = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in read] == [p.key for p in pages]
    meta = json.loads(read[0]["json"])
    assert set(meta) == {"doc_id", "page_index", "page_count", "source", "source_kind", "text_source", "render", "lines", "words"}
    assert read[0]["txt"].decode() == pages[0].text

    loaded = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train")
    assert loaded.num_rows == len(pages)
    row = loaded[0]
    assert row["png"].size == (pages[0].width, pages[0].height)
    assert row["json"]["page_index"] == pages[0].page_index and row["txt"] == pages[0].text


def test_a_shard_sample_over_the_readers_caps_is_a_too_large_document(tmp_path):
    from curation.pdf.sources import PdfPartition, SkippedDocument
    from curation.shards import DEFAULT_MAX_SAMPLE_MEMBERS
    from tests.hostile.craft_tars import END, member, one_key_many_members

    many = one_key_many_members(b"many", DEFAULT_MAX_SAMPLE_MEMBERS, 1) + member(b"many.pdf", b"%PDF-1.4")
    shard = tmp_path / "s-000000.tar"
    shard.write_bytes(many + member(b"ok.pdf", b"%PDF-1.4") + END)
    items = list(iter_partition_items(PdfPartition("s", shard=shard), 10**6))
    assert isinstance(items[0], SkippedDocument) and (items[0].id, items[0].reason) == ("many", "too_large")
    assert isinstance(items[1], SourceItem) and items[1].doc_id == "ok"
