"""The image-text pair, the input columns it is read from, and the caption rules.

Caption choice: `synthetic` takes the synthetic caption (LAION COCO's `top_caption`) and falls back to the
alt text when a row has none (PMD-style sources carry only one caption); `alt` takes the alt text and
falls back to the synthetic caption. The caption actually used is recorded as `caption_source`.

Caption length: a chosen caption longer than `max_caption_chars` drops the pair with the ledger reason
`caption_too_long`, since a truncated caption would teach the model sentences cut mid-way and such
captions are almost always scraped page text rather than a description. The other text field is only
metadata, so it is truncated to the same cap instead (and listed in `metadata["truncated"]`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from curation.errors import Rejection

CaptionSource = Literal["synthetic", "alt"]
DEFAULT_MAX_CAPTION_CHARS = 4096
PUNSAFE_SCORE = "punsafe"  # key in Pair.scores of a precomputed NSFW probability from the input


@dataclass(frozen=True)
class PairColumns:
    """Input column names; the defaults are LAION COCO's parquet columns. None: the input has no such column."""

    url: str = "URL"
    alt_text: str | None = "TEXT"
    synthetic_caption: str | None = "top_caption"
    punsafe: str | None = "punsafe"
    width: str | None = "WIDTH"
    height: str | None = "HEIGHT"
    image: str = "image"  # image bytes (or a `{"bytes": ...}` struct, as `datasets` stores images)
    id: str | None = None  # None: ids are `<id_prefix><row index>` (parquet) or `<id_prefix><key>` (tar)


DEFAULT_COLUMNS = PairColumns()  # LAION COCO's column names


@dataclass
class Pair:
    id: str
    image: bytes | None
    caption: str
    caption_source: CaptionSource
    alt_text: str | None = None
    synthetic_caption: str | None = None
    url: str | None = None
    width: int | None = None
    height: int | None = None
    scores: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _score(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


def _dimension(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def make_pair(
    pair_id: str,
    *,
    image: bytes | None,
    alt_text: Any,
    synthetic_caption: Any,
    caption: CaptionSource,
    url: Any = None,
    punsafe: Any = None,
    width: Any = None,
    height: Any = None,
    metadata: dict[str, Any] | None = None,
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS,
) -> Pair | Rejection:
    """A Pair with its caption chosen, or a Rejection (`missing_caption` / `caption_too_long`) naming it."""
    alt, synthetic = _text(alt_text), _text(synthetic_caption)
    order: list[tuple[CaptionSource, str | None]] = [("synthetic", synthetic), ("alt", alt)]
    if caption == "alt":
        order.reverse()
    chosen = next(((source, text) for source, text in order if text is not None), None)
    if chosen is None:
        return Rejection("missing_caption", "no alt text and no synthetic caption", pair_id)
    source, text = chosen
    if len(text) > max_caption_chars:
        return Rejection("caption_too_long", f"{source} caption of {len(text)} chars > {max_caption_chars}", pair_id)
    meta = dict(metadata or {})
    truncated: list[str] = []
    if alt is not None and len(alt) > max_caption_chars:
        alt, truncated = alt[:max_caption_chars], truncated + ["alt_text"]
    if synthetic is not None and len(synthetic) > max_caption_chars:
        synthetic, truncated = synthetic[:max_caption_chars], truncated + ["synthetic_caption"]
    if truncated:
        meta["truncated"] = truncated
    scores = {}
    if (punsafe_score := _score(punsafe)) is not None:
        scores[PUNSAFE_SCORE] = punsafe_score
    return Pair(
        id=pair_id,
        image=image,
        caption=text,
        caption_source=source,
        alt_text=alt,
        synthetic_caption=synthetic,
        url=_text(url),
        width=_dimension(width),
        height=_dimension(height),
        scores=scores,
        metadata=meta,
    )
