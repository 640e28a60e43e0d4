"""The pair shard sample format, and the optional embeddings sidecar.

One WebDataset sample per pair, one image per sample, the same three members in every sample (so the
shards load with `webdataset` and with `datasets.load_dataset("webdataset", ...)`, which requires every
sample of a dataset to have the same members):

    <key>.jpg | .png | .webp   the image; one format per run (`image_format`, default jpg). Images already
                               in that format are stored byte for byte; others are re-encoded (JPEG at
                               quality 95 with transparency flattened on white, PNG and WebP lossless)
    <key>.txt                  the caption, UTF-8
    <key>.json                 {"id", "url", "alt_text", "synthetic_caption", "caption_source",
                                "width", "height", "scores": {"nsfw": ..., "punsafe": ...}, "metadata": {...}}

`key` is the id when it is a valid WebDataset key, else the id with unsafe characters replaced plus 8
hex digits of its SHA-1 (so distinct ids never share a key). Width and height are the stored image's.

Embeddings sidecar (`--save-embeddings`): a parquet file per partition with `id` (string) and
`embedding` (fixed-size list of float16, the L2-normalised CLIP image embedding), for dedup or analysis.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.atomic import write_parquet
from curation.errors import SampleError
from curation.images import DEFAULT_MAX_PIXELS, image_extension, open_image
from curation.pairs.pair import Pair
from curation.shards import safe_key

ImageFormat = Literal["jpg", "png", "webp"]
_PIL_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
JPEG_QUALITY = 95


def sample_key(pair_id: str) -> str:
    key = safe_key(pair_id)
    return key if key == pair_id else f"{key}_{hashlib.sha1(pair_id.encode()).hexdigest()[:8]}"


def _reencode(image: Image.Image, image_format: ImageFormat) -> bytes:
    if image_format == "jpg":
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            image = flat
        elif image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
    out = io.BytesIO()
    options: dict[str, Any] = {"quality": JPEG_QUALITY} if image_format == "jpg" else {}
    if image_format == "webp":
        options["lossless"] = True
    image.save(out, _PIL_FORMATS[image_format], **options)
    return out.getvalue()


def pair_sample(
    pair: Pair, *, image_format: ImageFormat = "jpg", max_pixels: int = DEFAULT_MAX_PIXELS
) -> dict[str, Any]:
    """The shard sample of a kept pair. Raises SampleError for an image that cannot be decoded under the cap."""
    data = pair.image or b""
    image = open_image(data, max_pixels)  # validates every stored image, also when scores came from a column
    if image_extension(data) != image_format:
        try:
            data = _reencode(image, image_format)
        except (OSError, ValueError) as exc:  # unusual modes (16-bit, float) that a format cannot hold
            raise SampleError("encode_error", f"{image.mode} image to {image_format}: {exc}") from None
    record = {
        "id": pair.id,
        "url": pair.url,
        "alt_text": pair.alt_text,
        "synthetic_caption": pair.synthetic_caption,
        "caption_source": pair.caption_source,
        "width": image.width,
        "height": image.height,
        "scores": pair.scores,
        "metadata": pair.metadata,
    }
    return {
        "__key__": sample_key(pair.id),
        image_format: data,
        "txt": pair.caption.encode("utf-8"),
        "json": json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8"),
    }


def write_embeddings(path: Path, ids: list[str], embeddings: np.ndarray) -> None:
    """The embeddings sidecar: `id` + float16 `embedding` rows, written atomically."""
    if embeddings.ndim != 2 or embeddings.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids but embeddings of shape {embeddings.shape}")
    dim = embeddings.shape[1]
    values = pa.array(np.ascontiguousarray(embeddings, dtype=np.float16).reshape(-1), type=pa.float16())
    table = pa.table({"id": pa.array(ids, pa.string()), "embedding": pa.FixedSizeListArray.from_arrays(values, dim)})
    write_parquet(path, table)


def read_embeddings(path: Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(path)
    column = table["embedding"].combine_chunks()
    dim = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float16)
    return table["id"].to_pylist(), values.reshape(-1, dim)
