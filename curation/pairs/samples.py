"""The pair shard sample format, and the optional embeddings sidecar.

One WebDataset sample per pair, one image per sample, the same three members in every sample (so the
shards load with `webdataset` and with `datasets.load_dataset("webdataset", ...)`, which requires every
sample of a dataset to have the same members):

    <key>.jpg | .png | .webp   the image; one format per run (`image_format`, default jpg). Images already
                               in that format are stored byte for byte; others are re-encoded (JPEG at
                               quality 95 with transparency flattened on white, PNG and WebP lossless),
                               in a mode the format holds: 16-bit, 32-bit and float grey scaled to 8 bits,
                               CMYK, LAB and other modes converted to RGB
    <key>.txt                  the caption, UTF-8
    <key>.json                 {"id", "url", "alt_text", "synthetic_caption", "caption_source",
                                "width", "height", "scores": {"nsfw": ..., "punsafe": ...}, "metadata": {...}}

`key` is the id when it is a valid WebDataset key, else the id with unsafe characters replaced plus 16
hex digits of its SHA-1 (`curation.shards.sample_key`: distinct ids never share a key). Width and height are the stored image's.

Embeddings sidecar (`--embeddings`, `curation/pairs/sidecars.py`): a parquet file per partition with `id` and
`embedding` (fixed-size list of float16, the L2-normalised CLIP image embedding), for dedup or analysis.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.errors import SampleError
from curation.images import DEFAULT_MAX_PIXELS, eight_bit, has_transparency, image_extension, on_white, open_image
from curation.pairs.pair import Pair
from curation.shards import sample_key

ImageFormat = Literal["jpg", "png", "webp"]
_PIL_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
JPEG_QUALITY = 95


_STORABLE = {"jpg": ("RGB", "L"), "png": ("1", "L", "LA", "P", "RGB", "RGBA"), "webp": ("RGB", "RGBA")}


def _storable(image: Image.Image, image_format: ImageFormat) -> Image.Image:
    """`image` in a mode the output format holds: transparency flattened on white for JPEG, high-depth grey
    scaled to 8 bits, any other mode (CMYK, LAB, YCbCr, ...) converted to RGB."""
    if image.mode in _STORABLE[image_format]:
        return image
    if has_transparency(image) and "RGBA" in _STORABLE[image_format]:
        return eight_bit(image).convert("RGBA")
    flat = on_white(image)
    return flat if flat.mode in _STORABLE[image_format] else flat.convert("RGB")


def _reencode(image: Image.Image, image_format: ImageFormat) -> bytes:
    image = _storable(image, image_format)
    out = io.BytesIO()
    options: dict[str, Any] = {"quality": JPEG_QUALITY} if image_format == "jpg" else {}
    if image_format == "webp":
        options["lossless"] = True
    image.save(out, _PIL_FORMATS[image_format], **options)
    return out.getvalue()


def pair_sample(pair: Pair, *, image_format: ImageFormat = "jpg", max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
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


def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float16(), dim))])


def embeddings_table(ids: list[str], embeddings: np.ndarray) -> pa.Table:
    """Embeddings sidecar rows: `id` + float16 `embedding`, one per id."""
    if embeddings.ndim != 2 or embeddings.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids but embeddings of shape {embeddings.shape}")
    dim = embeddings.shape[1]
    values = pa.array(np.ascontiguousarray(embeddings, dtype=np.float16).reshape(-1), type=pa.float16())
    columns = [pa.array(ids, pa.string()), pa.FixedSizeListArray.from_arrays(values, dim)]
    return pa.Table.from_arrays(columns, schema=embeddings_schema(dim))


def read_embeddings(path: Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(path)
    column = table["embedding"].combine_chunks()
    dim = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float16)
    return table["id"].to_pylist(), values.reshape(-1, dim)
