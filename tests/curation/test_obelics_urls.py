import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.obelics_urls import parsed_image_urls, partition_image_urls
from curation.readers import UnreadableInputError
from tests.hostile.corpus import crafted_corpus, obelics_inputs
from tests.hostile.craft import deep_json, parquet_with_bad_row_group, surrogate_json, truncated_file

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "obelics").glob("*.parquet"))


def doc(n: int, **changes: object) -> dict:
    """Text, image, text, image; the images' URLs in both `images` and metadata `src`."""
    urls = [f"https://img.example/{n}/a.jpg", f"https://img.example/{n}/b.jpg"]
    row = {
        "id": f"doc-{n}",
        "texts": [f"text {n}", None, "more", None],
        "images": [None, urls[0], None, urls[1]],
        "metadata": json.dumps([None, {"src": urls[0]}, None, {"src": urls[1]}]),
        "general_metadata": json.dumps({"url": f"https://page.example/{n}"}),
    }
    return {**row, **changes}


def meta(*entries: object) -> str:
    return json.dumps(list(entries))


HOSTILE = [
    doc(0),
    doc(1, metadata=meta(None, {"src": "https://other.example/src.jpg"}, None, {"src": ""})),  # src wins; "" falls back
    doc(2, metadata=meta(None, {"src": 7}, None, None)),  # a non-string src and a null entry: the image string
    doc(3, metadata=None),
    doc(4, metadata="[]"),
    doc(5, metadata="null"),  # not a list: malformed
    doc(6, metadata="{not json"),
    doc(7, metadata=meta(None, "a string", None, None)),  # an image's metadata must be a dict
    doc(8, metadata=meta(["any"], {"src": "https://x.example/8.jpg"}, 3, None)),  # text nodes' metadata is free
    doc(9, metadata=meta(None, None)),  # unequal lengths
    doc(10, texts=None),
    doc(11, images=None),
    doc(12, texts=[], images=[], metadata="[]"),
    doc(13, texts=["t", "both", "t", None]),
    doc(14, texts=["t", None, None, None]),  # position 2 has neither
    doc(15, images=[None, "", None, "https://img.example/15.jpg"], metadata=None),  # an empty image string has no URL
    doc(16, general_metadata="[1]"),
    doc(17, general_metadata="{oops"),
    doc(18, general_metadata=surrogate_json("url").decode()),
    doc(19, metadata=deep_json(10_000).decode()),
    doc(20, general_metadata=None),
    doc(21, id="same"),
    doc(22, id="same"),  # a repeated id keeps its URLs here; the cleaning pass ledgers it
    doc(23, texts=["t", None, "", None]),  # an empty text is still a text node
]


def assert_same(path: Path) -> list[str]:
    column = partition_image_urls(path)
    assert column == parsed_image_urls(path)
    return column


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_column_path_equals_the_parse_path_on_the_examples(path):
    assert len(assert_same(path)) > 100


def test_column_path_equals_the_parse_path_on_hostile_rows(tmp_path):
    path = tmp_path / "hostile.parquet"
    pq.write_table(pa.Table.from_pylist(HOSTILE), path, row_group_size=5)
    urls = assert_same(path)
    assert "https://other.example/src.jpg" in urls and "https://img.example/1/b.jpg" in urls
    assert "https://img.example/5/a.jpg" not in urls and "https://img.example/15.jpg" in urls
    assert urls.count("https://img.example/21/a.jpg") == 1 and "https://img.example/22/a.jpg" in urls


def test_large_types_and_arrow_streams(tmp_path):
    table = pa.Table.from_pylist(HOSTILE)
    large = table.cast(
        pa.schema(
            [
                ("id", pa.string()),
                ("texts", pa.large_list(pa.large_string())),
                ("images", pa.list_(pa.large_string())),
                ("metadata", pa.large_string()),
                ("general_metadata", pa.string()),
            ]
        )
    )
    pq.write_table(large, tmp_path / "large.parquet")
    assert_same(tmp_path / "large.parquet")
    as_bytes = table.set_column(table.schema.get_field_index("images"), "images", table.column("images").cast(pa.list_(pa.binary())))
    pq.write_table(as_bytes, tmp_path / "bytes.parquet")
    urls = assert_same(tmp_path / "bytes.parquet")
    assert "https://img.example/0/a.jpg" in urls and "https://img.example/15.jpg" not in urls  # bytes without a src
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=4):
            writer.write_batch(batch)
    (tmp_path / "whole.arrow").write_bytes(sink.getvalue().to_pybytes())
    assert len(assert_same(tmp_path / "whole.arrow")) > 10
    truncated_file(tmp_path / "cut.arrow", sink.getvalue().to_pybytes(), keep=0.6)
    cut = assert_same(tmp_path / "cut.arrow")
    assert 0 < len(cut) < len(partition_image_urls(tmp_path / "whole.arrow"))


def test_damaged_row_group_gives_the_rest(tmp_path):
    path = parquet_with_bad_row_group(tmp_path / "bad.parquet", [doc(n) for n in range(8)], row_group_size=2, bad_group=1)
    urls = assert_same(path)
    assert len(urls) == 12 and "https://img.example/2/a.jpg" not in urls


def test_other_column_types_take_the_parse_path(tmp_path):
    binary_texts = pa.table(
        {
            "texts": pa.array([[b"ok", None], [b"\xff\xfe", None]], pa.list_(pa.binary())),
            "images": [[None, "https://img.example/bin/0.jpg"], [None, "https://img.example/bin/1.jpg"]],
        }
    )
    pq.write_table(binary_texts, tmp_path / "binary.parquet")
    assert assert_same(tmp_path / "binary.parquet") == ["https://img.example/bin/0.jpg"]  # row 2 is not UTF-8
    structs = pa.Table.from_pylist(
        [
            {
                "texts": ["t", None],
                "images": [None, {"bytes": b"\x89PNG", "path": None}],
                "metadata": meta(None, {"src": "https://img.example/s.jpg"}),
            }
        ]
    )
    pq.write_table(structs, tmp_path / "structs.parquet")
    assert assert_same(tmp_path / "structs.parquet") == ["https://img.example/s.jpg"]
    pq.write_table(pa.table({"texts": ["a string"], "images": [1]}), tmp_path / "wrong.parquet")
    assert assert_same(tmp_path / "wrong.parquet") == []


def test_column_path_equals_the_parse_path_on_the_hostile_corpus(tmp_path):
    root = tmp_path / "in"
    unusable = obelics_inputs(root, crafted_corpus())
    checked = 0
    for path in sorted(root.iterdir()):
        if path.stem in unusable:
            with pytest.raises(UnreadableInputError):
                partition_image_urls(path)
            continue
        assert_same(path)
        checked += 1
    assert checked >= 6
