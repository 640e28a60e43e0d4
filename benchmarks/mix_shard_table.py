"""Driver memory and time of `cauldron mix`'s shard table (which scatter batches make each shard) as picks grow.

Synthetic scatter results: P picks in one seeded random order, scatter chunks of 4096 consecutive rows
(CHUNK_ROWS), shards of 1000 samples; a chunk's present shards are the distinct shards of its picks,
what `scatter_chunk` returns. Both sides then build every gather task's arguments, one shard at a time.

- old: a dense (chunks x shards) int32 table of batch numbers, and per shard a list of
  (scatter path string, batch) pairs; the table grows as picks squared.
- new: the scatter indexes as the driver keeps them ((shard, byte size) per batch, int32), then
  `cauldron.mix_shuffle.shard_sources`, a counting sort of the (file, shard) pairs (file, byte offset,
  byte size: 16 bytes, at most one pair per pick), and per shard three NumPy slices; linear in the picks.

Peak is tracemalloc's (NumPy allocations included) while building the table and walking the shards;
seconds are a separate untraced run that also builds every shard's gather arguments (transient).

    python benchmarks/mix_shard_table.py                      # 1M, 4M and 16M picks
    python benchmarks/mix_shard_table.py --picks 100000 400000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cauldron.mix_shuffle import shard_sources  # noqa: E402

CHUNK_ROWS = 4096
SAMPLES_PER_SHARD = 1000
FOLDER = Path("/bucket/mix/scatter")


def scatter_results(picks: int) -> list[tuple[int, np.ndarray]]:
    """(chunk number, present shards) of every chunk, as the scatter tasks return them."""
    position = np.random.default_rng(0).permutation(picks)  # pick k of row r sits at position[r]
    return [
        (number, np.unique(position[start : start + CHUNK_ROWS] // SAMPLES_PER_SHARD).astype(np.int32))
        for number, start in enumerate(range(0, picks, CHUNK_ROWS))
    ]


def old(present: list[tuple[int, np.ndarray]], shards: int, arguments: bool) -> int:
    table = np.full((len(present), shards), -1, dtype=np.int32)
    for number, numbers in present:
        table[number, numbers] = np.arange(numbers.size, dtype=np.int32)
    pairs = 0
    for shard in range(shards):
        column = table[:, shard]
        numbers = np.flatnonzero(column >= 0)
        if arguments:
            pairs += len([(str(FOLDER / f"{number:06d}.arrow"), int(column[number])) for number in numbers])
        else:
            pairs += numbers.size
    return pairs


def new(present: list[tuple[int, np.ndarray]], shards: int, arguments: bool) -> int:
    indexes = [(number, np.vstack([numbers, np.full(numbers.size, 1100, np.int32)])) for number, numbers in present]
    sources = shard_sources(indexes, shards)
    pairs = 0
    for shard in range(shards):
        files, _, _ = sources.of(shard)
        pairs += files.size
    return pairs


def measure(method: str, build: Callable[[list[tuple[int, np.ndarray]], int, bool], int], picks: int) -> dict:
    present = scatter_results(picks)
    shards = -(-picks // SAMPLES_PER_SHARD)
    started = time.perf_counter()
    pairs = build(present, shards, True)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    build(present, shards, False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    sizes = {"chunks": len(present), "shards": shards, "pairs": pairs}
    return {"picks": picks, "method": method, **sizes, "peak_mb": peak / 2**20, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--picks", type=int, nargs="+", default=[1_000_000, 4_000_000, 16_000_000])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    print(f"{'picks':>11} {'method':>6} {'chunks':>7} {'shards':>7} {'pairs':>11} {'peak MB':>9} {'seconds':>8}")
    for picks in args.picks:
        for method, build in (("old", old), ("new", new)):
            row = measure(method, build, picks)
            rows.append(row)
            print(
                f"{picks:>11,} {method:>6} {row['chunks']:>7,} {row['shards']:>7,} {row['pairs']:>11,}"
                f" {row['peak_mb']:>9.1f} {row['seconds']:>8.2f}"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
