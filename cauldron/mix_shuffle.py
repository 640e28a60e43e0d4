"""Writing a planned mixture as shuffled SFT shards without holding it anywhere: count, scatter, gather.

Counting reads only the leaf column of the assistant texts (`texts.list.element.assistant`) of each
subset file, never its images. The plan (`cauldron.mixture`) says how often each row appears; the
picks, (dataset, row, copy) triples in NumPy, are laid out in one seeded random order, and pick `k`
lands in shard `k // samples_per_shard` at slot `k % samples_per_shard`.

Scatter: one task per chunk of row groups of a subset file reads those rows once and writes every pick
of them to a scatter file, one serialized Arrow record batch (an IPC message) per destination shard, in
shard order, back to back, and an index beside it (`<n>.index.npy`: shard and byte size of each batch). Gather:
one task per shard reads exactly its batch's byte range from each scatter file (one ranged read, no
footer: a scatter file holds up to thousands of batches of a row or so each), orders the rows by slot
and writes the tar. Each row is read once and written twice; a task's memory is bounded by a chunk of
row groups or by one shard; the driver holds the picks and, per shard, its (scatter file, offset, size)
triples, both NumPy and both linear in the picks.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from cauldron.mixture import MixturePlan
from cauldron.sft_shards import row_to_sample
from curation.atomic import atomic_open, atomic_path
from curation.errors import UserError
from curation.shards import PartitionShardWriter
from curation.storage import ObjectPath, StoragePath, local_only, parquet_file, storage_path

CHUNK_ROWS = 4096
CHUNK_BYTES = 128 * 2**20
SCATTER_SCHEMA = pa.schema(
    [
        ("slot", pa.int32()),
        ("key", pa.string()),
        ("dataset", pa.string()),
        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
        ("texts", pa.list_(pa.struct([("user", pa.string()), ("assistant", pa.string()), ("source", pa.string())]))),
    ]
)


def assistant_column(path: StoragePath) -> str:
    """The parquet path of the assistant-text leaf (`texts.list.element.assistant`, or `item` in older files)."""
    schema = parquet_file(path).schema
    for i in range(len(schema)):
        column = schema.column(i).path
        if column.startswith("texts.") and column.endswith(".assistant"):
            return column
    raise UserError(f"{path}: no texts[].assistant column; not a subset in the_cauldron schema")


def assistant_texts(path: StoragePath, batch_rows: int = 8192) -> Any:
    """Batches of rows' assistant texts (lists of strings), reading nothing but that leaf column."""
    column = assistant_column(path)
    for batch in parquet_file(path).iter_batches(batch_size=batch_rows, columns=[column]):
        turns = batch.column(0)
        yield [[t["assistant"] for t in row] if row else [] for row in turns.to_pylist()]


@dataclass(frozen=True)
class Picks:
    """The mixture's rows in shuffled order: pick k is row `row[k]` of dataset `dataset[k]` (copy `copy[k]`)."""

    names: tuple[str, ...]
    dataset: np.ndarray  # int32 index into names
    row: np.ndarray  # int64
    copy: np.ndarray  # int32: 0 for the first appearance of a row, 1 for its repeat, ...

    def __len__(self) -> int:
        return int(self.row.size)


def shuffled_picks(plan: MixturePlan, seed: int) -> Picks:
    names = tuple(plan.datasets)
    datasets, rows, copies = [], [], []
    for number, name in enumerate(names):
        multiplicity = plan.datasets[name].multiplicity
        indices = np.repeat(np.arange(multiplicity.size, dtype=np.int64), multiplicity)
        starts = np.repeat(np.cumsum(multiplicity) - multiplicity, multiplicity)
        datasets.append(np.full(indices.size, number, dtype=np.int32))
        rows.append(indices)
        copies.append((np.arange(indices.size) - starts).astype(np.int32))
    order = np.random.default_rng(seed).permutation(sum(r.size for r in rows))

    def shuffled(parts: list[np.ndarray], dtype: type[np.generic]) -> np.ndarray:
        return np.concatenate(parts)[order] if parts else np.zeros(0, dtype)

    return Picks(names, shuffled(datasets, np.int32), shuffled(rows, np.int64), shuffled(copies, np.int32))


def shard_name(shard: int) -> str:
    """The partition name of shard `shard`: its tar is `<name>-00000.tar`, its manifest `<name>.manifest.json`."""
    return f"sft-{shard:05d}"


