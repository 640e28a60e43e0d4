"""Merge by image: rows showing the same image(s) become one multi-turn row.

Two rows merge when their images are identical as decoded pixels (mode-normalised, see
`cauldron.images.pixel_hash`), in the same order. A row's merge key is a 16-byte digest of its
images' pixel hashes in order; rows without images have no key and never merge. Grouping works on
the keys alone, as NumPy arrays: sorting them finds each group and its leader (its first row in
input order), so a subset of any size is grouped holding 16 bytes per row. The merged row keeps the
leader's encoded images and every member's turns, in input order (`cauldron.build_merge` writes it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

KEY_BYTES = 16
KEY_DTYPE = np.dtype([("high", ">u8"), ("low", ">u8")])  # a key as two integers, so NumPy can sort it


def merge_key(pixel_hashes: Sequence[str]) -> bytes | None:
    """The merge key of a row from its images' pixel hashes, in order; None for a row without images."""
    if not pixel_hashes:
        return None
    return hashlib.blake2b("+".join(pixel_hashes).encode(), digest_size=KEY_BYTES).digest()


@dataclass(frozen=True)
class Groups:
    """For each row (in input order): the position of its group's leader and the group's size."""

    leader: np.ndarray  # int64; a row that merges with nothing is its own leader
    size: np.ndarray  # int64; 1 for rows that merge with nothing

    @property
    def merged_rows(self) -> int:
        """Rows in groups of two or more."""
        return int((self.size > 1).sum())


def find_groups(keys: np.ndarray, has_key: np.ndarray, merge: bool = True) -> Groups:
    """Group rows with equal keys (`KEY_DTYPE`); rows without a key, or all rows with `merge` off, stay alone."""
    positions = np.arange(len(keys), dtype=np.int64)
    leader, size = positions.copy(), np.ones(len(keys), dtype=np.int64)
    keyed = positions[has_key] if merge else positions[:0]
    if keyed.size:
        _, first, inverse, counts = np.unique(keys[keyed], return_index=True, return_inverse=True, return_counts=True)
        leader[keyed] = keyed[first][inverse]  # np.unique's first index is the earliest occurrence
        size[keyed] = counts[inverse]
    return Groups(leader, size)
