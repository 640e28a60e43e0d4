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
import torch
from PIL import Image

from curation.errors import Rejection
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


@dataclass(frozen=True)
class ResizeCrop:
    width: int  # resized size
    height: int
    left: int  # crop offset into the resized image
    top: int


def resize_geometry(width: int, height: int, spec: PreprocessSpec) -> ResizeCrop:
    """open_clip's eval geometry: torchvision's Resize(int) (the shortest side to the target, the other side
    truncated) then a centre crop; or a plain resize (`squash`)."""
    out_h, out_w = spec.size
    if spec.resize_mode == "squash":
        return ResizeCrop(out_w, out_h, 0, 0)
    new_w, new_h = (out_w, int(out_w * height / width)) if width <= height else (int(out_h * width / height), out_h)
    return ResizeCrop(new_w, new_h, int(round((new_w - out_w) / 2.0)), int(round((new_h - out_h) / 2.0)))


def prepare_image(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """RGB, resized and center-cropped as open_clip's eval transform does, as an (H, W, 3) uint8 array.

    Images are converted to RGB before resizing (open_clip converts after), so palette images are
    resampled properly instead of with nearest-neighbour.
    """
    image = image.convert("RGB")
    g = resize_geometry(*image.size, spec)
    image = image.resize((g.width, g.height), _RESAMPLE[spec.interpolation])
    height, width = spec.size
    return np.asarray(image.crop((g.left, g.top, g.left + width, g.top + height)))


def prepare_encoded(data: bytes, spec: PreprocessSpec, max_pixels: int) -> np.ndarray:
    return prepare_image(open_image(data, max_pixels, draft_side=min(spec.size)), spec)


@dataclass
class PreparedBatch:
    """A batch's model inputs: the preparable items' pixels in order, and an error for each other item."""

    pixels: torch.Tensor | None  # (N, 3, H, W) uint8, on the CPU or already on the model's device
    errors: list[Rejection | None]  # one per input item; None where the item is in `pixels`
    ready: torch.cuda.Event | None = None  # recorded on the side stream that produced `pixels`

    def pixels_on(self, device: str) -> torch.Tensor:
        """The pixels on `device`, ordered after the work that produced them on the current stream."""
        assert self.pixels is not None
        if self.ready is not None:
            stream = torch.cuda.current_stream()
            stream.wait_event(self.ready)
            self.pixels.record_stream(stream)  # the allocator must not reuse them before the model is done
        return self.pixels.to(device, non_blocking=True)
