"""Peak memory of writing one WebDataset shard as the shard's sample count grows.

Each sample is one large member (a rendered PDF page is ~2.4 MB; here `--sample-kb`) plus a small json,
made just before it is written and dropped after, as a pipeline's write loop does. Python's allocations
are traced (tracemalloc) while one shard of N samples is written to a local folder.

- new: `curation.shards.PartitionShardWriter`, which writes each sample's members to the temporary
  shard as the sample arrives.
- old: what the writer did before: every sample of the shard kept in a list, and the tar written from
  the list when the shard was full (its bytes are the same; the test suite compares them).

Target: new peak flat in N (about one sample); old grows as N samples.

    python benchmarks/shard_writer_memory.py                      # 64, 256, 1024 samples of 256 KiB
    python benchmarks/shard_writer_memory.py --samples 4 16 --sample-kb 64 --json rows.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.shards import PartitionShardWriter  # noqa: E402


def samples(count: int, sample_bytes: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield {"__key__": f"doc{i:06d}_p00000", "png": bytes([i % 251]) * sample_bytes, "json": b'{"page": 0}'}


def write_new(folder: Path, count: int, sample_bytes: int) -> None:
    writer = PartitionShardWriter(folder, "p", samples_per_shard=count)
    for sample in samples(count, sample_bytes):
        writer.write(sample)
    writer.close()


def write_old(folder: Path, count: int, sample_bytes: int) -> None:
    pending = list(samples(count, sample_bytes))
    with tarfile.open(folder / "p-00000.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for sample in pending:
            for ext, payload in sample.items():
                if not ext.startswith("__"):
                    info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                    info.size, info.mode, info.mtime = len(payload), 0o644, 0
                    tar.addfile(info, io.BytesIO(payload))


def measure(mode: str, count: int, sample_bytes: int) -> dict[str, Any]:
    write = write_new if mode == "new" else write_old
    with tempfile.TemporaryDirectory() as scratch:
        tracemalloc.start()
        started = time.perf_counter()
        write(Path(scratch), count, sample_bytes)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    peak_mb, seconds = round(peak / 2**20, 2), round(seconds, 3)
    return {"mode": mode, "samples": count, "sample_kb": sample_bytes // 1024, "peak_mb": peak_mb, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 256, 1024], help="samples in the shard, one run each")
    parser.add_argument("--sample-kb", type=int, default=256, help="size of each sample's large member in KiB")
    parser.add_argument("--json", type=Path, help="also write the rows here as JSON")
    args = parser.parse_args()
    rows = [measure(mode, count, args.sample_kb * 1024) for count in args.samples for mode in ("old", "new")]
    print("| samples | sample KiB | old peak MB | new peak MB | old s | new s |")
    for old, new in zip(rows[::2], rows[1::2], strict=True):
        print(f"| {old['samples']} | {old['sample_kb']} | {old['peak_mb']} | {new['peak_mb']} | {old['seconds']} | {new['seconds']} |")
    if args.json:
        args.json.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
