"""The SFT shard sample: one Cauldron row (the_cauldron's schema) as a WebDataset sample.

    <key>.json        {"texts": [{"user", "assistant", "source"}, ...], "dataset": str}
    <key>.images.tar  the encoded bytes of image i as `<i>.<ext>` (0-based, in order;
                      `curation/image_tar.py`); an empty tar for text-only rows

Every sample has exactly these two members and every turn exactly these three string keys, so
`datasets` and Ray Data load every row and every image. `curate cauldron mix` writes these; the trainer
reads them. Shards written before this layout (`<key>.<i>.<ext>` image members) still read back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from curation.errors import SampleError
from curation.image_tar import IMAGES_MEMBER, pack_images, unpack_images
from curation.shards import sample_key

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "img"})


def _turn(turn: Mapping[str, Any], dataset: str) -> dict[str, str]:
    return {"user": turn["user"], "assistant": turn["assistant"], "source": turn.get("source") or dataset}


def row_to_sample(key: str, row: Mapping[str, Any], dataset: str = "") -> dict[str, Any]:
    """A Cauldron row (`images` as encoded bytes, `texts`) as an SFT shard sample."""
    record = {"texts": [_turn(turn, dataset) for turn in row["texts"]], "dataset": dataset}
    return {
        "__key__": sample_key(key),
        "json": json.dumps(record, ensure_ascii=False).encode("utf-8"),
        IMAGES_MEMBER: pack_images(enumerate(row["images"])),
    }


def _legacy_images(sample: Mapping[str, Any]) -> dict[int, bytes]:
    numbered: dict[int, bytes] = {}
    for name, payload in sample.items():
        index, dot, ext = name.partition(".")
        if dot and index.isdigit() and ext in IMAGE_EXTENSIONS:
            numbered[int(index)] = payload
    return numbered


def sample_to_row(sample: Mapping[str, Any]) -> dict[str, Any]:
    """{"images": [bytes, ...], "texts": [...]} from an SFT shard sample; SampleError if malformed."""
    try:
        record = json.loads(sample["json"])
    except (KeyError, ValueError, UnicodeDecodeError) as error:
        raise SampleError("malformed", f"no readable .json member: {error}") from None
    texts = record.get("texts") if isinstance(record, dict) else None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, dict) and {"user", "assistant"} <= set(t) for t in texts):
        raise SampleError("malformed", "json has no `texts` list of {user, assistant} turns")
    numbered = unpack_images(sample[IMAGES_MEMBER]) if IMAGES_MEMBER in sample else _legacy_images(sample)
    if sorted(numbered) != list(range(len(numbered))):
        raise SampleError("malformed", f"images are not numbered 0..n-1: {sorted(numbered)}")
    return {"images": [numbered[i] for i in range(len(numbered))], "texts": texts}