def scatter_file(folder: StoragePath, number: int) -> StoragePath:
    """Where scatter task `number` writes its picks."""
    return folder / f"{number:06d}.arrow"


def index_file(folder: StoragePath, number: int) -> StoragePath:
    """The index of scatter file `number`: a (2, batches) int64 array, the shard and the byte size of each
    batch; the batches lie back to back from the start of the file."""
    return folder / f"{number:06d}.index.npy"


def read_index(path: StoragePath) -> np.ndarray:
    """A scatter file's index as `scatter_chunk` wrote it (a resumed mix reads it instead of scattering)."""
    return np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)


@dataclass(frozen=True)
class ShardSources:
    """The batches of each shard: for i in [offsets[s], offsets[s + 1]), shard s has the `sizes[i]` bytes
    at `starts[i]` of scatter file `files[i]`. Sized by the (file, shard) pairs, at most one per pick."""

    offsets: np.ndarray  # int64, shards + 1
    files: np.ndarray  # int32 scatter file numbers
    starts: np.ndarray  # int64 byte offsets of the batches in those files
    sizes: np.ndarray  # int32 byte sizes of the batches

    def of(self, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = int(self.offsets[shard]), int(self.offsets[shard + 1])
        return self.files[lo:hi], self.starts[lo:hi], self.sizes[lo:hi]


def shard_sources(indexes: Sequence[tuple[int, np.ndarray]], shards: int) -> ShardSources:
    """Per shard, its (scatter file, offset, size) triples, from each scatter file's index (`index_file`):
    a counting sort by shard, files ascending within a shard."""
    counts = np.zeros(shards, dtype=np.int64)
    for _, index in indexes:
        counts[index[0]] += 1  # a file holds each shard at most once
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    cursor = offsets[:-1].copy()
    files = np.empty(int(offsets[-1]), dtype=np.int32)
    starts = np.empty(int(offsets[-1]), dtype=np.int64)
    sizes = np.empty(int(offsets[-1]), dtype=np.int32)
    for file, index in indexes:
        where = cursor[index[0]]
        files[where] = file
        starts[where] = np.cumsum(index[1]) - index[1]
        sizes[where] = index[1]
        cursor[index[0]] += 1
    return ShardSources(offsets, files, starts, sizes)


@dataclass(frozen=True)
class Chunk:
    """Row groups [first_group, last_group) of one subset file: rows [start, stop) of its dataset."""

    dataset: str
    path: str
    first_group: int
    last_group: int
    start: int
    stop: int


def file_chunks(dataset: str, paths: Sequence[StoragePath]) -> list[Chunk]:
    """Chunks of at most CHUNK_ROWS rows / CHUNK_BYTES (whole row groups) over a dataset's files, in row order."""
    chunks, offset = [], 0
    for path in paths:
        meta = parquet_file(path).metadata
        first, rows, size = 0, 0, 0
        for group in range(meta.num_row_groups):
            rows += meta.row_group(group).num_rows
            size += meta.row_group(group).total_byte_size
            if rows >= CHUNK_ROWS or size >= CHUNK_BYTES or group == meta.num_row_groups - 1:
                chunks.append(Chunk(dataset, str(path), first, group + 1, offset, offset + rows))
                offset += rows
                first, rows, size = group + 1, 0, 0
    return chunks


def scatter_chunk(
    chunk: Chunk, rows: np.ndarray, picks: np.ndarray, copies: np.ndarray, samples_per_shard: int, folder: StoragePath, number: int
) -> np.ndarray:
    """Write the picks of one chunk (rows of the dataset, pick numbers, copy numbers) to scatter file
    `number` in `folder`, a batch per shard, then its index (`index_file`), which it also returns.

    Shards ascend in the index. Picks are copied from the chunk a few shards at a time, at most CHUNK_ROWS
    picks or CHUNK_BYTES of images (or one shard), so a row repeated many times is never copied all at
    once: memory stays near the chunk's own size whatever the repetition factor.
    """
    table = parquet_file(storage_path(chunk.path)).read_row_groups(
        list(range(chunk.first_group, chunk.last_group)), columns=["images", "texts"]
    )
    order = np.argsort(picks, kind="stable")
    picks, rows, copies = picks[order], rows[order], copies[order]
    present, starts = np.unique(picks // samples_per_shard, return_index=True)
    ends = np.r_[starts[1:], picks.size].astype(np.int64)
    spent = np.r_[0, np.cumsum(image_bytes(table)[rows - chunk.start])]  # image bytes of picks [0, k)
    index = np.zeros((2, present.size), dtype=np.int64)
    index[0] = present
    with atomic_path(scatter_file(folder, number)) as partial, open(partial, "wb") as handle:
        first = 0
        while first < present.size:
            by_rows = np.searchsorted(ends, starts[first] + CHUNK_ROWS, side="right")
            by_bytes = np.searchsorted(spent[ends], spent[starts[first]] + CHUNK_BYTES, side="right")
            last = max(first + 1, int(min(by_rows, by_bytes)))
            lo, hi = int(starts[first]), int(ends[last - 1])
            piece = _scattered(chunk, table, rows[lo:hi], picks[lo:hi], copies[lo:hi], samples_per_shard)
            for batch, (start, end) in enumerate(zip(starts[first:last].tolist(), ends[first:last].tolist(), strict=True), first):
                message = piece.slice(start - lo, end - start).combine_chunks().to_batches()[0].serialize()
                if message.size >= 2**31:  # sizes travel as int32
                    raise UserError(f"shard {present[batch]}: over 2 GiB from one chunk; use fewer samples per shard")
                index[1, batch] = message.size
                handle.write(message)
            first = last
    with atomic_open(index_file(folder, number), "wb") as handle:  # after the data: an index marks it complete
        np.save(handle, index, allow_pickle=False)
    return index


def image_bytes(table: pa.Table) -> np.ndarray:
    """Encoded image bytes of each row of a table with an `images` list<struct<bytes, path>> column."""
    images = table.column("images").combine_chunks()
    sizes = pc.binary_length(images.flatten().field("bytes")).fill_null(0).to_numpy(zero_copy_only=False)
    total = np.r_[0, np.cumsum(sizes, dtype=np.int64)]
    offsets = images.offsets.to_numpy() - images.offsets[0].as_py()
    return total[offsets[1:]] - total[offsets[:-1]]


def _scattered(chunk: Chunk, table: pa.Table, rows: np.ndarray, picks: np.ndarray, copies: np.ndarray, samples_per_shard: int) -> pa.Table:
    taken = table.take(pa.array(rows - chunk.start))
    keys = [f"{chunk.dataset}-{int(r):08d}-{int(c):03d}" for r, c in zip(rows, copies, strict=True)]
    return pa.table(
        {
            "slot": pa.array(picks % samples_per_shard, pa.int32()),
            "key": keys,
            "dataset": pa.array([chunk.dataset] * len(keys), pa.string()),
            "images": taken.column("images"),
            "texts": taken.column("texts"),
        }
    ).cast(SCATTER_SCHEMA)


def gather_shard(
    shard: int, folder: StoragePath, files: np.ndarray, starts: np.ndarray, sizes: np.ndarray, out_dir: StoragePath, samples_per_shard: int
) -> dict[str, Any]:
    """Write shard `shard` from its batches (`sizes[i]` bytes at `starts[i]` of scatter file `files[i]` in
    `folder`), in slot order."""
    messages = _read_ranges(folder, files.tolist(), starts.tolist(), sizes.tolist())
    tables = [pa.Table.from_batches([ipc.read_record_batch(pa.py_buffer(message), SCATTER_SCHEMA)]) for message in messages]
    table = pa.concat_tables(tables) if tables else SCATTER_SCHEMA.empty_table()
    table = table.take(pc.sort_indices(table.column("slot")))
    writer = PartitionShardWriter(out_dir, shard_name(shard), samples_per_shard)
    for row in table.to_pylist():
        images = [image["bytes"] for image in row["images"]]
        writer.write(row_to_sample(row["key"], {"images": images, "texts": row["texts"]}, dataset=row["dataset"]))
    return writer.close()


def _read_ranges(folder: StoragePath, files: list[int], starts: list[int], sizes: list[int]) -> list[bytes]:
    """`sizes[i]` bytes at `starts[i]` of scatter file `files[i]` in `folder`: one ranged GET per object,
    the requests of one call in flight together (fsspec's `cat_ranges`), not one after the other; local
    files read in turn."""
    paths = [scatter_file(folder, file) for file in files]
    if isinstance(folder, ObjectPath):
        ends = [start + size for start, size in zip(starts, sizes, strict=True)]
        return [bytes(data) for data in folder.fs.cat_ranges(list(map(str, paths)), starts, ends, on_error="raise")]
    messages = []
    for path, start, size in zip(paths, starts, sizes, strict=True):
        with open(local_only(path, "a scatter file"), "rb") as handle:
            handle.seek(start)
            messages.append(handle.read(size))
    return messages
