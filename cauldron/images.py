"""Images inside Cauldron samples: kept as encoded bytes, decoded only behind a pixel cap.

Samples carry images as the original PNG/JPEG bytes so that nothing is re-encoded on the way
through the pipeline. Decoding happens where pixels are needed (merge and dedup hashing) and is
guarded: a declared size above the cap or a corrupt file raises `SampleError` (`too_many_pixels`,
`decode_error`), which callers turn into a per-row ledger entry instead of a crash.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from functools import cache
from typing import Any

from PIL import Image, ImageCms

from curation.errors import SampleError
from curation.images import DEFAULT_MAX_PIXELS, open_image


def to_image_bytes(value: Any) -> bytes:
    """Encoded bytes from the image shapes raw datasets use.

    Accepts raw bytes, a `{"bytes": ..., "path": ...}` dict (the `datasets.Image` storage) and a
    PIL image (encoded losslessly as PNG). File paths are not followed: a row that only names a
    path must be resolved by whoever knows the dataset's root folder. Anything else: SampleError `bad_image`.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Mapping):
        data = value.get("bytes")
        if data:
            return bytes(data)
        raise SampleError("bad_image", f"image given as a path only ({value.get('path')!r}); resolve it to bytes first")
    if isinstance(value, Image.Image):
        return encode_png(value)
    raise SampleError("bad_image", f"unsupported image value of type {type(value).__name__}")


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode encoded bytes into a loaded PIL image, refusing images above `max_pixels`.

    The size check reads only the header, so an oversized image is never decompressed. The image
    comes back in a mode PIL can convert to RGB(A) (`convertible_mode`). Raises SampleError.
    """
    return convertible_mode(open_image(data, max_pixels))


def convertible_mode(image: Image.Image) -> Image.Image:
    """The image in a mode that converts to RGB(A): CIELAB goes through a colour transform to sRGB.

    PIL decodes some files (CIELAB TIFFs) into modes it cannot `convert`; any other such mode is
    refused (SampleError `decode_error`) rather than failing later inside a hash.
    """
    if image.mode == "LAB":
        converted = ImageCms.applyTransform(image, _lab_to_srgb())
        if converted is None:  # PIL returns None only for a transform in place
            raise RuntimeError("ImageCms.applyTransform returned no image")
        return converted
    try:
        image.crop((0, 0, 1, 1)).convert("RGBA")  # a one-pixel probe: cheap, and fails as the full one would
    except ValueError as error:
        raise SampleError("decode_error", f"unsupported colour mode {image.mode}: {error}") from None
    return image


@cache
def _lab_to_srgb() -> ImageCms.ImageCmsTransform:
    return ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")


def normalise_mode(image: Image.Image) -> Image.Image:
    """Bring every image to RGBA so that the same picture stored as RGB, RGBA, L or P hashes alike."""
    return image if image.mode == "RGBA" else image.convert("RGBA")


def pixel_hash(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """Hex digest of the decoded, mode-normalised pixels (and the size), independent of the encoding."""
    return pixel_hash_of(decode_image(data, max_pixels))


def pixel_hash_of(image: Image.Image) -> str:
    image = normalise_mode(image)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()
