"""Pairs that already carry their image bytes: parquet/Arrow rows or WebDataset tars (PMD style).

Parquet rows: the image is read from `columns.image` (bytes, or a `{"bytes": ...}` struct as written by
`datasets`), captions from `columns.alt_text` / `columns.synthetic_caption`.

WebDataset samples: the image is the first member with an image extension, the alt text is `txt` (or the
JSON field `columns.alt_text`), and url, synthetic caption, punsafe, width, height and id are read from
the sample's JSON under the configured column names (falling back to `url`, as img2dataset writes it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from curation.pairs.pair import DEFAULT_MAX_CAPTION_CHARS, CaptionSource, Pair, PairColumns, Rejected, make_pair
from curation.readers import iter_rows
from curation.shards import OVERSIZED, iter_tar_samples

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")


def _image_bytes(value: Any) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return None


def _scalar_metadata(row: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    """Row fields that survive a JSON round trip unchanged, for the sample's metadata."""
    return {k: v for k, v in row.items() if k not in skip and isinstance(v, (str, int, float, bool)) and v is not None}


def _column_values(columns: PairColumns) -> set[str]:
    names = {columns.url, columns.alt_text, columns.synthetic_caption, columns.punsafe, columns.width}
    names |= {columns.height, columns.image, columns.id}
    return {n for n in names if n}


def pair_from_row(
    row: dict[str, Any],
    pair_id: str,
    *,
    image: bytes | None,
    columns: PairColumns,
    caption: CaptionSource,
    max_caption_chars: int,
) -> Pair | Rejected:
    def get(name: str | None) -> Any:
        return row.get(name) if name else None

    return make_pair(
        pair_id,
        image=image,
        alt_text=get(columns.alt_text),
        synthetic_caption=get(columns.synthetic_caption),
        caption=caption,
        url=get(columns.url),
        punsafe=get(columns.punsafe),
        width=get(columns.width),
        height=get(columns.height),
        metadata=_scalar_metadata(row, _column_values(columns)),
        max_caption_chars=max_caption_chars,
    )


def iter_parquet_pairs(
    path: Path,
    *,
    columns: PairColumns = PairColumns(),
    caption: CaptionSource = "synthetic",
    id_prefix: str = "",
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS,
) -> Iterator[Pair | Rejected]:
    """Every row of a parquet/Arrow file as a Pair or a Rejected (`missing_image`, caption reasons)."""
    for index, row in enumerate(iter_rows(path, batch_size=256)):
        pair_id = str(row[columns.id]) if columns.id and row.get(columns.id) is not None else f"{id_prefix}{index}"
        image = _image_bytes(row.get(columns.image))
        if image is None:
            yield Rejected(pair_id, "missing_image", f"no bytes in column {columns.image!r}")
            continue
        yield pair_from_row(
            row, pair_id, image=image, columns=columns, caption=caption, max_caption_chars=max_caption_chars
        )


def _sample_json(sample: dict[str, Any]) -> dict[str, Any] | None:
    raw = sample.get("json")
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def iter_webdataset_pairs(
    path: Path,
    *,
    columns: PairColumns = PairColumns(),
    caption: CaptionSource = "synthetic",
    id_prefix: str = "",
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS,
) -> Iterator[Pair | Rejected]:
    """Every sample of a WebDataset tar as a Pair or a Rejected (`missing_image`, `bad_metadata`, captions).

    Raises `curation.shards.UnsafeTarError` for a tar with unsafe member names; an image member over the
    read cap becomes `too_large`.
    """
    for sample in iter_tar_samples(path):
        key = sample["__key__"]
        meta = _sample_json(sample)
        pair_id = f"{id_prefix}{key}"
        if meta is None:
            yield Rejected(pair_id, "bad_metadata", "the json member is not a JSON object")
            continue
        if columns.id and meta.get(columns.id) is not None:
            pair_id = str(meta[columns.id])
        image = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
        oversized = [ext for ext in IMAGE_EXTENSIONS if ext in sample.get(OVERSIZED, {})]
        if image is None and oversized:
            yield Rejected(pair_id, "too_large", f"{oversized[0]} member of {sample[OVERSIZED][oversized[0]]} bytes")
            continue
        if image is None:
            yield Rejected(pair_id, "missing_image", "no image member in the sample")
            continue
        row = dict(meta)
        if "txt" in sample:
            row[columns.alt_text] = sample["txt"].decode("utf-8", errors="replace")
        if columns.url not in row and "url" in row:
            row[columns.url] = row.pop("url")
        yield pair_from_row(
            row, pair_id, image=image, columns=columns, caption=caption, max_caption_chars=max_caption_chars
        )
