"""Memory of one reader's shuffle buffer as samples grow heavier (`data.shuffle_buffer_mb`).

A reader holds up to `shuffle_buffer` raw samples per source (all their member bytes: an OBELICS
document's images, a PDF page, a Cauldron sample's images). Synthetic samples of `--base-kb` x 1, 4, 16
go through `SourceStream`'s shuffle, the same 256-sample buffer each time; tracemalloc reports the peak
of what the shuffle holds, without a byte cap (the count alone, as before) and with one.

Target: with the cap, the peak stays at the cap plus one sample whatever the sample size.

    python benchmarks/train_shuffle_memory.py                 # 64 KB x 1, 4, 16; 256 samples; cap 4 MB
    python benchmarks/train_shuffle_memory.py --smoke
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import SourceConfig  # noqa: E402
from training.data import Source, SourceStream  # noqa: E402


def samples(count: int, size: int) -> Iterator[tuple[tuple[int, int], dict[str, Any]]]:
    for index in range(count):
        yield (0, index), {"__key__": f"{index:08d}", "jpg": bytes(size), "txt": b"a caption"}


def peak_mb(count: int, size: int, buffer: int, cap: int | None) -> float:
    """Peak MB allocated while `count` samples of `size` bytes pass the shuffle."""
    stream = SourceStream(Source(SourceConfig("bench", "pairs", []), [], 1.0), 0, 1, seed=0, buffer=buffer, buffer_bytes=cap)
    stream._read = lambda numbers: samples(count, size)  # type: ignore[method-assign]
    tracemalloc.start()
    passed = sum(1 for _ in stream._epoch([]))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert passed == count
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-kb", type=int, default=64)
    parser.add_argument("--buffer", type=int, default=256)
    parser.add_argument("--cap-mb", type=float, default=4.0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    args = parser.parse_args()
    base, buffer, cap = (8, 16, 0.25) if args.smoke else (args.base_kb, args.buffer, args.cap_mb)
    count = 2 * buffer
    print("| sample KB | no byte cap: peak MB | cap " + f"{cap:g} MB: peak MB |")
    print("|---:|---:|---:|")
    for scale in (1, 4, 16):
        size = base * scale * 1024
        uncapped = peak_mb(count, size, buffer, None)
        capped = peak_mb(count, size, buffer, int(cap * 2**20))
        print(f"| {base * scale} | {uncapped:.1f} | {capped:.1f} |")
        if capped > cap + 2 * size / 2**20:
            raise SystemExit(f"capped peak {capped:.1f} MB over the cap of {cap} MB plus one sample")


if __name__ == "__main__":
    main()
