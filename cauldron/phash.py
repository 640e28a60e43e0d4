"""Perceptual hashing (DCT pHash) and a Hamming-radius index that scales with the data.

`phash` maps an image to 64 bits that survive re-encoding and resizing: the image is reduced to a
32x32 grey thumbnail, transformed with a 2-D DCT, and each of the 8x8 lowest-frequency coefficients
becomes one bit (above or below their median). A flat image (all-white, all-black, a blank page or
chart background) has no structure at that scale: its 63 low-frequency AC coefficients all stay below
`FLAT_AC_LIMIT` (a wave of half a grey level on the thumbnail), so its bits are set by rounding noise
and two unrelated flat images can share a hash. `phash_unless_flat` gives None for those; they match
by exact pixels only.

`HammingIndex` finds stored hashes within Hamming distance `threshold` of a query without comparing
against all of them (multi-index hashing). The 64 bits are cut into `m` bands. If two hashes differ
in at most `t` bits, then by the pigeonhole principle at least one band differs in at most
floor(t / m) bits, so probing each band with every key within that radius finds all true matches;
candidates are then verified on the full hash. `m` comes from an expected-cost model (probes per
query times the expected bucket size); as the index grows it picks fewer, wider bands, which keeps
the unrelated candidates per probe small, so the work grows with the number of queries times a
slowly growing per-query cost, instead of with the product of the two sides.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from functools import cache

import numpy as np
from PIL import Image

from curation.errors import UserError

HASH_BITS = 64
_THUMBNAIL = 32
_LOW_FREQUENCIES = 8
# A DCT coefficient c of the 32x32 thumbnail is a wave of amplitude about c * 2 / 32 grey levels.
FLAT_AC_LIMIT = 8.0


@cache
def dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II matrix C, so that C @ x is the DCT of a column vector x."""
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * math.sqrt(2 / size)
    matrix[0, :] /= math.sqrt(2)
    return matrix


