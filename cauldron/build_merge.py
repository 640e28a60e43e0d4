"""The second pass of `cauldron build` over one subset: merge rows showing the same image(s), write the subset.

Only merge keys and groups are held in memory (16 bytes per row each, in NumPy): the spills' `key`
columns are read alone, and sorting them (`cauldron.merge`) finds every group of rows with identical
images and its leader (the group's first row in input order). The rows then stream through again: a
row alone in its group is written straight to the subset file; the rows of larger groups go, without
their images except the leader's, to bucket files by leader (about `BUCKET_BYTES` each). At most
`MAX_OPEN_BUCKETS` bucket files are written at once, each buffering at most `BUCKET_BUFFER_BYTES` of
images; more buckets are filled by further passes over the spills, which skip other rows before they
become Python objects. Each bucket is then read on its own (memory bounded by a bucket), sorted by
(leader, position), and every group becomes one row: the leader's images and all turns in input
order; the other members are ledgered `merged_by_image` into the leader. The subset file holds the
single rows first, in input order, then the merged rows, bucket by bucket.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cauldron.merge import KEY_BYTES, KEY_DTYPE, Groups, find_groups
from cauldron.schema import CAULDRON_ARROW_SCHEMA
from cauldron.spill import BUCKET_SCHEMA, LedgerSink, ParquetSink
from curation.ledger import LedgerEntry
from curation.storage import StoragePath, parquet_file, read_parquet

BUCKET_BYTES = 64 * 2**20  # aim for bucket files of about this size (a merge task holds one, sorted)
MAX_OPEN_BUCKETS = 64  # bucket files written in one pass over the spills
BUCKET_BUFFER_BYTES = 4 * 2**20  # images a bucket file holds before writing them out as a row group
READ_ROWS = 256


def read_keys(spills: Sequence[StoragePath]) -> tuple[np.ndarray, np.ndarray]:
    """The merge keys of every spilled row, in order, as (keys, has_key); only the `key` column is read."""
    chunks, present = [], []
    for spill in spills:
        column = read_parquet(spill, columns=["key"]).column("key").combine_chunks()
        present.append(column.is_valid().to_numpy(zero_copy_only=False))
        filled = column.fill_null(b"\0" * KEY_BYTES)
        data = filled.buffers()[1]
        chunks.append(
            np.frombuffer(data, dtype=KEY_DTYPE, count=len(filled), offset=filled.offset * KEY_BYTES)
            if len(filled)
            else np.zeros(0, KEY_DTYPE)
        )
    if not chunks:
        return np.zeros(0, KEY_DTYPE), np.zeros(0, bool)
    return np.concatenate(chunks), np.concatenate(present)


def _spill_rows(spills: Sequence[StoragePath], wanted: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
    """(position, row) of the spilled rows where `wanted` is set, in order; the others are never converted."""
    position = 0
    for spill in spills:
        for batch in parquet_file(spill).iter_batches(batch_size=READ_ROWS, columns=["row_id", "images", "texts"]):
            picked = np.flatnonzero(wanted[position : position + batch.num_rows])
            if picked.size:
                for offset, row in zip(picked.tolist(), batch.take(picked).to_pylist(), strict=True):
                    yield position + offset, row
            position += batch.num_rows


def _bucket_count(spills: Sequence[StoragePath], groups: Groups) -> int:
    total = sum(spill.stat().st_size for spill in spills)
    share = groups.merged_rows / max(1, len(groups.size))
    return max(1, math.ceil(total * share / BUCKET_BYTES))


@dataclass
class MergeOutcome:
    count: int  # rows in the subset file
    turns: int
    merged: int  # input rows merged into another row


def merge_subset(
    spills: Sequence[StoragePath], out: StoragePath, ledger: LedgerSink, subset: str, work: Path, merge: bool = True
) -> MergeOutcome:
    """Write the subset file `out` from the spills (in order); ledger every row merged into another. The
    buckets go to `work`, a local folder."""
    keys, has_key = read_keys(spills)
    groups = find_groups(keys, has_key, merge)
    del keys, has_key
    buckets_dir = work / "buckets"
    shutil.rmtree(buckets_dir, ignore_errors=True)
    count = _bucket_count(spills, groups)
    used = np.unique(groups.leader[groups.size > 1] % count)  # the buckets that get rows
    outcome = MergeOutcome(0, 0, 0)
    with ParquetSink(out, CAULDRON_ARROW_SCHEMA) as sink:
        for first in range(0, max(used.size, 1), MAX_OPEN_BUCKETS):
            wave = used[first : first + MAX_OPEN_BUCKETS]
            for bucket in _fill_buckets(spills, groups, count, wave, buckets_dir, sink if first == 0 else None, outcome):
                _write_merged(bucket, sink, ledger, subset, outcome)
                bucket.unlink()
    shutil.rmtree(buckets_dir, ignore_errors=True)
    return outcome


def _fill_buckets(
    spills: Sequence[StoragePath],
    groups: Groups,
    count: int,
    wave: np.ndarray,
    buckets_dir: Path,
    singles: ParquetSink | None,
    outcome: MergeOutcome,
) -> list[Path]:
    """One pass over the spills: rows of groups whose bucket (leader modulo `count`) is one of `wave` go
    to their bucket files, and, given `singles`, rows alone in their group go there. The filled buckets, in order."""
    grouped = groups.size > 1
    bucket_of = groups.leader % count
    in_wave = grouped & np.isin(bucket_of, wave)
    wanted = in_wave | ~grouped if singles is not None else in_wave
    buckets: dict[int, ParquetSink] = {}
    for position, row in _spill_rows(spills, wanted):
        if singles is not None and not grouped[position]:
            singles.append({"images": row["images"], "texts": row["texts"]})
            outcome.count += 1
            outcome.turns += len(row["texts"])
            continue
        lead, number = int(groups.leader[position]), int(bucket_of[position])
        bucket = buckets.get(number) or buckets.setdefault(
            number, ParquetSink(_bucket_path(buckets_dir, number), BUCKET_SCHEMA, group_bytes=BUCKET_BUFFER_BYTES)
        )
        images = row["images"] if lead == position else []
        bucket.append({"leader": lead, "position": position, "row_id": row["row_id"], "images": images, "texts": row["texts"]})
    for sink in buckets.values():
        sink.close()
    return [_bucket_path(buckets_dir, number) for number in sorted(buckets)]


def _bucket_path(buckets_dir: Path, number: int) -> Path:
    return buckets_dir / f"{number:05d}.parquet"


def _write_merged(bucket: Path, sink: ParquetSink, ledger: LedgerSink, subset: str, outcome: MergeOutcome) -> None:
    table = read_parquet(bucket).sort_by([("leader", "ascending"), ("position", "ascending")])
    leaders = table.column("leader").to_numpy()
    starts = np.flatnonzero(np.r_[True, leaders[1:] != leaders[:-1]]) if len(leaders) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(leaders)]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        group = table.slice(start, end - start).to_pylist()
        head = group[0]
        sink.append({"images": head["images"], "texts": [turn for member in group for turn in member["texts"]]})
        outcome.count += 1
        outcome.turns += sum(len(member["texts"]) for member in group)
        for member in group[1:]:
            outcome.merged += 1
            ledger.add(LedgerEntry(member["row_id"], subset, "merge", "merged_by_image", f"into {head['row_id']}"))


def copy_ledger_parts(parts: Sequence[StoragePath], ledger: LedgerSink) -> int:
    """Append the files' ledger parts to the subset's ledger, a row group at a time; returns the entries copied."""
    copied = 0
    for part in parts:
        for batch in parquet_file(part).iter_batches(batch_size=4096):
            ledger.write_table(pa.Table.from_batches([batch]))
            copied += batch.num_rows
    return copied
