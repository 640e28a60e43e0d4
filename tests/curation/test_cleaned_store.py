import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.cleaned_store import (
    cleaning_key,
    open_cleaned,
    remove_cleaned,
    save_cleaned,
)
from curation.documents import parse_document
from curation.interleaved_format import document_to_sample
from curation.obelics import CleaningSettings, clean_partition
from curation.optout import OptOutVerdicts
from curation.optout_lists import DoNotTrainList


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "blue").save(buffer, format="PNG")
    return buffer.getvalue()


def image(data: bytes | None = None, path: str | None = None) -> dict:
    return {"bytes": data, "path": path}  # the Hub's Image feature


def rows() -> list[dict]:
    """Image bytes, a broken image, an opted-out one, a malformed row; odd metadata and text."""
    meta = [None, {"src": "https://img.example/a.jpg", "alt": "ünïcode 😀", "score": float("nan"), "nested": {"k": [1, 2.5, None]}}]
    return [
        {
            "id": "bytes",
            "texts": ["émoji 😀 text", None],
            "images": [None, image(png())],
            "metadata": json.dumps(meta),
            "general_metadata": json.dumps({"url": "https://p.example/1", "n": 1e300}),
        },
        {
            "id": "broken",
            "texts": ["keep text", None, None],
            "images": [None, image(b"\x89PNG broken"), image(png())],
            "metadata": json.dumps([None, {"src": "x"}, {}]),
            "general_metadata": "{}",
        },
        {
            "id": "blocked",
            "texts": ["gone", None],
            "images": [None, image(path="https://blocked.example/b.jpg")],
            "metadata": None,
            "general_metadata": "{}",
        },
        {"id": "bad", "texts": ["x"], "images": [None, None], "metadata": "[]", "general_metadata": "{}"},
    ]


def cleaned_partition(tmp_path):
    """The cleaning of `rows()`, plus a document whose images are URLs (one of them empty)."""
    pq.write_table(pa.Table.from_pylist(rows()), tmp_path / "p.parquet")
    verdicts = OptOutVerdicts(DoNotTrainList.of(["blocked.example"]))
    cleaned = clean_partition(tmp_path / "p.parquet", "p", CleaningSettings(), verdicts)
    url_row = {
        "id": "url",
        "texts": [None, "after", None],
        "images": ["https://img.example/u.jpg", None, ""],
        "metadata": json.dumps([{"src": "https://img.example/u.jpg"}, None, {}]),
    }
    cleaned.documents.append(parse_document(url_row))
    cleaned.n_input += 1
    return cleaned


def test_a_stored_cleaning_reads_back_exactly(tmp_path):
    cleaned = cleaned_partition(tmp_path)
    assert [d.id for d in cleaned.documents] == ["bytes", "broken", "url"]
    assert [e.reason for e in cleaned.ledger] == ["opt_out", "malformed"] and len(cleaned.removed_images) == 2
    save_cleaned(tmp_path / "cleaned" / "p", cleaned, "key-1")

    stored = open_cleaned(tmp_path / "cleaned" / "p", "key-1")
    assert stored is not None and stored.n_input == cleaned.n_input == 5
    assert stored.ledger == cleaned.ledger and stored.removed_images == cleaned.removed_images
    assert len(stored.documents) == 3
    for _ in range(2):  # each iteration reads the file again
        back = list(stored.documents)
        assert [document_to_sample(d) for d in back] == [document_to_sample(d) for d in cleaned.documents]
        assert back[1:] == cleaned.documents[1:]  # the first holds a NaN, which equals nothing
        assert back[0].images[1] == png() and back[2].images == ["https://img.example/u.jpg", None, ""]


def test_another_key_or_a_partial_folder_is_not_used(tmp_path):
    cleaned = cleaned_partition(tmp_path)
    folder = tmp_path / "cleaned" / "p"
    save_cleaned(folder, cleaned, "key-1")
    assert open_cleaned(folder, "key-2") is None
    (folder / "documents.parquet").unlink()  # killed before the last file was written
    assert open_cleaned(folder, "key-1") is None
    save_cleaned(folder, cleaned, "key-1")
    pq.write_table(pq.read_table(folder / "ledger.parquet").replace_schema_metadata({}), folder / "ledger.parquet")
    assert open_cleaned(folder, "key-1") is None
    remove_cleaned(folder)
    assert not folder.exists() and open_cleaned(folder, "key-1") is None
    remove_cleaned(folder)  # nothing there: nothing to do


def test_the_key_follows_everything_the_cleaning_depends_on(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(rows()[:1]), path)
    settings = {"min_lang_prob": 0.0, "on_unchecked": "fail", "max_image_pixels": 100}
    key = cleaning_key(path, settings, "verdicts", None)
    assert cleaning_key(path, dict(settings), "verdicts", None) == key
    assert cleaning_key(path, {**settings, "min_lang_prob": 0.5}, "verdicts", None) != key
    assert cleaning_key(path, settings, "other verdicts", None) != key
    assert cleaning_key(path, settings, "verdicts", tmp_path / "lid.bin") != key
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # the input replaced under the same name
    assert cleaning_key(path, settings, "verdicts", None) != key
