"""Source files as published: discovery, the evaluation-split guard, typed reading, and damage accounted for."""

import gzip
import io
import json
import tarfile
import zipfile
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cauldron import source_json
from cauldron.source_files import Refused, SourceError, eval_split_word, list_source
from cauldron.source_json import Damaged, iter_json, iter_json_lines
from cauldron.source_readers import RowBatch, read_source_file
from curation.errors import Rejection
from tests.hostile.craft_tars import header, member


def read_all(path: Path, allow_eval_splits=False, include=()):
    listing = list_source(path, include, allow_eval_splits)
    items = [item for file in listing.files for item in read_source_file(file, "s", allow_eval_splits)]
    rows = {row_id: row for item in items if isinstance(item, RowBatch) for row_id, row in zip(item.ids, item.rows)}
    unread = [item for item in items if isinstance(item, Rejection)]
    refused = [item for item in items if isinstance(item, Refused)] + listing.refused
    return rows, unread, refused


@pytest.mark.parametrize(
    "name, word",
    [
        ("v2_OpenEnded_mscoco_val2014_questions.json", "val2014"),
        ("test1.json", "test1"),
        ("testdev-x.parquet", "testdev"),
        ("data/validation-00000-of-00001.parquet", "validation"),
        ("dev.jsonl", "dev"),
        ("train-00000-of-00022.parquet", None),
        ("devices_latest.json", None),
        ("train/png", None),
    ],
)
def test_evaluation_split_words(name, word):
    assert eval_split_word(name) == word


def test_listing_refuses_eval_files_and_skips_what_is_not_data(tmp_path):
    for name in (
        "train-0.parquet",
        "test-0.parquet",
        "val/a.jsonl",
        "README.md",
        "x.png",
        ".cache/y.parquet",
        "dataset_info.json",
        "images/z.json",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    listing = list_source(tmp_path)
    assert [f.relative for f in listing.files] == ["images/z.json", "train-0.parquet"]
    assert {r.file for r in listing.refused} == {"test-0.parquet", "val/a.jsonl"}
    assert [f.relative for f in list_source(tmp_path, include=("*.parquet",)).files] == ["train-0.parquet"]
    assert len(list_source(tmp_path, allow_eval_splits=True).files) == 4


def test_a_source_of_eval_splits_only_is_a_one_line_error(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "data.parquet").write_text("")
    with pytest.raises(SourceError, match="every data file .* is an evaluation split.*--allow-eval-splits"):
        list_source(tmp_path / "test")
    with pytest.raises(SourceError, match="no data files"):
        list_source(tmp_path / "test", include=("*.jsonl",))
    with pytest.raises(SourceError, match="not found"):
        list_source(tmp_path / "missing")


def test_split_recorded_by_save_to_disk_is_refused(tmp_path):
    datasets.Dataset.from_list([{"q": "a"}], split="test").save_to_disk(str(tmp_path / "copy"))
    with pytest.raises(SourceError, match="evaluation split recorded by datasets"):
        list_source(tmp_path / "copy")


NLVR2_FEATURES = datasets.Features(
    {
        "sentence": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["True", "False"]),
        "tags": datasets.Sequence(datasets.ClassLabel(names=["a", "b"])),
    }
)


def test_class_labels_are_decoded_through_their_names(tmp_path):
    rows = [{"sentence": "one", "label": "True", "tags": ["b"]}, {"sentence": "two", "label": "False", "tags": ["a", "b"]}]
    dataset = datasets.Dataset.from_list(rows, features=NLVR2_FEATURES)
    assert dataset.data.table.column("label").to_pylist() == [0, 1]  # True is stored as 0
    dataset.to_parquet(str(tmp_path / "parquet" / "train.parquet"))
    dataset.save_to_disk(str(tmp_path / "arrow"))
    for folder in ("parquet", "arrow"):
        read, unread, _ = read_all(tmp_path / folder)
        assert [(r["label"], r["tags"]) for r in read.values()] == [("True", ["b"]), ("False", ["a", "b"])]
        assert unread == []


