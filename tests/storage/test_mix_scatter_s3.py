"""`cauldron mix` scatter and gather on an object store: files, indexes and ranged reads, the reads of a
shard in flight together."""

import asyncio

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from cauldron import mix_shuffle
from cauldron.mix_shuffle import SCATTER_SCHEMA, file_chunks, gather_shard, scatter_chunk, shard_sources
from cauldron.sft_shards import sample_to_row
from curation.shards import iter_tar_samples

ROWS, SAMPLES_PER_SHARD = 16, 4


@pytest.fixture
def in_flight(monkeypatch):
    """The most object reads running at once."""
    seen = {"now": 0, "most": 0}
    original = s3fs.S3FileSystem._cat_file

    async def counted(self, *args, **kwargs):
        seen["now"] += 1
        seen["most"] = max(seen["most"], seen["now"])
        try:
            await asyncio.sleep(0.02)
            return await original(self, *args, **kwargs)
        finally:
            seen["now"] -= 1

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", counted)
    return seen


def test_shards_gather_from_scatter_files_on_a_store(bucket, tmp_path, monkeypatch, in_flight):
    texts = [[{"user": f"q{row}", "assistant": f"a{row}", "source": "s"}] for row in range(ROWS)]
    images = [[{"bytes": f"image {row}".encode(), "path": None}] for row in range(ROWS)]
    schema = pa.schema([SCATTER_SCHEMA.field("images"), SCATTER_SCHEMA.field("texts")])
    pq.write_table(pa.table({"images": images, "texts": texts}, schema), tmp_path / "part.parquet", row_group_size=8)
    monkeypatch.setattr(mix_shuffle, "CHUNK_ROWS", 8)
    chunks = file_chunks("vqa", [tmp_path / "part.parquet"])
    assert len(chunks) == 2
    position = np.random.default_rng(1).permutation(ROWS).astype(np.int64)  # row r is pick position[r]
    folder = bucket / "scatter"
    indexes = []
    for number, chunk in enumerate(chunks):
        rows = np.arange(chunk.start, chunk.stop, dtype=np.int64)
        copies = np.zeros(rows.size, np.int32)
        indexes.append((number, scatter_chunk(chunk, rows, position[rows], copies, SAMPLES_PER_SHARD, folder, number)))
    assert sorted(path.name for path in folder.iterdir()) == ["000000.arrow", "000000.index.npy", "000001.arrow", "000001.index.npy"]
    sources = shard_sources(indexes, ROWS // SAMPLES_PER_SHARD)
    out = tmp_path / "shards"
    for shard in range(ROWS // SAMPLES_PER_SHARD):
        files, starts, sizes = sources.of(shard)
        assert gather_shard(shard, folder, files, starts, sizes, out, SAMPLES_PER_SHARD)["count"] == SAMPLES_PER_SHARD
        samples = [sample_to_row(sample) for sample in iter_tar_samples(out / f"sft-{shard:05d}-00000.tar")]
        wanted = [int(np.flatnonzero(position == pick)[0]) for pick in range(shard * SAMPLES_PER_SHARD, (shard + 1) * SAMPLES_PER_SHARD)]
        assert [row["images"] for row in samples] == [[f"image {row}".encode()] for row in wanted]  # in slot order
    assert in_flight["most"] > 1  # a shard's batches come from both files at once, not one request after another
