"""The one ledger table of docs/formats.md (stage, reason, meaning) against the reasons and stages the code writes."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.obelics import CleaningSettings, clean_partition
from curation.optout import OptOutVerdicts, UncheckedUrls
from curation.optout_lists import DoNotTrainList
from curation.url_hashes import url_key
from tests.ledger_reasons import (
    documented_but_absent,
    reason_table,
    reasons_in_code,
    stage_reasons_in_code,
    undocumented,
    undocumented_pairs,
)


def test_the_scans_see_the_rejections_and_the_table():
    found = reasons_in_code()
    assert {"malformed", "too_many_pixels", "duplicate_key", "private_address", "bad_record"} <= set(found)
    assert len(found) > 40
    assert {("opt_out", "opt_out_unchecked"), ("lang", "lang"), ("merge", "merged_by_image")} <= set(stage_reasons_in_code())
    assert {("images", "decode_error"), ("nsfw", "decode_error"), ("adapt", "http_<status>")} <= reason_table()
    assert undocumented(["http_404", "nsfw_threshold"]) == set() and undocumented(["http_"]) == {"http_"}
    assert undocumented_pairs([("nsfw", "decode_error"), ("lang", "decode_error")]) == {("lang", "decode_error")}


def test_every_reason_in_the_code_is_a_row_of_the_table():
    found = reasons_in_code()
    missing = {reason: sorted(found[reason]) for reason in undocumented(found)}
    assert not missing, f"ledger reasons missing from the ledger table of docs/formats.md: {missing}"


def test_every_stage_the_code_names_with_a_reason_is_in_its_row():
    found = stage_reasons_in_code()
    missing = {pair: sorted(found[pair]) for pair in undocumented_pairs(found)}
    assert not missing, f"(stage, reason) missing from the ledger table of docs/formats.md: {missing}"


def test_the_table_has_no_reason_the_code_never_writes():
    assert not documented_but_absent()


def png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_obelics_cleaning_writes_only_documented_stages_and_reasons(tmp_path):
    def row(n, texts, images, page=None, doc_id=None):
        urls = [image if isinstance(image, str) else f"https://i.example/{n}.png" for image in images]
        metadata = [None if image is None else {"src": url} for image, url in zip(images, urls, strict=True)]
        page = json.dumps({"url": page or f"https://p.example/{n}"})
        return {"id": doc_id or f"doc{n}", "texts": texts, "images": images, "metadata": json.dumps(metadata), "general_metadata": page}

    with_bytes = [  # image bytes and URLs go in separate files: a parquet column holds one type
        row(0, ["text", None], [None, png(8)]),  # kept (with 4 and the first "dup")
        row(1, ["text", None], [None, b"\x89PNG broken"]),  # images/decode_error
        row(2, ["text", None], [None, png(64)]),  # images/too_many_pixels
        row(3, ["text", None], [None, b""]),  # images/empty_image
    ]
    with_urls = [
        row(4, ["text", None], [None, "https://i.example/4.jpg"]),  # kept
        row(5, ["text", None], [None, None]),  # parse/malformed
        row(6, [], []),  # parse/empty
        row(7, ["text"], [None]),  # parse/no_image
        row(8, [None], ["https://i.example/8.jpg"]),  # parse/no_text
        row(9, ["same", None], [None, "https://i.example/9.jpg"], doc_id="dup"),
        row(10, ["same", None], [None, "https://i.example/10.jpg"], doc_id="dup"),  # parse/duplicate_id
        row(11, ["text", None], [None, "https://i.example/11.jpg"], page="https://listed.example/p"),  # opt_out/opt_out
        row(12, ["text", None], [None, "https://i.example/unchecked.jpg"]),  # opt_out/opt_out_unchecked
    ]
    unchecked = UncheckedUrls.of({url_key("https://i.example/unchecked.jpg"): "HTTP 500"})
    verdicts = OptOutVerdicts(DoNotTrainList.of(["listed.example"]), unchecked=unchecked)
    settings = CleaningSettings(max_image_pixels=1000, on_unchecked="drop")
    written, kept = set(), 0
    for name, rows in (("bytes", with_bytes), ("urls", with_urls)):
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"{name}.parquet")
        out = clean_partition(tmp_path / f"{name}.parquet", name, settings, verdicts)
        written |= {(entry.stage, entry.reason) for entry in out.ledger}
        kept += len(out.documents)
    assert len(written) == 10 and kept == 3
    assert not undocumented_pairs(written)
