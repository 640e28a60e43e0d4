import io
import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.langid import LanguageIdentifier
from curation.obelics import CleaningSettings, clean_partition
from curation.optout import OptOutVerdicts
from curation.optout_lists import DoNotTrainList
from curation.readers import UnreadableInputError, discover_partitions, iter_rows
from tests.hostile.craft import parquet_with_bad_row_group


def png(size=8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def row(text, image, src="https://img.example/a.jpg", page=None):
    page = page or f"https://p.example/{text}"
    return {
        "texts": [text, None],
        "images": [None, image],
        "metadata": json.dumps([None, {"src": src}]),
        "general_metadata": json.dumps({"url": page}),
    }


def test_bad_image_bytes_are_removed_or_drop_the_document(tmp_path):
    rows = [
        row("good", png()),
        row("corrupt", b"\x89PNG\r\n\x1a\nbroken"),
        row("bomb", png(64)),
        {
            **row("two", png()),
            "texts": ["two", None, None],
            "images": [None, png(), b""],
            "metadata": json.dumps([None, {"src": "a"}, {"src": "b"}]),
        },
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    out = clean_partition(tmp_path / "p.parquet", "p", CleaningSettings(max_image_pixels=1000), OptOutVerdicts())
    assert [d.text_nodes for d in out.documents] == [["good"], ["two"]]
    assert sorted(e.reason for e in out.ledger) == ["decode_error", "too_many_pixels"]
    assert sorted(r["reason"] for r in out.removed_images) == ["decode_error", "empty_image", "too_many_pixels"]
    assert out.n_input == 4 == len(out.documents) + len(out.ledger)


def test_listed_page_drops_document_and_listed_image_is_removed(tmp_path):
    lists = DoNotTrainList.of(["bad-site.example", "https://img.example/blocked.jpg"])
    rows = [
        row("page listed", "https://img.example/a.jpg", page="https://www.bad-site.example/x"),
        {
            "texts": ["keep", None, "me", None],
            "images": [None, "https://img.example/blocked.jpg", None, "https://img.example/ok.jpg"],
            "metadata": json.dumps([None, {"src": "https://img.example/blocked.jpg"}, None, {"src": "https://img.example/ok.jpg"}]),
            "general_metadata": "{}",
        },
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    out = clean_partition(tmp_path / "p.parquet", "p", CleaningSettings(), OptOutVerdicts(lists))
    assert [e.reason for e in out.ledger] == ["opt_out"]
    assert out.documents[0].texts == ["keep\n\nme", None] and out.documents[0].image_urls() == ["https://img.example/ok.jpg"]


def test_an_unusable_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UnreadableInputError, match="broken.parquet: not a readable parquet file"):
        clean_partition(tmp_path / "broken.parquet", "broken", CleaningSettings(), OptOutVerdicts())


def test_an_unreadable_row_group_is_ledgered_row_by_row_and_reading_goes_on(tmp_path):
    rows = [row(f"text {i}", f"https://img.example/{i}.jpg") for i in range(6)]
    path = parquet_with_bad_row_group(tmp_path / "p.parquet", rows, row_group_size=2, bad_group=1)
    out = clean_partition(path, "p", CleaningSettings(), OptOutVerdicts())
    assert [d.text_nodes[0] for d in out.documents] == ["text 0", "text 1", "text 4", "text 5"]
    assert [(e.id, e.reason) for e in out.ledger] == [("p#row2", "unreadable_input"), ("p#row3", "unreadable_input")]
    assert out.n_input == 6


def test_duplicate_ids_within_a_partition_are_ledgered(tmp_path):
    pq.write_table(pa.Table.from_pylist([{**row("a", "u"), "id": "same"}, {**row("b", "u"), "id": "same"}]), tmp_path / "p.parquet")
    out = clean_partition(tmp_path / "p.parquet", "p", CleaningSettings(), OptOutVerdicts())
    assert len(out.documents) == 1 and [e.reason for e in out.ledger] == ["duplicate_id"]


def test_reads_a_save_to_disk_dataset_folder(tmp_path):
    rows = [row(f"text {i}", f"https://img.example/{i}.jpg") for i in range(5)]
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "ds")
    partitions = discover_partitions([tmp_path / "ds"])
    assert len(partitions) == 1 and partitions[0].path.suffix == ".arrow"
    assert [r["texts"][0] for r in iter_rows(partitions[0].path)] == [f"text {i}" for i in range(5)]


def test_language_id_with_a_fasttext_model(tmp_path):
    fasttext = pytest.importorskip("fasttext")
    english = ["the cat sat on the mat", "we read the book in the evening", "this is a sentence in english", "the weather is nice today"]
    french = ["le chat est sur le tapis", "nous lisons le livre le soir", "ceci est une phrase en francais", "il fait beau aujourd hui"]
    (tmp_path / "train.txt").write_text("\n".join([f"__label__en {t}" for t in english * 20] + [f"__label__fr {t}" for t in french * 20]))
    model = fasttext.train_supervised(str(tmp_path / "train.txt"), epoch=25, wordNgrams=2, minn=2, maxn=4, verbose=0)
    model.save_model(str(tmp_path / "lid.bin"))
    lid = LanguageIdentifier(tmp_path / "lid.bin")
    assert lid.probability("the cat read the book") > 0.8
    assert lid.probability("le chat lisons le livre") < 0.2
    pq.write_table(pa.Table.from_pylist([row("the cat sat on the mat", "u"), row("le chat est sur le tapis", "u")]), tmp_path / "p.parquet")
    out = clean_partition(tmp_path / "p.parquet", "p", CleaningSettings(min_lang_prob=0.5), OptOutVerdicts(), lid)
    assert [d.text_nodes for d in out.documents] == [["the cat sat on the mat"]]
    assert [e.reason for e in out.ledger] == ["lang"]
