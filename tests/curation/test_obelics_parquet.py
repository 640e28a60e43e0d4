import datasets
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curation.documents import InterleavedDocument
from curation.obelics_parquet import OBELICS_PARQUET_SCHEMA, ObelicsParquetWriter


def doc(n: int, image: str | bytes) -> InterleavedDocument:
    return InterleavedDocument(f"d{n}", [f"text {n}", None], [None, image], [None, {"src": f"https://img.example/{n}.jpg"}], {"url": "p"})


def test_every_file_has_the_schema_and_the_folder_loads_as_one_table(tmp_path):
    full = ObelicsParquetWriter(tmp_path / "out" / "a.parquet", rows_per_group=2)
    for n in range(5):
        full.write(doc(n, b"\xff\xd8 jpeg bytes" if n % 2 else f"https://img.example/{n}.jpg"))
    assert not (tmp_path / "out" / "a.parquet").exists()  # in place only once closed
    full.close()
    ObelicsParquetWriter(tmp_path / "out" / "b.parquet").close()  # every document dropped
    (tmp_path / "out" / "c.parquet").parent.mkdir(exist_ok=True)
    nulls = ObelicsParquetWriter(tmp_path / "out" / "c.parquet")
    nulls.write(InterleavedDocument("only-text-then-image", ["t", None], [None, b"bytes, no src"], [None, {}], {}))
    nulls.close()

    for name in ("a", "b", "c"):
        assert pq.read_schema(tmp_path / "out" / f"{name}.parquet").remove_metadata() == OBELICS_PARQUET_SCHEMA
    a = pq.ParquetFile(tmp_path / "out" / "a.parquet")
    assert a.metadata.num_row_groups == 3 and pq.read_table(tmp_path / "out" / "b.parquet").num_rows == 0
    rows = a.read().to_pylist()
    assert [r["images"][1] for r in rows] == [f"https://img.example/{n}.jpg" for n in range(5)]  # bytes: the src URL
    assert rows[0]["texts"] == ["text 0", None] and rows[0]["metadata"].startswith("[null, {")

    table = pads.dataset(tmp_path / "out", format="parquet").to_table()
    assert table.num_rows == 6 and table.schema == OBELICS_PARQUET_SCHEMA
    loaded = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out"), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 6 and loaded.features["images"].feature.dtype == "string"
    assert sorted(loaded["id"]) == sorted([f"d{n}" for n in range(5)] + ["only-text-then-image"])
