"""Safe image decoding: a pixel cap checked before decoding, errors turned into ledger reasons, and
any decoded colour mode brought to 8-bit RGB or L for writing."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

from curation.errors import SampleError

DEFAULT_MAX_PIXELS = 50_000_000


# PIL names the buffer it read (`<_io.BytesIO object at 0x7f...>`): a ledger detail must not change between runs
_OBJECT_ADDRESS = re.compile(r" ?<[\w.]+ object at 0x[0-9a-f]+>")


@contextmanager
def _decode_errors() -> Iterator[None]:
    """PIL's many exception types for bad data become SampleError(`too_many_pixels` / `decode_error`).

    A MemoryError is not one of them: the pixel cap was checked from the header, so running short is the
    worker's state, not the image's fault; it fails the partition (which a rerun retries) instead of
    ledgering a good image as undecodable.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (SampleError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SampleError("too_many_pixels", str(exc)) from None
    except Exception as exc:  # PIL raises ValueError, SyntaxError, OSError, EOFError, struct/zlib errors, bare Exception
        raise SampleError("decode_error", f"{type(exc).__name__}: {_OBJECT_ADDRESS.sub('', str(exc))}") from None


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


HIGH_DEPTH_GRAY = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def eight_bit(image: Image.Image) -> Image.Image:
    """High-depth grey (16-bit, 32-bit, float) as 8-bit `L`, scaled rather than clipped at 255 as Pillow's
    convert does: 16-bit ranges by 1/257, float or signed ranges stretched. Other modes are returned as is."""
    if image.mode not in HIGH_DEPTH_GRAY:
        return image
    values = np.asarray(image, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode != "F" and low >= 0 and high <= 255:
        scaled = values
    elif image.mode != "F" and low >= 0 and high <= 65535:
        scaled = values / 257.0
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def on_white(image: Image.Image) -> Image.Image:
    """An 8-bit image without transparency: an alpha band or a transparent colour composited on white,
    anything else not RGB or L (CMYK, LAB, YCbCr, palette, 1-bit) converted to RGB."""
    image = eight_bit(image)
    if has_transparency(image):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image if image.mode in ("RGB", "L") else image.convert("RGB")