def test_a_label_outside_the_names_is_not_a_label(tmp_path):
    table = datasets.Dataset.from_list([{"sentence": "x", "label": "True", "tags": []}], features=NLVR2_FEATURES).data.table
    bad = table.set_column(1, "label", pa.array([7], pa.int64())).replace_schema_metadata(table.schema.metadata)
    pq.write_table(bad, tmp_path / "train.parquet")
    (row,) = read_all(tmp_path)[0].values()
    assert row["label"].startswith("<class index 7")


def test_a_damaged_row_group_is_ledgered_row_by_row(tmp_path):
    pq.write_table(
        pa.table({"q": [f"q{i}-" + "x" * (i % 7) for i in range(200)]}),
        tmp_path / "train.parquet",
        row_group_size=100,
        compression="snappy",
        use_dictionary=False,
    )
    column = pq.ParquetFile(tmp_path / "train.parquet").metadata.row_group(1).column(0)
    raw = bytearray((tmp_path / "train.parquet").read_bytes())
    start, size = column.data_page_offset + 30, column.total_compressed_size - 40
    raw[start : start + size] = b"\x07" * size
    (tmp_path / "train.parquet").write_bytes(bytes(raw))
    read, unread, _ = read_all(tmp_path)
    assert len(read) == 100 and len(unread) == 100
    assert {u.reason for u in unread} == {"unreadable_row_group"} and unread[0].id == "s/train#100"


