"""Eval-set dedup cost versus the number of images: hash index (linear) against all-pairs (quadratic).

N training images are matched against M eval images at two sizes. A fraction of the training images
are JPEG re-encoded, resized copies of eval images, so there is something to find. Timed separately:

- fingerprint: decode + exact pixel hash + DCT pHash of all N + M images (linear by construction);
- index: build the multi-index Hamming table over M pHashes and query it with N (`cauldron.phash`);
- all-pairs (Python): the naive N x M loop with the same Hamming test, at the small size only;
- all-pairs (numpy): the same N x M comparisons vectorised, for scale (still quadratic).

Then the cost per training image against growing eval sides M (random 64-bit hashes, no image
work), index beside all-pairs. Both matchers must return the same matches; the script checks it.

The index's cost per query depends on the eval side only, through the band count it picks: it grows
slowly while few wide bands are cheapest, and levels off once three 21-22 bit bands are (a fixed
number of probes, each meeting O(1) unrelated hashes up to millions of eval images), so the total
is bounded by N times that plateau, whereas all-pairs grows with N x M.

    python benchmarks/eval_dedup_scaling.py            # 2k+2k and 8k+8k images, ~1.5 min on 2 cores
    python benchmarks/eval_dedup_scaling.py --sizes 1000 4000 --eval-sizes 4000 64000
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cauldron.dedup import EvalIndex, Fingerprint, image_fingerprint  # noqa: E402
from cauldron.phash import HammingIndex, hamming  # noqa: E402

THRESHOLD = 8
COPY_FRACTION = 0.05
REPEATS = 5  # fast steps are timed best-of-REPEATS: the machine may be shared


def best_of(step, repeats: int = REPEATS):
    """(result, best wall time) of calling `step` `repeats` times."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = step()
        best = min(best, time.perf_counter() - start)
    return result, best


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


def make_images(size: int, seed: int) -> tuple[list[bytes], list[bytes], set[int]]:
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
    return [encode(photo, "PNG") for photo in eval_photos], train, copies


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


