"""Safe image decoding: a pixel cap checked before decoding, and errors turned into ledger reasons."""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from typing import Iterator

from PIL import Image

from curation.errors import SampleError

DEFAULT_MAX_PIXELS = 50_000_000


@contextmanager
def _decode_errors() -> Iterator[None]:
    """PIL's many exception types for bad data become SampleError(`too_many_pixels` / `decode_error`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except SampleError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SampleError("too_many_pixels", str(exc)) from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise SampleError("decode_error", f"{type(exc).__name__}: {exc}") from None


def open_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image with only its header read (format, size); raises SampleError(`empty_image` / `too_many_pixels` /
    `decode_error`) as `open_image` does before decoding."""
    if not data:
        raise SampleError("empty_image", "zero-byte image")
    with _decode_errors():
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise SampleError("too_many_pixels", f"{width}x{height} exceeds the {max_pixels} pixel cap")
    return image


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_side: int | None = None) -> Image.Image:
    """Decode `data` fully; raises SampleError(`empty_image` / `too_many_pixels` / `decode_error`).

    With `draft_side`, a JPEG is decoded at the smallest reduced scale (1/2, 1/4, 1/8) that keeps both
    sides at least `draft_side`: much faster when the image is only going to be shrunk anyway.
    """
    image = open_header(data, max_pixels)
    with _decode_errors():
        if draft_side is not None and image.format == "JPEG":
            image.draft("RGB", (draft_side, draft_side))
        image.load()
    return image


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
)


def image_extension(data: bytes) -> str:
    """The file extension for encoded image bytes, from their magic number (`img` when unknown)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for signature, ext in _SIGNATURES:
        if data.startswith(signature):
            return ext
    return "img"
