"""Encoded image bytes -> a CLIP input array: capped, reduced decode, then open_clip's eval resize and crop.

Decoding uses the same rules and ledger reasons as `curation.images.open_image` (`empty_image`,
`too_many_pixels` checked from the header before decoding, `decode_error`), plus JPEG draft mode: libjpeg
decodes at 1/2, 1/4 or 1/8 scale when the result still covers the model input, which cuts decode and
resize time several-fold for the large photos of web datasets. The reduced decode is a DCT-domain
downscale, so embeddings differ slightly from a full decode followed by bicubic resizing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from curation.images import open_image

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
    return prepare_image(open_image(data, max_pixels, draft_side=min(spec.size)), spec)
