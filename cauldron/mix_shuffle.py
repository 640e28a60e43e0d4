"""Writing a planned mixture as shuffled SFT shards without holding it anywhere: count, scatter, gather.

Counting reads only the leaf column of the assistant texts (`texts.list.element.assistant`) of each
subset file, never its images. The plan (`cauldron.mixture`) says how often each row appears; the
picks, (dataset, row, copy) triples in NumPy, are laid out in one seeded random order, and pick `k`
lands in shard `k // samples_per_shard` at slot `k % samples_per_shard`.

Scatter: one task per chunk of row groups of a subset file reads those rows once and writes every pick
of them to an Arrow IPC file, one record batch per destination shard, in shard order. Gather: one task
per shard reads its batch from each scatter file (random access through the IPC footer), orders the rows by
slot and writes the tar. Each row is read once and written twice; a task's memory is bounded by a
chunk of row groups or by one shard; the driver holds the picks and, per shard, its (scatter file,
batch) pairs, both NumPy and both linear in the picks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from cauldron.mixture import MixturePlan
from cauldron.sft_shards import row_to_sample
from curation.atomic import atomic_path
from curation.errors import UserError
from curation.shards import PartitionShardWriter
from curation.storage import StoragePath, open_arrow_input, parquet_file, storage_path

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


def present_shards(picks: np.ndarray, samples_per_shard: int) -> np.ndarray:
    """The shards that picks (pick numbers) land in, ascending: the batches of their scatter file, in order."""
    return np.unique(picks // samples_per_shard)


def shard_name(shard: int) -> str:
    """The partition name of shard `shard`: its tar is `<name>-00000.tar`, its manifest `<name>.manifest.json`."""
    return f"sft-{shard:05d}"


def scatter_file(folder: StoragePath, number: int) -> StoragePath:
    """Where scatter task `number` writes its picks."""
    return folder / f"{number:06d}.arrow"


@dataclass(frozen=True)
class ShardSources:
    """The batches of each shard: shard s is batch `batches[i]` of scatter file `files[i]` for i in
    [offsets[s], offsets[s + 1]). Sized by the (file, shard) pairs that hold picks, at most one per pick."""

    offsets: np.ndarray  # int64, shards + 1
    files: np.ndarray  # int32 scatter file numbers
    batches: np.ndarray  # int32 batch numbers within those files

    def of(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self.offsets[shard]), int(self.offsets[shard + 1])
        return self.files[lo:hi], self.batches[lo:hi]


def shard_sources(present: Sequence[tuple[int, np.ndarray]], shards: int) -> ShardSources:
    """Per shard, its (scatter file, batch) pairs, from each file's shards present (batch i holds shard
    `present[i]`, ascending): a counting sort by shard, files ascending within a shard."""
    counts = np.zeros(shards, dtype=np.int64)
    for _, numbers in present:
        counts[numbers] += 1  # a file holds each shard at most once
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    cursor = offsets[:-1].copy()
    files = np.empty(int(offsets[-1]), dtype=np.int32)
    batches = np.empty(int(offsets[-1]), dtype=np.int32)
    for file, numbers in present:
        where = cursor[numbers]
        files[where] = file
        batches[where] = np.arange(numbers.size, dtype=np.int32)
        cursor[numbers] += 1
    return ShardSources(offsets, files, batches)


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
    chunk: Chunk, rows: np.ndarray, picks: np.ndarray, copies: np.ndarray, samples_per_shard: int, out: StoragePath
) -> np.ndarray:
    """Write the picks of one chunk (rows of the dataset, pick numbers, copy numbers) to `out`, a batch per shard.

    Returns the shard numbers present, ascending: batch i of `out` belongs to shard `result[i]`. Picks are
    copied from the chunk a few shards at a time, at most CHUNK_ROWS picks or CHUNK_BYTES of images (or
    one shard), so a row repeated many times is never copied all at once: memory stays near the chunk's
    own size whatever the repetition factor.
    """
    table = parquet_file(storage_path(chunk.path)).read_row_groups(
        list(range(chunk.first_group, chunk.last_group)), columns=["images", "texts"]
    )
    order = np.argsort(picks, kind="stable")
    picks, rows, copies = picks[order], rows[order], copies[order]
    present, starts = np.unique(picks // samples_per_shard, return_index=True)
    ends = np.r_[starts[1:], picks.size].astype(np.int64)
    spent = np.r_[0, np.cumsum(image_bytes(table)[rows - chunk.start])]  # image bytes of picks [0, k)
    with atomic_path(out) as partial, ipc.new_file(str(partial), SCATTER_SCHEMA) as writer:
        first = 0
        while first < present.size:
            by_rows = np.searchsorted(ends, starts[first] + CHUNK_ROWS, side="right")
            by_bytes = np.searchsorted(spent[ends], spent[starts[first]] + CHUNK_BYTES, side="right")
            last = max(first + 1, int(min(by_rows, by_bytes)))
            lo, hi = int(starts[first]), int(ends[last - 1])
            piece = _scattered(chunk, table, rows[lo:hi], picks[lo:hi], copies[lo:hi], samples_per_shard)
            for start, end in zip(starts[first:last].tolist(), ends[first:last].tolist(), strict=True):
                writer.write_batch(piece.slice(start - lo, end - start).combine_chunks().to_batches()[0])
            first = last
    return present.astype(np.int64)


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
    shard: int, folder: StoragePath, files: np.ndarray, batches: np.ndarray, out_dir: StoragePath, samples_per_shard: int
) -> dict[str, Any]:
    """Write shard `shard` from its batches (batch `batches[i]` of scatter file `files[i]` in `folder`), in slot order."""
    tables = []
    for file, batch in zip(files.tolist(), batches.tolist(), strict=True):
        with open_arrow_input(scatter_file(folder, file)) as source:  # reads just that batch (the footer says where it is)
            tables.append(pa.Table.from_batches([ipc.open_file(source).get_batch(batch)]))
    table = pa.concat_tables(tables) if tables else SCATTER_SCHEMA.empty_table()
    table = table.take(pc.sort_indices(table.column("slot")))
    writer = PartitionShardWriter(out_dir, shard_name(shard), samples_per_shard)
    for row in table.to_pylist():
        images = [image["bytes"] for image in row["images"]]
        writer.write(row_to_sample(row["key"], {"images": images, "texts": row["texts"]}, dataset=row["dataset"]))
    return writer.close()
