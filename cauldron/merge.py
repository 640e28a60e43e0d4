"""Merge by image: rows showing the same image(s) become one multi-turn row.

Two rows are merged when their images are identical as decoded pixels (mode-normalised, see
`cauldron.images.pixel_hash`), in the same order. The merged row keeps the first row's encoded
images and all turns, in input order. Rows without images are never merged.

For a distributed run, compute `image_key` per row, group by it, and apply `merge_group`;
`merge_by_image` does the same in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cauldron.images import DEFAULT_MAX_PIXELS, ImageDecodeError, pixel_hash
from cauldron.schema import CauldronRow


def image_key(row: CauldronRow, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """The merge key: the pixel hashes of all images joined in order; None for a text-only row.

    Raises `ImageDecodeError` when an image cannot be decoded.
    """
    if not row["images"]:
        return None
    return "+".join(pixel_hash(data, max_pixels) for data in row["images"])


def merge_group(rows: Sequence[CauldronRow]) -> CauldronRow:
    """One row with the first row's images and every row's turns, in order."""
    if not rows:
        raise ValueError("cannot merge an empty group")
    return {"images": list(rows[0]["images"]), "texts": [turn for row in rows for turn in row["texts"]]}


@dataclass
class MergeResult:
    rows: list[CauldronRow]
    # input positions merged into each output row (same order as `rows`)
    sources: list[list[int]]
    # (input position, reason) for rows whose images could not be decoded
    errors: list[tuple[int, str]] = field(default_factory=list)


def merge_by_image(rows: Iterable[CauldronRow], max_pixels: int = DEFAULT_MAX_PIXELS) -> MergeResult:
    """Merge rows with identical images, keeping groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    order: list[str | int] = []
    kept: list[CauldronRow] = []
    errors: list[tuple[int, str]] = []
    for position, row in enumerate(rows):
        kept.append(row)
        try:
            key = image_key(row, max_pixels)
        except ImageDecodeError as error:
            errors.append((position, str(error)))
            continue
        if key is None:
            order.append(position)
        elif key in groups:
            groups[key].append(position)
        else:
            groups[key] = [position]
            order.append(key)
    result = MergeResult(rows=[], sources=[], errors=errors)
    for entry in order:
        members = [entry] if isinstance(entry, int) else groups[entry]
        result.rows.append(merge_group([kept[position] for position in members]))
        result.sources.append(members)
    return result
