"""Merge by image: identical decoded pixels (any encoding or mode) in the same order share a merge key,
and grouping by key finds each group and its first row; the streaming merge writes one row per group."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cauldron import build_merge
from cauldron.build_merge import merge_subset
from cauldron.images import pixel_hash
from cauldron.merge import KEY_BYTES, KEY_DTYPE, find_groups, merge_key
from cauldron.spill import BUCKET_SCHEMA, SPILL_SCHEMA, LedgerSink

from .conftest import encode, make_photo


def turn(text):
    return {"user": f"Q {text}", "assistant": f"A {text}", "source": "test"}


def keys_array(keys):
    filled = b"".join(key if key is not None else b"\0" * KEY_BYTES for key in keys)
    return np.frombuffer(filled, dtype=KEY_DTYPE), np.array([key is not None for key in keys], dtype=bool)


def key_of(*images):
    return merge_key([pixel_hash(data) for data in images])


def test_same_pixels_share_a_key_whatever_the_encoding_and_order_matters():
    photo, other = make_photo(10), make_photo(11)
    png, bmp, rgba = encode(photo), encode(photo, "BMP"), encode(photo.convert("RGBA"))
    assert key_of(png) == key_of(bmp) == key_of(rgba) != key_of(encode(other))
    assert key_of(png, encode(other)) != key_of(encode(other), png)
    assert key_of(png) != key_of(encode(photo, "JPEG", quality=95))  # a lossy copy is another image
    assert merge_key([]) is None


def test_groups_have_their_first_row_as_leader_and_keyless_rows_stay_alone():
    a, b = b"a" * 16, b"b" * 16
    keys, has_key = keys_array([a, None, b, a, None, b, a])
    groups = find_groups(keys, has_key)
    assert groups.leader.tolist() == [0, 1, 2, 0, 4, 2, 0]
    assert groups.size.tolist() == [3, 1, 2, 3, 1, 2, 3]
    alone = find_groups(keys, has_key, merge=False)
    assert alone.leader.tolist() == list(range(7)) and alone.merged_rows == 0


def spill(path: Path, rows):
    records = [
        {
            "row_id": row_id,
            "key": key_of(*images) if images else None,
            "images": [{"bytes": d, "path": None} for d in images],
            "texts": texts,
        }
        for row_id, images, texts in rows
    ]
    pq.write_table(pa.Table.from_pylist(records, schema=SPILL_SCHEMA), path, row_group_size=2)
    return path


class CountingSink(build_merge.ParquetSink):
    """A ParquetSink that records the most bucket files open at once."""

    open_now = 0
    most_open = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.schema == BUCKET_SCHEMA:
            CountingSink.open_now += 1
            CountingSink.most_open = max(CountingSink.most_open, CountingSink.open_now)

    def close(self):
        if self.schema == BUCKET_SCHEMA:
            CountingSink.open_now -= 1
        return super().close()


@pytest.mark.parametrize(("bucket_bytes", "max_open"), [(build_merge.BUCKET_BYTES, 64), (1, 64), (1, 1)])
def test_merge_subset_streams_rows_into_one_row_per_image(tmp_path, monkeypatch, bucket_bytes, max_open):
    monkeypatch.setattr(build_merge, "BUCKET_BYTES", bucket_bytes)  # 1 byte: every group in its own bucket file
    monkeypatch.setattr(build_merge, "MAX_OPEN_BUCKETS", max_open)  # 1: a pass over the spills per bucket
    monkeypatch.setattr(build_merge, "ParquetSink", CountingSink)
    monkeypatch.setattr(CountingSink, "most_open", 0)
    photo, other = make_photo(20), make_photo(21)
    png, bmp, png2 = encode(photo), encode(photo, "BMP"), encode(other)
    first = spill(tmp_path / "a.parquet", [("s/a#0", [png], [turn(1)]), ("s/a#1", [png2], [turn(2)]), ("s/a#2", [], [turn(3)])])
    second = spill(
        tmp_path / "b.parquet",
        [("s/b#0", [bmp], [turn(4), turn(5)]), ("s/b#1", [], [turn(3)]), ("s/b#2", [png2], [turn(6)]), ("s/b#3", [png], [turn(7)])],
    )
    with LedgerSink(tmp_path / "ledger.parquet") as ledger:
        outcome = merge_subset([first, second], tmp_path / "out.parquet", ledger, "s", tmp_path / "work")
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert (outcome.count, outcome.merged, outcome.turns) == (4, 3, 8)
    singles, merged = rows[:2], rows[2:]
    assert [r["texts"] for r in singles] == [[turn(3)], [turn(3)]]  # text-only rows never merge
    by_first_turn = {r["texts"][0]["assistant"]: r for r in merged}
    assert by_first_turn["A 1"]["texts"] == [turn(1), turn(4), turn(5), turn(7)]
    assert [i["bytes"] for i in by_first_turn["A 1"]["images"]] == [png]  # the leader's encoded bytes
    assert by_first_turn["A 2"]["texts"] == [turn(2), turn(6)]
    ledger_rows = pq.read_table(tmp_path / "ledger.parquet").to_pylist()
    assert {(r["id"], r["reason"], r["detail"]) for r in ledger_rows} == {
        ("s/b#0", "merged_by_image", "into s/a#0"),
        ("s/b#3", "merged_by_image", "into s/a#0"),
        ("s/b#2", "merged_by_image", "into s/a#1"),
    }
    assert not (tmp_path / "work" / "buckets").exists()
    assert CountingSink.most_open == (1 if bucket_bytes > 1 else min(2, max_open))


def test_keys_are_read_without_the_rest_of_the_spill(tmp_path):
    path = spill(tmp_path / "a.parquet", [("x#0", [encode(make_photo(1))], [turn(1)]), ("x#1", [], [turn(2)])])
    keys, has_key = build_merge.read_keys([path, path])
    assert has_key.tolist() == [True, False, True, False]
    assert keys[0] == keys[2] and np.all(keys[1] == np.zeros(1, keys.dtype))
