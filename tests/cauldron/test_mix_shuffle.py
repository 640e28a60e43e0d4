"""Scatter: every pick of a chunk lands in its shard's batch, copied a bounded piece at a time."""

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from cauldron import mix_shuffle
from cauldron.mix_shuffle import SCATTER_SCHEMA, file_chunks, image_bytes, scatter_chunk, shard_sources

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
    present = scatter_chunk(chunk, rows, picks, copies, samples_per_shard, tmp_path / "scatter.arrow")
    # a piece holds at most CHUNK_BYTES of images plus the shard that crosses it (was: all 512 picks, 5 MB)
    assert max(pieces) <= 50_000 + samples_per_shard * IMAGE and sum(pieces) == rows.size * IMAGE
    reader = ipc.open_file(pa.memory_map(str(tmp_path / "scatter.arrow")))
    assert reader.num_record_batches == present.size == rows.size // samples_per_shard
    seen = {}
    for number, shard in enumerate(present.tolist()):
        batch = reader.get_batch(number).to_pylist()
        for record in batch:
            seen[shard * samples_per_shard + record["slot"]] = (record["key"], record["images"][0]["bytes"][:1])
    assert sorted(seen) == list(range(rows.size))
    for pick, row, copy in zip(picks.tolist(), rows.tolist(), copies.tolist()):
        assert seen[pick] == (f"vqa-{row:08d}-{copy:03d}", bytes([row % 256]))


def test_shard_sources_list_every_batch_of_every_shard():
    present = [(0, np.array([0, 2, 3], np.int32)), (2, np.array([1, 2], np.int32)), (5, np.array([0, 3], np.int32))]
    sources = shard_sources(present, 4)
    listed = {shard: list(zip(*(a.tolist() for a in sources.of(shard)), strict=True)) for shard in range(4)}
    assert listed == {0: [(0, 0), (5, 0)], 1: [(2, 0)], 2: [(0, 1), (2, 1)], 3: [(0, 2), (5, 1)]}
