"""Pairs that already carry their image bytes: parquet/Arrow rows or WebDataset tars (PMD style).

Parquet rows: the image is read from `columns.image` (bytes, or a `{"bytes": ...}` struct as written by
`datasets`), captions from `columns.alt_text` / `columns.synthetic_caption`.

WebDataset samples: the image is the first member with an image extension, the alt text is `txt` (or the
JSON field `columns.alt_text`), and url, synthetic caption, punsafe, width, height and id are read from
the sample's JSON under the configured column names (falling back to `url`, as img2dataset writes it).

Every input unit comes out exactly once, as a Pair or a Rejection naming it: a second row or sample with an id
already seen is `duplicate_id`, unreadable parquet rows and the unreadable rest of a damaged tar are
`unreadable_input`. So the count of what comes out equals `count_rows` / `list_tar` of the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from curation.errors import Rejection
from curation.pairs.pair import DEFAULT_COLUMNS, DEFAULT_MAX_CAPTION_CHARS, CaptionSource, Pair, PairColumns, make_pair
from curation.readers import UnreadableRows, iter_rows_checked
from curation.shards import OVERSIZED, TOO_LARGE, DamagedTarError, iter_tar_samples
from curation.storage import StoragePath
from curation.untrusted_json import loads as load_json

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
) -> Pair | Rejection:
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
    path: StoragePath,
    *,
    columns: PairColumns = DEFAULT_COLUMNS,
    caption: CaptionSource = "synthetic",
    id_prefix: str = "",
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS,
) -> Iterator[Pair | Rejection]:
    """Every row of a parquet/Arrow file as a Pair or a Rejection (`missing_image`, `duplicate_id`,
    `unreadable_input`, caption reasons)."""
    seen: set[str] = set()  # only with an id column: row-index ids are distinct by construction
    index = 0
    for row in iter_rows_checked(path, batch_size=256):
        if isinstance(row, UnreadableRows):
            yield from unreadable_rows(row, id_prefix)
            index = row.indices().stop
            continue
        index += 1
        pair_id = str(row[columns.id]) if columns.id and row.get(columns.id) is not None else f"{id_prefix}{index - 1}"
        if columns.id:
            if pair_id in seen:
                yield Rejection("duplicate_id", f"id {pair_id!r} already seen in this file", f"{pair_id}#row{index - 1}")
                continue
            seen.add(pair_id)
        image = _image_bytes(row.get(columns.image))
        if image is None:
            yield Rejection("missing_image", f"no bytes in column {columns.image!r}", pair_id)
            continue
        yield pair_from_row(row, pair_id, image=image, columns=columns, caption=caption, max_caption_chars=max_caption_chars)


def unreadable_rows(span: UnreadableRows, id_prefix: str) -> Iterator[Rejection]:
    """One `unreadable_input` per unreadable row, or one for an unreadable rest of unknown length."""
    detail = span.detail if span.stop is not None else f"rows from {span.start} on: {span.detail}"
    return (Rejection("unreadable_input", detail, row_id) for row_id in span.ledger_ids(id_prefix))


def _sample_json(sample: dict[str, Any]) -> dict[str, Any] | None:
    raw = sample.get("json")
    if raw is None:
        return {}
    try:
        value = load_json(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def iter_webdataset_pairs(
    path: StoragePath,
    *,
    columns: PairColumns = DEFAULT_COLUMNS,
    caption: CaptionSource = "synthetic",
    id_prefix: str = "",
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS,
) -> Iterator[Pair | Rejection]:
    """Every sample of a WebDataset tar as a Pair or a Rejection (`missing_image`, `bad_metadata`,
    `duplicate_id`, captions); an image member over the read cap, or a sample over the reader's sample
    caps, becomes `too_large`, and the rest of a
    damaged tar one `unreadable_input` (id `<prefix>#unreadable`).
    """
    seen: set[str] = set()
    try:
        for index, sample in enumerate(iter_tar_samples(path)):
            meta = _sample_json(sample)
            pair_id = f"{id_prefix}{sample['__key__']}"
            if meta is not None and columns.id and meta.get(columns.id) is not None:
                pair_id = str(meta[columns.id])
            if pair_id in seen:
                yield Rejection("duplicate_id", f"id {pair_id!r} already seen in this tar", f"{pair_id}#sample{index}")
                continue
            seen.add(pair_id)
            yield _sample_pair(sample, meta, pair_id, columns, caption, max_caption_chars)
    except DamagedTarError as exc:
        yield Rejection("unreadable_input", exc.detail, f"{id_prefix}#unreadable")


def _sample_pair(
    sample: dict[str, Any],
    meta: dict[str, Any] | None,
    pair_id: str,
    columns: PairColumns,
    caption: CaptionSource,
    max_caption_chars: int,
) -> Pair | Rejection:
    if TOO_LARGE in sample:  # over the reader's sample caps: nothing of it was kept
        return Rejection("too_large", sample[TOO_LARGE], pair_id)
    if meta is None:
        return Rejection("bad_metadata", "the json member is not a JSON object", pair_id)
    image = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
    oversized = [ext for ext in IMAGE_EXTENSIONS if ext in sample.get(OVERSIZED, {})]
    if image is None and oversized:
        return Rejection("too_large", f"{oversized[0]} member of {sample[OVERSIZED][oversized[0]]} bytes", pair_id)
    if image is None:
        return Rejection("missing_image", "no image member in the sample", pair_id)
    row = dict(meta)
    if "txt" in sample and columns.alt_text is not None:
        row[columns.alt_text] = sample["txt"].decode("utf-8", errors="replace")
    if columns.url not in row and "url" in row:
        row[columns.url] = row.pop("url")
    return pair_from_row(row, pair_id, image=image, columns=columns, caption=caption, max_caption_chars=max_caption_chars)
