"""Scatter: every pick of a chunk lands in its shard's batch, copied a bounded piece at a time."""

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from cauldron import mix_shuffle
from cauldron.mix_shuffle import SCATTER_SCHEMA, file_chunks, image_bytes, read_index, scatter_chunk, scatter_file, shard_sources

ROWS, REPEATS, IMAGE = 64, 8, 10_000


def write_subset(path):
    images = [[{"bytes": bytes([row % 256]) * IMAGE, "path": None}] for row in range(ROWS)]
    texts = [[{"user": f"q{row}", "assistant": f"a{row}", "source": "s"}] for row in range(ROWS)]
    table = pa.table({"images": images, "texts": texts}, pa.schema([SCATTER_SCHEMA.field("images"), SCATTER_SCHEMA.field("texts")]))
    pq.write_table(table, path)


def test_image_bytes_per_row():
    images = [[{"bytes": b"abc", "path": None}], None, [], [{"bytes": b"12345", "path": None}, {"bytes": None, "path": "x"}]]
    table = pa.table({"images": pa.array(images, SCATTER_SCHEMA.field("images").type)})
    assert image_bytes(table).tolist() == [3, 0, 0, 5]
    assert image_bytes(pa.concat_tables([table.slice(0, 2), table.slice(3)])).tolist() == [3, 0, 5]


def test_a_repeated_chunk_is_scattered_in_pieces_bounded_by_bytes(tmp_path, monkeypatch):
    write_subset(tmp_path / "part.parquet")
    [chunk] = file_chunks("vqa", [tmp_path / "part.parquet"])
    rows = np.repeat(np.arange(ROWS, dtype=np.int64), REPEATS)  # every row 8 times: a factor of 8
    copies = np.tile(np.arange(REPEATS, dtype=np.int32), ROWS)
    picks = np.random.default_rng(0).permutation(rows.size).astype(np.int64)
    samples_per_shard = 4
    monkeypatch.setattr(mix_shuffle, "CHUNK_BYTES", 50_000)
    pieces = []
    real = mix_shuffle._scattered

    def recording(*args):
        piece = real(*args)
        pieces.append(sum(len(image["bytes"]) for row in piece.column("images").to_pylist() for image in row))
        return piece

    monkeypatch.setattr(mix_shuffle, "_scattered", recording)
    index = scatter_chunk(chunk, rows, picks, copies, samples_per_shard, tmp_path, 7)
    # a piece holds at most CHUNK_BYTES of images plus the shard that crosses it (was: all 512 picks, 5 MB)
    assert max(pieces) <= 50_000 + samples_per_shard * IMAGE and sum(pieces) == rows.size * IMAGE
    assert np.array_equal(read_index(tmp_path / "000007.index.npy"), index)
    shards, sizes = index
    assert shards.tolist() == list(range(rows.size // samples_per_shard))
    data = scatter_file(tmp_path, 7).read_bytes()
    assert sizes.sum() == len(data)
    seen = {}
    for shard, start, size in zip(shards.tolist(), (np.cumsum(sizes) - sizes).tolist(), sizes.tolist(), strict=True):
        batch = ipc.read_record_batch(pa.py_buffer(data[start : start + size]), SCATTER_SCHEMA).to_pylist()
        for record in batch:
            seen[shard * samples_per_shard + record["slot"]] = (record["key"], record["images"][0]["bytes"][:1])
    assert sorted(seen) == list(range(rows.size))
    for pick, row, copy in zip(picks.tolist(), rows.tolist(), copies.tolist()):
        assert seen[pick] == (f"vqa-{row:08d}-{copy:03d}", bytes([row % 256]))


def test_shard_sources_list_every_batch_of_every_shard():
    indexes = [(0, np.array([[0, 2, 3], [5, 6, 7]])), (2, np.array([[1, 2], [8, 9]])), (5, np.array([[0, 3], [3, 4]]))]
    sources = shard_sources(indexes, 4)
    listed = {shard: list(zip(*(a.tolist() for a in sources.of(shard)), strict=True)) for shard in range(4)}
    assert listed == {  # (file, byte offset, byte size): a file's batches lie back to back
        0: [(0, 0, 5), (5, 0, 3)],
        1: [(2, 0, 8)],
        2: [(0, 5, 6), (2, 8, 9)],
        3: [(0, 11, 7), (5, 3, 4)],
    }