def test_a_file_that_is_not_parquet_is_a_source_error(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(SourceError, match="train.parquet: not a readable parquet file"):
        read_all(tmp_path)


def test_rows_naming_an_eval_split_are_refused_row_by_row(tmp_path):
    lines = [{"q": 1, "set_name": "train"}, {"q": 2, "set_name": "val"}, {"q": 3, "split": "test"}]
    (tmp_path / "all.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    read, unread, _ = read_all(tmp_path)
    assert [r["q"] for r in read.values()] == [1]
    assert [(u.id, u.reason) for u in unread] == [("s/all#1", "eval_split_row"), ("s/all#2", "eval_split_row")]
    assert len(read_all(tmp_path, allow_eval_splits=True)[0]) == 3


def test_json_array_object_and_lines_layouts(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([{"a": 1}, {"a": 2}]))
    (tmp_path / "wrapped.json").write_text(json.dumps({"info": {"v": 2}, "data": [{"a": 3}, {"a": 4}]}))
    (tmp_path / "keyed.json").write_text(json.dumps({"10": {"a": 5}, "11": {"a": 6}}))
    (tmp_path / "one.json").write_text(json.dumps({"imageName": "0.png", "questions": {"q?": {"x": 1}}}))
    (tmp_path / "lines.json").write_text('{"a": 7}\n{"a": 8}\n')
    with gzip.open(tmp_path / "zipped.jsonl.gz", "wt") as handle:
        handle.write('{"a": 9}\n')
    read, unread, _ = read_all(tmp_path)
    assert sorted(r.get("a", 0) for r in read.values()) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] and unread == []


def test_json_damage_is_reported_and_reading_goes_on(monkeypatch):
    monkeypatch.setattr(source_json, "CHUNK_BYTES", 7)  # records straddle many reads
    records = [{"i": i, "t": "x" * i} for i in range(30)]
    whole = json.dumps(records).encode()
    assert list(iter_json(io.BytesIO(whole))) == records
    cut = list(iter_json(io.BytesIO(whole[:-40])))
    assert cut[:-1] == records[:29] and cut[-1] == Damaged(29, True, "truncated_file", cut[-1].detail)
    assert list(iter_json(io.BytesIO(b"[1, 2, 33333]"))) == [1, 2, 33333]  # a number is not cut at a read boundary
    deep = list(iter_json(io.BytesIO(b"[" + b"[" * 100_000 + b"]" * 100_000 + b"]")))
    assert [(d.reason, d.detail) for d in deep] == [("bad_json", "nested too deeply")]
    assert list(iter_json(io.BytesIO(b'[{"x": "\xff"}]')))[0].reason == "bad_json"
    lines = list(iter_json_lines(io.BytesIO(b'{"x":1}\n\n{bad}\n{"x":\xff}\n{"x":3')))
    assert lines[0] == {"x": 1} and [(d.index, d.reason) for d in lines[1:]] == [(1, "bad_json"), (2, "bad_json"), (3, "truncated_file")]


def tar_bytes(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_archives_of_json_members(tmp_path):
    with zipfile.ZipFile(tmp_path / "set.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("math/a.json", json.dumps({"message_1": "q", "message_2": "a"}))
        archive.writestr("math/b.json", json.dumps({"message_1": "q2", "message_2": "a2"}))
        archive.writestr("test.json", "[]")
        archive.writestr("notes.txt", "x")
    (tmp_path / "set.tar").write_bytes(tar_bytes([("p/one.jsonl", b'{"a": 1}\n{"a": 2}\n'), ("../evil.json", b'{"a": 3}')]))
    read, unread, refused = read_all(tmp_path)
    assert sorted(read) == ["s/set_tar/p/one.jsonl#0", "s/set_tar/p/one.jsonl#1", "s/set_zip/math/a.json#0", "s/set_zip/math/b.json#0"]
    assert sorted((r.file, r.reason.split(" (")[0]) for r in refused) == [
        ("set.tar/../evil.json", "unsafe member name"),
        ("set.zip/test.json", "evaluation split in the member name"),
    ]
    assert unread == []


def test_a_tar_header_broken_half_way_is_not_the_end_of_the_archive(tmp_path):
    raw = bytearray(tar_bytes([(f"m{i}.json", json.dumps({"i": i}).encode()) for i in range(4)]))
    raw[1024 + 148 : 1024 + 156] = b"garbage!"  # the checksum of the second member's header
    (tmp_path / "set.tar").write_bytes(bytes(raw))
    read, unread, _ = read_all(tmp_path)
    assert [r["i"] for r in read.values()] == [0]
    assert [(u.reason, "damaged" in u.detail) for u in unread] == [("damaged_file", True)]


def test_a_tar_header_declaring_a_huge_long_name_is_damage_not_an_allocation(tmp_path):
    good = member(b"m0.json", b'{"i": 0}')
    bomb = header(b"PaxHeaders/x", 8**11 - 1, b"x")  # 8 GiB of pax records, which tarfile reads in one call
    (tmp_path / "set.tar").write_bytes(good + bomb + b"\x00" * 1024)
    read, unread, _ = read_all(tmp_path)
    assert [r["i"] for r in read.values()] == [0]
    assert [(u.reason, "at once" in u.detail) for u in unread] == [("damaged_file", True)]


def test_a_gzipped_tar_is_read_through_the_same_guards(tmp_path):
    (tmp_path / "set.tar.gz").write_bytes(gzip.compress(tar_bytes([("a.jsonl", b'{"a": 1}\n{"a": 2}\n')]), mtime=0))
    read, unread, _ = read_all(tmp_path)
    assert sorted(read) == ["s/set_tar/a.jsonl#0", "s/set_tar/a.jsonl#1"] and unread == []


def test_a_damaged_zip_member_does_not_stop_the_others(tmp_path):
    with zipfile.ZipFile(tmp_path / "set.zip", "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a.jsonl", '{"a": 1}\n{"a": 2}\n')
        archive.writestr("b.jsonl", '{"b": 1}\n')
    raw = (tmp_path / "set.zip").read_bytes()
    at = raw.index(b'{"a": 2}')
    (tmp_path / "set.zip").write_bytes(raw[:at] + b'{"a": 9}' + raw[at + 8 :])  # breaks a.jsonl's CRC
    read, unread, _ = read_all(tmp_path)
    assert "s/set/b.jsonl#0" in read
    assert [u.reason for u in unread] == ["damaged_file"] and unread[0].id.startswith("s/set/a.jsonl#")
    (tmp_path / "set.zip").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SourceError, match="set.zip: not a readable zip file"):
        read_all(tmp_path)
