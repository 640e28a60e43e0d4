"""The SFT shard sample: one Cauldron row (the_cauldron's schema) as a WebDataset sample.

    <key>.json       {"texts": [{"user", "assistant", "source"}, ...], "dataset": str}
    <key>.<i>.<ext>  the encoded bytes of image i (0-based, in order); none for text-only rows

`curate cauldron mix` writes these; the trainer reads them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from curation.errors import SampleError
from curation.images import image_extension
from curation.shards import safe_key

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "img"})


def row_to_sample(key: str, row: Mapping[str, Any], dataset: str = "") -> dict[str, Any]:
    """A Cauldron row (`images` as encoded bytes, `texts`) as an SFT shard sample."""
    sample: dict[str, Any] = {"__key__": safe_key(key)}
    for index, data in enumerate(row["images"]):
        sample[f"{index}.{image_extension(data)}"] = data
    record = {"texts": list(row["texts"]), "dataset": dataset}
    sample["json"] = json.dumps(record, ensure_ascii=False).encode("utf-8")
    return sample


def sample_to_row(sample: Mapping[str, Any]) -> dict[str, Any]:
    """{"images": [bytes, ...], "texts": [...]} from an SFT shard sample; SampleError if malformed."""
    try:
        record = json.loads(sample["json"])
    except (KeyError, ValueError, UnicodeDecodeError) as error:
        raise SampleError("malformed", f"no readable .json member: {error}") from None
    texts = record.get("texts") if isinstance(record, dict) else None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, dict) and {"user", "assistant"} <= set(t) for t in texts):
        raise SampleError("malformed", "json has no `texts` list of {user, assistant} turns")
    numbered: dict[int, bytes] = {}
    for name, payload in sample.items():
        index, dot, ext = name.partition(".")
        if dot and index.isdigit() and ext in IMAGE_EXTENSIONS:
            numbered[int(index)] = payload
    if sorted(numbered) != list(range(len(numbered))):
        raise SampleError("malformed", f"image members are not numbered 0..n-1: {sorted(numbered)}")
    return {"images": [numbered[i] for i in range(len(numbered))], "texts": texts}
