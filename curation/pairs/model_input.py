"""Encoded image bytes -> a CLIP input array: capped, reduced decode, then open_clip's eval resize and crop.

Decoding uses the same rules and ledger reasons as `curation.images.open_image` (`empty_image`,
`too_many_pixels` checked from the header before decoding, `decode_error`), plus JPEG draft mode: libjpeg
decodes at 1/2, 1/4 or 1/8 scale when the result still covers the model input, which cuts decode and
resize time several-fold for the large photos of web datasets. The reduced decode is a DCT-domain
downscale, so embeddings differ slightly from a full decode followed by bicubic resizing.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from curation.errors import SampleError

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class PreprocessSpec:
    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # or "squash"

    def __post_init__(self) -> None:
        supported = self.resize_mode == "squash" or (self.resize_mode == "shortest" and self.size[0] == self.size[1])
        if self.interpolation not in _RESAMPLE or not supported:
            raise ValueError(f"unsupported preprocessing: {self.interpolation}, {self.resize_mode} to {self.size}")


def decode_reduced(data: bytes, max_pixels: int, min_side: int) -> Image.Image:
    """Decode `data`, at a reduced JPEG scale when both sides stay >= `min_side`; raises SampleError."""
    if not data:
        raise SampleError("empty_image", "zero-byte image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise SampleError("too_many_pixels", f"{width}x{height} exceeds the {max_pixels} pixel cap")
            if image.format == "JPEG":
                image.draft("RGB", (min_side, min_side))
            image.load()
    except SampleError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SampleError("too_many_pixels", str(exc)) from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise SampleError("decode_error", f"{type(exc).__name__}: {exc}") from None
    return image


def prepare_image(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """RGB, resized and center-cropped as open_clip's eval transform does, as an (H, W, 3) uint8 array.

    Images are converted to RGB before resizing (open_clip converts after), so palette images are
    resampled properly instead of with nearest-neighbour.
    """
    image = image.convert("RGB")
    height, width = spec.size
    resample = _RESAMPLE[spec.interpolation]
    if spec.resize_mode == "squash":
        return np.asarray(image.resize((width, height), resample))
    w, h = image.size  # torchvision's Resize(int): the shortest side to the target, the other truncated
    new_w, new_h = (width, int(width * h / w)) if w <= h else (int(height * w / h), height)
    image = image.resize((new_w, new_h), resample)
    top, left = int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))
    return np.asarray(image.crop((left, top, left + width, top + height)))


def prepare_encoded(data: bytes, spec: PreprocessSpec, max_pixels: int) -> np.ndarray:
    return prepare_image(decode_reduced(data, max_pixels, min(spec.size)), spec)
