"""Eval-set dedup cost versus the number of images: hash index (linear) against all-pairs (quadratic).

N training images are matched against M eval images at two sizes. A fraction of the training images
are JPEG re-encoded, resized copies of eval images, so there is something to find. Timed separately:

- fingerprint: decode + exact pixel hash + DCT pHash of all N + M images (linear by construction);
- index: build the multi-index Hamming table over M pHashes and query it with N (`cauldron.phash`);
- all-pairs (Python): the naive N x M loop with the same Hamming test, at the small size only;
- all-pairs (numpy): the same N x M comparisons vectorised, for scale (still quadratic).

Then the same matching on random 64-bit hashes at larger sizes, where no image work hides the trend.
Both matchers must return the same matches; the script checks it.

    python benchmarks/eval_dedup_scaling.py            # 2k+2k and 8k+8k images, ~1 min on 2 cores
    python benchmarks/eval_dedup_scaling.py --sizes 1000 4000 --hash-sizes 20000 80000
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cauldron.dedup import EvalIndex, image_fingerprint  # noqa: E402
from cauldron.phash import HammingIndex, hamming  # noqa: E402

THRESHOLD = 8
COPY_FRACTION = 0.05


def synthetic_photo(rng: np.random.Generator, size: tuple[int, int] = (96, 72)) -> Image.Image:
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    coefficients = rng.uniform(-0.8, 0.8, size=(3, 3)) + [0, 0, 0.5]
    channels = [np.clip(255 * (a * x + b * y + c), 0, 255) for a, b, c in coefficients]
    image = Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        box = (x0, y0, x0 + int(rng.integers(8, width // 2)), y0 + int(rng.integers(8, height // 2)))
        colour = tuple(int(value) for value in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image.filter(ImageFilter.GaussianBlur(1))


def encode(image: Image.Image, fmt: str, **options: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def make_images(size: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """`size` eval PNGs and `size` training images, COPY_FRACTION of them lossy resized eval copies."""
    rng = np.random.default_rng(seed)
    eval_photos = [synthetic_photo(rng) for _ in range(size)]
    copies = set(rng.choice(size, int(size * COPY_FRACTION), replace=False).tolist())
    train = []
    for position in range(size):
        if position in copies:
            photo = eval_photos[position].resize((70, 52), Image.Resampling.BILINEAR)
            train.append(encode(photo, "JPEG", quality=70))
        else:
            train.append(encode(synthetic_photo(rng), "JPEG", quality=85))
    return [encode(photo, "PNG") for photo in eval_photos], train


def all_pairs_python(train: list[int], stored: list[int]) -> list[int | None]:
    found: list[int | None] = []
    for value in train:
        best = None
        for position, other in enumerate(stored):
            distance = hamming(value, other)
            if distance <= THRESHOLD and (best is None or distance < best[1]):
                best = (position, distance)
        found.append(None if best is None else best[1])
    return found


def all_pairs_numpy(train: list[int], stored: list[int], chunk: int = 1024) -> list[int | None]:
    stored_array = np.array(stored, dtype=np.uint64)
    found: list[int | None] = []
    for start in range(0, len(train), chunk):
        block = np.array(train[start:start + chunk], dtype=np.uint64)
        distances = np.bitwise_count(block[:, None] ^ stored_array[None, :]).min(axis=1)
        found.extend(int(d) if d <= THRESHOLD else None for d in distances)
    return found


def indexed(train: list[int], stored: list[int]) -> tuple[list[int | None], float, float]:
    start = time.perf_counter()
    index = HammingIndex(stored, THRESHOLD)
    built = time.perf_counter()
    found = [None if (hit := index.nearest(value)) is None else hit[1] for value in train]
    return found, built - start, time.perf_counter() - built


def image_round(size: int, with_python: bool) -> dict[str, float]:
    eval_images, train_images = make_images(size, seed=size)
    start = time.perf_counter()
    eval_prints = [image_fingerprint(data) for data in eval_images]
    train_prints = [image_fingerprint(data) for data in train_images]
    fingerprint = time.perf_counter() - start

    # the full EvalIndex path (exact table + pHash index), as the pipeline calls it
    start = time.perf_counter()
    evaluation = EvalIndex(phash_threshold=THRESHOLD)
    for number, (exact, perceptual) in enumerate(eval_prints):
        evaluation.add_fingerprint("eval", str(number), exact, perceptual)
    removed = sum(evaluation.match_fingerprint(exact, perceptual) is not None for exact, perceptual in train_prints)
    eval_index = time.perf_counter() - start

    stored = [perceptual for _, perceptual in eval_prints]
    queries = [perceptual for _, perceptual in train_prints]
    found, build, query = indexed(queries, stored)
    start = time.perf_counter()
    numpy_found = all_pairs_numpy(queries, stored)
    numpy_time = time.perf_counter() - start
    assert found == numpy_found, "index and all-pairs disagree"
    result = {"size": size, "fingerprint_s": fingerprint, "eval_index_s": eval_index, "index_build_s": build,
              "index_query_s": query, "numpy_pairs_s": numpy_time, "removed": removed,
              "planted": int(size * COPY_FRACTION)}
    if with_python:
        start = time.perf_counter()
        python_found = all_pairs_python(queries, stored)
        result["python_pairs_s"] = time.perf_counter() - start
        assert python_found == found, "index and all-pairs disagree"
    return result


def hash_round(size: int) -> dict[str, float]:
    rng = random.Random(size)
    stored = [rng.getrandbits(64) for _ in range(size)]
    queries = [rng.getrandbits(64) if rng.random() > COPY_FRACTION
               else rng.choice(stored) ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64)) for _ in range(size)]
    found, build, query = indexed(queries, stored)
    start = time.perf_counter()
    numpy_found = all_pairs_numpy(queries, stored)
    numpy_time = time.perf_counter() - start
    assert found == numpy_found, "index and all-pairs disagree"
    return {"size": size, "index_s": build + query, "numpy_pairs_s": numpy_time,
            "matches": sum(value is not None for value in found)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 8000], help="N = M for the two image rounds")
    parser.add_argument("--hash-sizes", type=int, nargs="*", default=[32000, 128000])
    args = parser.parse_args()

    small, large = (image_round(size, with_python=(size == args.sizes[0])) for size in args.sizes)
    print(f"Eval dedup, N train vs M eval images (N = M), pHash threshold {THRESHOLD}")
    print(f"{'N+M':>8} {'fingerprint s':>14} {'EvalIndex s':>12} {'index build+query s':>20} "
          f"{'all-pairs python s':>19} {'all-pairs numpy s':>18} {'removed/planted':>16}")
    for result in (small, large):
        python = f"{result['python_pairs_s']:.3f}" if "python_pairs_s" in result else "-"
        print(f"{2 * result['size']:>8} {result['fingerprint_s']:>14.3f} {result['eval_index_s']:>12.3f} "
              f"{result['index_build_s'] + result['index_query_s']:>20.3f} {python:>19} "
              f"{result['numpy_pairs_s']:>18.3f} {result['removed']:>8}/{result['planted']}")
    growth = large["size"] / small["size"]
    index_small = small["index_build_s"] + small["index_query_s"]
    index_large = large["index_build_s"] + large["index_query_s"]
    print(f"\nsize x{growth:g}: linear would be x{growth:g}, all-pairs x{growth ** 2:g}")
    print(f"  fingerprint x{large['fingerprint_s'] / small['fingerprint_s']:.1f}, "
          f"EvalIndex x{large['eval_index_s'] / small['eval_index_s']:.1f}, "
          f"pHash index x{index_large / index_small:.1f}, "
          f"all-pairs numpy x{large['numpy_pairs_s'] / small['numpy_pairs_s']:.1f}")
    print(f"  at N+M={2 * small['size']}: index {small['python_pairs_s'] / index_small:.0f}x faster than "
          f"the Python all-pairs loop; at N+M={2 * large['size']} the loop would take about "
          f"{small['python_pairs_s'] * growth ** 2:.0f} s (x{growth ** 2:g}, not run)")

    if args.hash_sizes:
        print(f"\nRandom 64-bit hashes (no image work), threshold {THRESHOLD}")
        print(f"{'N+M':>8} {'index s':>9} {'all-pairs numpy s':>18} {'matches':>8}")
        rounds = [hash_round(size) for size in args.hash_sizes]
        for result in rounds:
            print(f"{2 * result['size']:>8} {result['index_s']:>9.3f} {result['numpy_pairs_s']:>18.3f} "
                  f"{result['matches']:>8}")
        if len(rounds) >= 2:
            first, last = rounds[0], rounds[-1]
            growth = last["size"] / first["size"]
            print(f"size x{growth:g}: index x{last['index_s'] / first['index_s']:.1f}, "
                  f"all-pairs numpy x{last['numpy_pairs_s'] / first['numpy_pairs_s']:.1f}")


if __name__ == "__main__":
    main()
