"""Bytes and reads a `cauldron mix` gather task spends to fetch one batch from a scatter file, as the file
holds more batches.

A shard of 1000 samples draws its picks from ~1000 scatter files, so each (file, shard) batch is about
one row, and a text-only chunk of 4096 rows becomes a scatter file of ~4096 one-row batches. Here: a
text-only subset file of B rows, every row picked once into its own shard (B one-row batches).

- old: the scatter file in Arrow IPC file format, read with `ipc.open_file(...).get_batch(i)`, which
  reads the footer (24 bytes per batch) before the batch; reads and bytes counted through a wrapper.
- new: `cauldron.mix_shuffle.scatter_chunk`'s file (batches back to back) and its index; the gather reads
  the batch's byte range alone (`_read_ranges`: one ranged GET on a store).

    python benchmarks/mix_gather_reads.py                     # 256, 1024 and 4096 batches
    python benchmarks/mix_gather_reads.py --batches 64 256
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cauldron.mix_shuffle import SCATTER_SCHEMA, _read_ranges, file_chunks, read_index, scatter_chunk, scatter_file  # noqa: E402


class CountingReader(io.RawIOBase):
    """A local file that counts the reads made through it and the bytes they return."""

    def __init__(self, path: Path) -> None:
        self.handle = open(path, "rb")  # noqa: SIM115
        self.reads = 0
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()

    def readinto(self, buffer: Any) -> int:
        count = self.handle.readinto(buffer)
        self.reads += 1
        self.bytes += count
        return count

    def close(self) -> None:
        self.handle.close()
        super().close()


def measure(folder: Path, batches: int) -> list[dict]:
    rows = [{"images": [], "texts": [{"user": f"question {k}?", "assistant": "an answer " * 20, "source": "s"}]} for k in range(batches)]
    table = pa.Table.from_pylist(rows, schema=pa.schema([SCATTER_SCHEMA.field("images"), SCATTER_SCHEMA.field("texts")]))
    pq.write_table(table, folder / "part.parquet")
    [chunk] = file_chunks("text", [folder / "part.parquet"])
    picks = np.random.default_rng(0).permutation(batches).astype(np.int64)
    index = scatter_chunk(chunk, np.arange(batches, dtype=np.int64), picks, np.zeros(batches, np.int32), 1, folder, 0)
    middle = batches // 2
    start, size = int(np.cumsum(index[1])[middle] - index[1][middle]), int(index[1][middle])
    data = scatter_file(folder, 0).read_bytes()
    old_file = folder / "old.arrow"
    with ipc.new_file(str(old_file), SCATTER_SCHEMA) as writer:  # the same batches in the IPC file format
        for offset, length in zip(np.cumsum(index[1]) - index[1], index[1], strict=True):
            writer.write_batch(ipc.read_record_batch(pa.py_buffer(data[offset : offset + length]), SCATTER_SCHEMA))
    reader = CountingReader(old_file)
    old_rows = ipc.open_file(pa.PythonFile(reader, mode="r")).get_batch(middle).to_pylist()
    [message] = _read_ranges(folder, [0], [start], [size])
    new_rows = ipc.read_record_batch(pa.py_buffer(message), SCATTER_SCHEMA).to_pylist()
    assert old_rows == new_rows and np.array_equal(read_index(folder / "000000.index.npy"), index)
    return [
        {"batches": batches, "method": "old", "batch_bytes": size, "reads": reader.reads, "bytes_read": reader.bytes},
        {"batches": batches, "method": "new", "batch_bytes": size, "reads": 1, "bytes_read": size},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    print(f"{'batches':>8} {'method':>6} {'batch bytes':>12} {'reads':>6} {'bytes read':>11} {'x batch':>8}")
    for batches in args.batches:
        with tempfile.TemporaryDirectory() as scratch:
            for row in measure(Path(scratch), batches):
                rows.append(row)
                print(
                    f"{batches:>8,} {row['method']:>6} {row['batch_bytes']:>12,} {row['reads']:>6}"
                    f" {row['bytes_read']:>11,} {row['bytes_read'] / row['batch_bytes']:>8.1f}"
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
