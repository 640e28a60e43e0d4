"""Perceptual hashing (DCT pHash) and a Hamming-radius index that scales with the data.

`phash` maps an image to 64 bits that survive re-encoding and resizing: the image is reduced to a
32x32 grey thumbnail, transformed with a 2-D DCT, and each of the 8x8 lowest-frequency coefficients
becomes one bit (above or below their median).

`HammingIndex` finds stored hashes within Hamming distance `threshold` of a query without comparing
against all of them (multi-index hashing). The 64 bits are cut into `m` bands. If two hashes differ
in at most `t` bits, then by the pigeonhole principle at least one band differs in at most
floor(t / m) bits, so probing each band's table with every key within that radius finds all true
matches; candidates are then verified on the full hash. `m` is chosen from the index size so that
bands are about log2(n) bits wide: each probe then meets O(1) unrelated entries and building plus
querying costs grow linearly with the number of hashes, not with their product.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from functools import cache

import numpy as np
from PIL import Image

HASH_BITS = 64
_THUMBNAIL = 32
_LOW_FREQUENCIES = 8


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


def phash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash of a decoded image."""
    thumbnail = _grey(image).resize((_THUMBNAIL, _THUMBNAIL), Image.Resampling.LANCZOS)
    pixels = np.asarray(thumbnail, dtype=np.float64)
    matrix = dct_matrix(_THUMBNAIL)
    low = (matrix @ pixels @ matrix.T)[:_LOW_FREQUENCIES, :_LOW_FREQUENCIES].ravel()
    median = np.median(low[1:])  # the DC term only measures brightness and would skew the median
    bits = np.packbits(low > median)
    return int.from_bytes(bits.tobytes(), "big")


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


def choose_band_count(size: int, threshold: int, bits: int = HASH_BITS) -> int:
    """The band count minimising the expected per-query work for `size` roughly uniform hashes."""
    best, best_cost = 1, math.inf
    for bands in range(1, min(threshold + 1, bits) + 1):
        widths = _band_widths(bands, bits)
        radius = threshold // bands
        probes = sum(math.comb(widths[0], weight) for weight in range(radius + 1))
        cost = bands * probes * (1 + size / 2 ** min(widths))
        if cost < best_cost:
            best, best_cost = bands, cost
    return best


class HammingIndex:
    """Stored hashes searchable by Hamming radius; positions refer to the order of insertion."""

    def __init__(self, hashes: Iterable[int], threshold: int, bits: int = HASH_BITS) -> None:
        self.hashes = list(hashes)
        self.threshold = threshold
        self.bits = bits
        bands = choose_band_count(len(self.hashes), threshold, bits)
        self._widths = _band_widths(bands, bits)
        self._shifts = [sum(self._widths[band + 1:]) for band in range(bands)]
        radius = threshold // bands
        self._masks = {width: _masks_within(width, radius) for width in set(self._widths)}
        self._tables: list[dict[int, list[int]]] = [{} for _ in range(bands)]
        for position, value in enumerate(self.hashes):
            for table, key in zip(self._tables, self._keys(value)):
                table.setdefault(key, []).append(position)

    @property
    def band_count(self) -> int:
        return len(self._widths)

    def _keys(self, value: int) -> list[int]:
        return [(value >> shift) & ((1 << width) - 1) for shift, width in zip(self._shifts, self._widths)]

    def candidates(self, value: int) -> set[int]:
        found: set[int] = set()
        for table, key, width in zip(self._tables, self._keys(value), self._widths):
            for mask in self._masks[width]:
                bucket = table.get(key ^ mask)
                if bucket:
                    found.update(bucket)
        return found

    def nearest(self, value: int) -> tuple[int, int] | None:
        """(position, distance) of the closest stored hash within the threshold; ties go to the first stored."""
        best: tuple[int, int] | None = None
        for position in self.candidates(value):
            distance = hamming(value, self.hashes[position])
            if distance <= self.threshold and (best is None or (distance, position) < (best[1], best[0])):
                best = (position, distance)
        return best


def nearest_brute_force(hashes: Sequence[int], value: int, threshold: int) -> tuple[int, int] | None:
    """The same answer as `HammingIndex.nearest`, by comparing against every stored hash."""
    best: tuple[int, int] | None = None
    for position, stored in enumerate(hashes):
        distance = hamming(value, stored)
        if distance <= threshold and (best is None or distance < best[1]):
            best = (position, distance)
    return best
