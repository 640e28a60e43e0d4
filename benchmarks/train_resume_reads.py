"""Samples read from storage to resume one reader's stream, as the position in the epoch grows.

A reader resumed from a checkpoint must continue with exactly the samples an uninterrupted run would
have drawn. With only its position it reads the epoch from the start and drops that many samples (a
download of everything it had read, on object storage); with the shuffle buffer's state it reads again
only the shards its buffer holds samples of. Synthetic source: 512 tar shards of 64 small samples; a
256-sample buffer; positions 1x, 4x, 16x 1024.

    python benchmarks/train_resume_reads.py
    python benchmarks/train_resume_reads.py --smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_shard_reads import counted_tar_reads, write_shards  # noqa: E402  (this folder is on the path)

from training.config import SourceConfig  # noqa: E402
from training.data import Source, SourceStream  # noqa: E402


def resume_reads(source: Source, buffer: int, position: int, with_buffer_state: bool) -> tuple[int, float]:
    """(samples pulled from storage, seconds) to resume at `position` and draw the next sample."""
    stream = SourceStream(source, 0, 1, seed=0, buffer=buffer)
    for _ in range(position):
        next(stream)
    state = json.loads(json.dumps(stream.buffer_state())) if with_buffer_state else None
    epoch, at = stream.epoch, stream.position
    expected = next(stream)["__key__"]
    started = time.perf_counter()
    with counted_tar_reads() as pulled:
        resumed = SourceStream(source, 0, 1, seed=0, buffer=buffer, epoch=epoch, position=at, resume=state)
        if next(resumed)["__key__"] != expected:
            raise SystemExit("the resumed stream went elsewhere")
    return pulled[0], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    args = parser.parse_args()
    shards, per_shard, buffer, step = (16, 16, 16, 16) if args.smoke else (512, 64, 256, 1024)
    with tempfile.TemporaryDirectory() as folder:
        source = Source(SourceConfig("bench", "pairs", []), write_shards(Path(folder), shards, per_shard, 1024), 1.0)
        print("| position | position only: samples read | s | buffer state: samples read | s |")
        print("|---:|---:|---:|---:|---:|")
        for factor in (1, 4, 16):
            position = step * factor - 1
            old, old_s = resume_reads(source, buffer, position, with_buffer_state=False)
            new, new_s = resume_reads(source, buffer, position, with_buffer_state=True)
            print(f"| {position + 1} | {old} | {old_s:.2f} | {new} | {new_s:.2f} |")


if __name__ == "__main__":
    main()
