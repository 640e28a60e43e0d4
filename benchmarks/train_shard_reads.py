"""Storage reads per epoch of a source with fewer shards than readers, as readers grow.

A reader is one DataLoader worker of one rank (world_size x num_workers of them). With S shards and
more readers, every sample must still reach exactly one reader an epoch; this counts how many samples
the readers pull from the shards to do that, as a multiple of the source (read amplification: every
sample read is a download from object storage), and the wall time of one epoch over all readers.
Synthetic source: S tar shards of small samples in a temporary folder; readers 2x, 8x, 32x S.

    python benchmarks/train_shard_reads.py                   # S = 8: 16, 64, 256 readers
    python benchmarks/train_shard_reads.py --smoke
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import training.data  # noqa: E402
from training.config import SourceConfig  # noqa: E402
from training.data import Source, SourceStream  # noqa: E402


def write_shards(folder: Path, shards: int, per_shard: int, size: int) -> list[Path]:
    paths = []
    for shard in range(shards):
        path = folder / f"shard-{shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for index in range(per_shard):
                for ext, data in (("jpg", bytes(size)), ("txt", b"a caption")):
                    info = tarfile.TarInfo(f"s{shard:05d}-{index:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


@contextmanager
def counted_tar_reads() -> Iterator[list[int]]:
    """Counts, in the yielded one-item list, the samples the trainer's data path pulls from shards."""
    pulled = [0]
    read = training.data.iter_tar_samples

    def counting(path: Any) -> Iterator[dict[str, Any]]:
        for sample in read(path):
            pulled[0] += 1
            yield sample

    training.data.iter_tar_samples = counting  # type: ignore[assignment]
    try:
        yield pulled
    finally:
        training.data.iter_tar_samples = read


def epoch_reads(source: Source, readers: int) -> tuple[int, int, float]:
    """(samples pulled from storage, samples handed to readers, seconds) for epoch 0 of every reader."""
    started = time.perf_counter()
    with counted_tar_reads() as pulled:
        streams = [SourceStream(source, unit, readers, seed=0, buffer=16) for unit in range(readers)]
        handed = sum(1 for stream in streams for _ in stream._read(range(len(stream._files(0)[0]))))
    return pulled[0], handed, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--per-shard", type=int, default=256)
    parser.add_argument("--sample-kb", type=int, default=16)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    args = parser.parse_args()
    shards, per_shard, size = (2, 32, 256) if args.smoke else (args.shards, args.per_shard, args.sample_kb * 1024)
    with tempfile.TemporaryDirectory() as folder:
        source = Source(SourceConfig("bench", "pairs", []), list(write_shards(Path(folder), shards, per_shard, size)), 1.0)
        total = shards * per_shard
        print("| shards | readers | samples read / source | seconds per epoch |")
        print("|---:|---:|---:|---:|")
        for factor in (2, 8, 32):
            readers = shards * factor
            pulled, handed, seconds = epoch_reads(source, readers)
            if handed != total:
                raise SystemExit(f"{readers} readers were handed {handed} samples of {total}")
            print(f"| {shards} | {readers} | {pulled / total:.1f}x | {seconds:.2f} |")


if __name__ == "__main__":
    main()