def all_pairs_numpy(train: list[int] | np.ndarray, stored: list[int] | np.ndarray) -> list[int | None]:
    train_array, stored_array = np.asarray(train, dtype=np.uint64), np.asarray(stored, dtype=np.uint64)
    chunk = max(1, (1 << 21) // max(stored_array.size, 1))  # keeps the pair block near 16 MB
    minima = [
        np.bitwise_count(train_array[start : start + chunk, None] ^ stored_array[None, :]).min(axis=1)
        for start in range(0, train_array.size, chunk)
    ]
    return [int(d) if d <= THRESHOLD else None for d in np.concatenate(minima).tolist()]


def indexed(train: list[int], stored: list[int], repeats: int = REPEATS) -> tuple[list[int | None], float, float, int]:
    index, build = best_of(lambda: HammingIndex(stored, THRESHOLD), repeats)
    (_, distances), query = best_of(lambda: index.nearest_many(train), repeats)
    return [None if d < 0 else int(d) for d in distances.tolist()], build, query, index.band_count


def photo_hashes(prints: list[Fingerprint]) -> list[int]:
    """The pHashes of synthetic photos' fingerprints (photos are never flat, so every one has a pHash)."""
    hashes = [perceptual for _, perceptual in prints if perceptual is not None]
    if len(hashes) != len(prints):
        raise RuntimeError("a synthetic photo came out flat")
    return hashes


def image_round(size: int, with_python: bool) -> dict[str, float]:
    eval_images, train_images, copies = make_images(size, seed=size)
    start = time.perf_counter()
    eval_prints = [image_fingerprint(data) for data in eval_images]
    train_prints = [image_fingerprint(data) for data in train_images]
    fingerprint = time.perf_counter() - start

    # the full EvalIndex path (exact table + pHash index), as the pipeline calls it
    def eval_index_pass() -> int:
        evaluation = EvalIndex(phash_threshold=THRESHOLD)
        for number, (exact, perceptual) in enumerate(eval_prints):
            evaluation.add_fingerprint("eval", str(number), exact, perceptual)
        return sum(match is not None for match in evaluation.match_fingerprints(train_prints))

    removed, eval_index = best_of(eval_index_pass)
    stored, queries = photo_hashes(eval_prints), photo_hashes(train_prints)
    found, build, query, bands = indexed(queries, stored)
    numpy_found, numpy_time = best_of(lambda: all_pairs_numpy(queries, stored))
    assert found == numpy_found, "index and all-pairs disagree"
    result = {
        "size": size,
        "fingerprint_s": fingerprint,
        "eval_index_s": eval_index,
        "index_build_s": build,
        "index_query_s": query,
        "bands": bands,
        "numpy_pairs_s": numpy_time,
        "removed": removed,
        "planted": len(copies),
        "planted_found": sum(found[position] is not None for position in copies),
    }
    if with_python:
        start = time.perf_counter()
        python_found = all_pairs_python(queries, stored)
        result["python_pairs_s"] = time.perf_counter() - start
        assert python_found == found, "index and all-pairs disagree"
    return result


def eval_side_round(eval_size: int, queries: np.ndarray) -> dict[str, float]:
    """Index build time and cost per query against `eval_size` random eval hashes, beside all-pairs."""
    rng = np.random.default_rng(eval_size)
    stored = rng.integers(0, 2**63, size=eval_size, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    index, build = best_of(lambda: HammingIndex(stored.tolist(), THRESHOLD), 3)
    (positions, _), query = best_of(lambda: index.nearest_many(queries), 3)
    sample = queries[:1000]
    pairs, pairs_time = best_of(lambda: all_pairs_numpy(sample, stored), 1)
    assert [p >= 0 for p in positions[:1000].tolist()] == [d is not None for d in pairs]
    return {
        "eval_size": eval_size,
        "build_s": build,
        "query_us": 1e6 * query / queries.size,
        "bands": index.band_count,
        "pairs_us": 1e6 * pairs_time / sample.size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 8000], help="N = M for the two image rounds")
    parser.add_argument(
        "--eval-sizes",
        type=int,
        nargs="*",
        default=[2000, 8000, 32000, 128000, 512000],
        help="eval-side sizes M for the per-query cost table (random hashes)",
    )
    args = parser.parse_args()

    image_round(50, with_python=False)  # warm-up: codec plugins, numpy paths
    small, large = (image_round(size, with_python=(size == args.sizes[0])) for size in args.sizes)
    print(f"Eval dedup, N train vs M eval images (N = M), pHash threshold {THRESHOLD}")
    print(
        f"{'N+M':>8} {'fingerprint s':>14} {'EvalIndex s':>12} {'pHash index s':>14} {'bands':>6} "
        f"{'all-pairs python s':>19} {'all-pairs numpy s':>18} {'removed':>8} {'copies found':>13}"
    )
    for result in (small, large):
        python = f"{result['python_pairs_s']:.3f}" if "python_pairs_s" in result else "-"
        print(
            f"{2 * result['size']:>8} {result['fingerprint_s']:>14.3f} {result['eval_index_s']:>12.3f} "
            f"{result['index_build_s'] + result['index_query_s']:>14.3f} {result['bands']:>6} {python:>19} "
            f"{result['numpy_pairs_s']:>18.3f} {result['removed']:>8} "
            f"{result['planted_found']:>7}/{result['planted']}"
        )
    growth = large["size"] / small["size"]
    index_small = small["index_build_s"] + small["index_query_s"]
    index_large = large["index_build_s"] + large["index_query_s"]
    print(f"\nsize x{growth:g}: linear would be x{growth:g}, all-pairs x{growth**2:g}")
    total_small = small["fingerprint_s"] + small["eval_index_s"]
    total_large = large["fingerprint_s"] + large["eval_index_s"]
    print(
        f"  end to end (fingerprint + EvalIndex) x{total_large / total_small:.1f}, "
        f"fingerprint x{large['fingerprint_s'] / small['fingerprint_s']:.1f}, "
        f"EvalIndex x{large['eval_index_s'] / small['eval_index_s']:.1f}, "
        f"pHash index x{index_large / index_small:.1f}, "
        f"all-pairs numpy x{large['numpy_pairs_s'] / small['numpy_pairs_s']:.1f}"
    )
    print(
        f"  at N+M={2 * small['size']}: index {small['python_pairs_s'] / index_small:.0f}x faster than "
        f"the Python all-pairs loop; at N+M={2 * large['size']} the loop would take about "
        f"{small['python_pairs_s'] * growth**2:.0f} s (x{growth**2:g}, not run)"
    )

    if args.eval_sizes:
        rng = np.random.default_rng(0)
        queries = rng.integers(0, 2**63, size=10000, dtype=np.int64).astype(np.uint64) * np.uint64(2)
        print("\nCost per training image as the eval side grows (10000 random 64-bit query hashes)")
        print(f"{'M':>8} {'bands':>6} {'build s':>8} {'index us/query':>15} {'all-pairs numpy us/query':>25}")
        for eval_size in args.eval_sizes:
            result = eval_side_round(eval_size, queries)
            print(
                f"{result['eval_size']:>8} {result['bands']:>6} {result['build_s']:>8.3f} "
                f"{result['query_us']:>15.1f} {result['pairs_us']:>25.1f}"
            )


if __name__ == "__main__":
    main()
