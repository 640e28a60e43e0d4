"""Generated test images: real encoded bytes of chosen sizes, plus broken ones."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encoded(width: int, height: int, fmt: str = "JPEG", seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), (x + y) % 256], -1)
    noise = rng.integers(0, 40, size=(height, width, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).convert(mode)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def pixel_bomb(width: int = 2000, height: int = 2000) -> bytes:
    """A valid PNG of a few KB that decodes to width x height pixels."""
    out = io.BytesIO()
    Image.new("L", (width, height), 0).save(out, "PNG")
    return out.getvalue()


def garbage_jpeg() -> bytes:
    return b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4