def _grey(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("L")


def _low_frequencies(image: Image.Image) -> np.ndarray:
    """The 8x8 lowest-frequency DCT coefficients of the grey 32x32 thumbnail, DC first."""
    thumbnail = _grey(image).resize((_THUMBNAIL, _THUMBNAIL), Image.Resampling.LANCZOS)
    pixels = np.asarray(thumbnail, dtype=np.float64)
    matrix = dct_matrix(_THUMBNAIL)
    return (matrix @ pixels @ matrix.T)[:_LOW_FREQUENCIES, :_LOW_FREQUENCIES].ravel()


def _hash_bits(low: np.ndarray) -> int:
    median = np.median(low[1:])  # the DC term only measures brightness and would skew the median
    bits = np.packbits(low > median)
    return int.from_bytes(bits.tobytes(), "big")


def phash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash of a decoded image."""
    return _hash_bits(_low_frequencies(image))


def phash_unless_flat(image: Image.Image) -> int | None:
    """The pHash, or None for a flat image (every low-frequency AC coefficient below `FLAT_AC_LIMIT`)."""
    low = _low_frequencies(image)
    return None if float(np.abs(low[1:]).max()) < FLAT_AC_LIMIT else _hash_bits(low)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _masks_within(width: int, radius: int) -> list[int]:
    """All `width`-bit masks with at most `radius` bits set (0 first)."""
    masks = []
    for weight in range(radius + 1):
        for positions in itertools.combinations(range(width), weight):
            masks.append(sum(1 << position for position in positions))
    return masks


def _band_widths(bands: int, bits: int) -> list[int]:
    base, extra = divmod(bits, bands)
    return [base + (1 if band < extra else 0) for band in range(bands)]


# Bands are looked up by direct addressing (an offsets table of 2**width entries), so a band is at
# most this wide; 64 bits then need at least three bands.
MAX_BAND_BITS = 22
# Memory bounds: queries are probed in chunks of at most this many (query, band key) probes, and
# candidate pairs are verified in batches of about this many.
_PROBES_PER_CHUNK = 1 << 21
_PAIRS_PER_BATCH = 1 << 22


def choose_band_count(size: int, threshold: int, bits: int = HASH_BITS) -> int:
    """The band count minimising the expected work per query for `size` roughly uniform hashes:
    probes (band keys within the radius) times one plus the expected bucket size, plus the offsets
    tables' size spread over as many queries as stored hashes."""
    fewest = math.ceil(bits / MAX_BAND_BITS)
    best, best_cost = fewest, math.inf
    for bands in range(fewest, bits // 4 + 1):
        widths = _band_widths(bands, bits)
        radius = threshold // bands
        probes = bands * sum(math.comb(widths[0], weight) for weight in range(radius + 1))
        tables = sum(2**width for width in widths)
        cost = probes * (1 + size / 2 ** min(widths)) + tables / max(size, 1)
        if cost < best_cost:
            best, best_cost = bands, cost
    return best


class HammingIndex:
    """Stored hashes searchable by Hamming radius; positions refer to the order of insertion.

    Per band, the stored positions are grouped by band key (`order`), and `offsets[key]` ..
    `offsets[key + 1]` delimits each group. A batch of queries probes every key within the band
    radius with two array gathers, and all candidate pairs are verified on the full hash at once.
    """

    def __init__(self, hashes: Iterable[int], threshold: int, bits: int = HASH_BITS, bands: int | None = None) -> None:
        """`bands` overrides the band count `choose_band_count` would pick."""
        self.hashes = np.fromiter((int(value) for value in hashes), dtype=np.uint64)
        self.threshold = threshold
        bands = bands or choose_band_count(self.hashes.size, threshold, bits)
        if not math.ceil(bits / MAX_BAND_BITS) <= bands <= bits:
            raise UserError(f"bands must be between {math.ceil(bits / MAX_BAND_BITS)} and {bits}")
        self._widths = _band_widths(bands, bits)
        self._shifts = [sum(self._widths[band + 1 :]) for band in range(bands)]
        radius = threshold // bands
        self._masks = {width: np.array(_masks_within(width, radius), dtype=np.int64) for width in set(self._widths)}
        self._orders: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        for shift, width in zip(self._shifts, self._widths, strict=True):
            keys = self._band_keys(self.hashes, shift, width)
            self._orders.append(np.argsort(keys, kind="stable"))
            counts = np.bincount(keys, minlength=1 << width)
            self._offsets.append(np.concatenate(([0], np.cumsum(counts))).astype(np.int64))

    @property
    def band_count(self) -> int:
        return len(self._widths)

    @staticmethod
    def _band_keys(values: np.ndarray, shift: int, width: int) -> np.ndarray:
        return ((values >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)

    def _candidate_pairs(self, queries: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(query index, stored position) arrays whose keys agree on some band within the radius."""
        for shift, width, order, offsets in zip(self._shifts, self._widths, self._orders, self._offsets, strict=True):
            masks = self._masks[width]
            chunk = max(1, _PROBES_PER_CHUNK // masks.size)
            for first in range(0, queries.size, chunk):
                probes = (self._band_keys(queries[first : first + chunk], shift, width)[:, None] ^ masks).ravel()
                starts = offsets[probes]
                counts = offsets[probes + 1] - starts
                hit = np.flatnonzero(counts)
                if hit.size == 0:
                    continue
                counts = counts[hit]
                cumulative = np.cumsum(counts)
                # batches of at most _PAIRS_PER_BATCH pairs (one probe's bucket may exceed it alone)
                cuts = np.searchsorted(cumulative, np.arange(_PAIRS_PER_BATCH, cumulative[-1], _PAIRS_PER_BATCH))
                for part in np.split(np.arange(hit.size), np.unique(np.maximum(cuts, 1))):
                    part_counts = counts[part]
                    ends = np.cumsum(part_counts)
                    slots = np.repeat(starts[hit[part]] - (ends - part_counts), part_counts) + np.arange(ends[-1])
                    yield np.repeat(hit[part] // masks.size + first, part_counts), order[slots]

    def nearest_many(self, values: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each query: (position, distance) of the closest stored hash within the threshold,
        ties to the first stored; position -1 (distance -1) where there is none."""
        queries = np.asarray(values, dtype=np.uint64).reshape(-1)
        span = self.hashes.size + 1
        none = (self.threshold + 1) * span
        best = np.full(queries.size, none, dtype=np.int64)
        if self.hashes.size:
            for query_index, position in self._candidate_pairs(queries):
                distance = np.bitwise_count(queries[query_index] ^ self.hashes[position]).astype(np.int64)
                near = distance <= self.threshold
                np.minimum.at(best, query_index[near], distance[near] * span + position[near])
        found = best < none
        positions = np.where(found, best % span, -1)
        distances = np.where(found, best // span, -1)
        return positions, distances

    def nearest(self, value: int) -> tuple[int, int] | None:
        positions, distances = self.nearest_many([value])
        return None if positions[0] < 0 else (int(positions[0]), int(distances[0]))

    def candidate_count(self, values: Sequence[int] | np.ndarray) -> int:
        """How many (query, stored) pairs the bands propose for verification (for diagnostics)."""
        queries = np.asarray(values, dtype=np.uint64).reshape(-1)
        return sum(query_index.size for query_index, _ in self._candidate_pairs(queries))


def nearest_brute_force(hashes: Sequence[int], value: int, threshold: int) -> tuple[int, int] | None:
    """The same answer as `HammingIndex.nearest`, by comparing against every stored hash."""
    best: tuple[int, int] | None = None
    for position, stored in enumerate(hashes):
        distance = hamming(value, int(stored))
        if distance <= threshold and (best is None or distance < best[1]):
            best = (position, distance)
    return best
