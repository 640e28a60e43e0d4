"""Batched CLIP image embeddings with open_clip (default ViT-L-14 with OpenAI weights, as the NSFW head expects).

Throughput choices, each measured by `benchmarks/nsfw_throughput.py`:
- Preprocessing equals open_clip's eval transform (resize the shortest side with the model's interpolation,
  center crop, normalise) but runs on PIL images in a thread pool (Pillow releases the GIL while
  resampling) and stops at uint8 arrays: the batch crosses to the device as uint8 (4x fewer bytes than
  float32) and is converted and normalised there in one vectorised step. One difference, on purpose:
  images are converted to RGB before resizing (open_clip converts after), so palette images are resampled
  properly instead of with nearest-neighbour.
- The model runs on whole batches under `torch.inference_mode`, in bf16 on GPU by default.

`pretrained` is an open_clip tag (`openai`, `laion2b_s32b_b82k`, ...) or a local checkpoint path; None
builds random weights (tests, benchmarks, the demo). The `openai` weights were trained with QuickGELU, so
that tag forces it (open_clip's plain `ViT-L-14` config otherwise uses GELU and gives different embeddings).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image

from curation.models import ModelUnavailableError, resolve_device

DEFAULT_CLIP_MODEL = "ViT-L-14"
DEFAULT_CLIP_PRETRAINED = "openai"
_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class ClipConfig:
    model: str = DEFAULT_CLIP_MODEL
    pretrained: str | None = DEFAULT_CLIP_PRETRAINED
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    batch_size: int = 64
    preprocess_threads: int = 2


@dataclass(frozen=True)
class PreprocessSpec:
    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> PreprocessSpec:
        import open_clip

        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg["size"]
        size = (size, size) if isinstance(size, int) else tuple(size[-2:])
        interpolation = cfg.get("interpolation", "bicubic")
        resize_mode = cfg.get("resize_mode", "shortest")
        supported = resize_mode == "squash" or (resize_mode == "shortest" and size[0] == size[1])
        if interpolation not in _RESAMPLE or not supported:
            raise ValueError(f"unsupported preprocessing: {interpolation}, {resize_mode} resize to {size}")
        return cls(size, tuple(cfg["mean"]), tuple(cfg["std"]), interpolation, resize_mode)  # type: ignore[arg-type]


def prepare_image(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """RGB, resized and center-cropped to the model's input size, as a (H, W, 3) uint8 array."""
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


class ClipImageEmbedder:
    def __init__(self, config: ClipConfig = ClipConfig()) -> None:
        import open_clip

        self.config = config
        self.device = resolve_device(config.device)
        dtype = config.dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        try:
            model = open_clip.create_model(
                config.model,
                pretrained=config.pretrained,
                precision=_PRECISION[dtype],
                device=self.device,
                force_quick_gelu=config.pretrained == "openai",
            )
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelUnavailableError(
                f"cannot load CLIP {config.model!r} with weights {config.pretrained!r}: {exc}; pass "
                "--clip-model/--clip-pretrained with a local open_clip checkpoint file"
            ) from None
        self.model = model.eval()
        self.dtype = getattr(torch, dtype)
        self.spec = PreprocessSpec.from_model(model)
        self.embedding_dim = int(model.visual.output_dim)
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(shape) * 255
        self._std = torch.tensor(self.spec.std, device=self.device).view(shape) * 255
        self._pool = ThreadPoolExecutor(max(1, config.preprocess_threads))

    def prepare(self, images: Sequence[Image.Image]) -> np.ndarray:
        """A (N, H, W, 3) uint8 batch, prepared in the thread pool."""
        return np.stack(list(self._pool.map(lambda im: prepare_image(im, self.spec), images)))

    @torch.inference_mode()
    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """L2-normalised float32 embeddings (N, D) of a prepared uint8 batch."""
        pixels = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        pixels = ((pixels - self._mean) / self._std).to(self.dtype)
        features = self.model.encode_image(pixels).float()
        return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised float32 embeddings (N, D), computed `batch_size` images at a time."""
        out = np.empty((len(images), self.embedding_dim), dtype=np.float32)
        step = self.config.batch_size
        for start in range(0, len(images), step):
            out[start : start + step] = self.embed_prepared(self.prepare(images[start : start + step]))
        return out
