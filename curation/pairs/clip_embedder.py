"""Batched CLIP image embeddings with open_clip (default ViT-L-14 with OpenAI weights, as the NSFW head expects).

Throughput choices (measured by `benchmarks/nsfw_throughput.py` and `benchmarks/gpu_suite.py`):
- A loader thread prepares the next batch while the model runs on this one.
- On a GPU (`decode="auto"` or `"device"`), JPEGs are decoded, resized and cropped on the device
  (`device_decode.py`: nvJPEG through torchvision, on a side CUDA stream); other formats, and every image
  on a CPU (`decode="cpu"`), are decoded (JPEG at a reduced scale when possible) and resized to uint8
  arrays in a thread pool (Pillow releases the GIL while decoding and resampling).
- A CPU-prepared batch crosses to the device as uint8 (4x fewer bytes than float32); every batch is
  normalised on the device in one vectorised step; the model runs on whole batches under
  `torch.inference_mode`, bf16 on GPU by default, optionally `torch.compile`d.
- Decoded images are dropped as soon as they are resized: a batch holds model-sized arrays only.

`model` is an open_clip architecture name or the path of a model-config `.json` (registered under its
file stem, so custom or tiny architectures need no code). `pretrained` is an open_clip tag (`openai`,
`laion2b_s32b_b82k`, ...) or a local checkpoint path; None builds random weights (tests, benchmarks, the
demo). The `openai` weights were trained with QuickGELU, so that tag forces it (open_clip's plain
`ViT-L-14` config otherwise uses GELU and gives different embeddings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from PIL import Image

from curation.errors import Rejection, SampleError
from curation.images import DEFAULT_MAX_PIXELS
from curation.models import ModelUnavailableError, resolve_device
from curation.pairs.device_decode import DeviceDecoder
from curation.pairs.model_input import PreparedBatch, PreprocessSpec, prepare_encoded, prepare_image

DEFAULT_CLIP_MODEL = "ViT-L-14"
DEFAULT_CLIP_PRETRAINED = "openai"
_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
T = TypeVar("T")


@dataclass(frozen=True)
class ClipConfig:
    model: str = DEFAULT_CLIP_MODEL
    pretrained: str | None = DEFAULT_CLIP_PRETRAINED
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    batch_size: int = 64
    preprocess_threads: int = 2
    decode: Literal["auto", "cpu", "device"] = "auto"  # auto: JPEGs on the device when it is a GPU
    compile: bool = False  # torch.compile the image encoder


def architecture_name(model: str) -> str:
    """The open_clip name for `model`; a `.json` model config is registered first (under its file stem)."""
    if not model.endswith(".json"):
        return model
    import open_clip

    path = Path(model)
    if not path.is_file():
        raise ModelUnavailableError(f"CLIP model config not found: {path}")
    open_clip.add_model_config(path)
    return path.stem


def preprocess_spec(model: torch.nn.Module) -> PreprocessSpec:
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"]
    size = (size, size) if isinstance(size, int) else tuple(size[-2:])
    return PreprocessSpec(
        size,
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
        cfg.get("interpolation") or "bicubic",
        cfg.get("resize_mode") or "shortest",
    )


class ClipImageEmbedder:
    def __init__(self, config: ClipConfig = ClipConfig()) -> None:
        import open_clip

        self.config = config
        self.device = resolve_device(config.device)
        dtype = config.dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # random weights (tests, demo) are the same in every process and run
                model = open_clip.create_model(
                    architecture_name(config.model),
                    pretrained=config.pretrained,
                    precision=_PRECISION[dtype],
                    device=self.device,
                    force_quick_gelu=config.pretrained == "openai",
                )
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, OSError, ValueError) as exc:  # open_clip's unknown model/tag/file errors
            raise ModelUnavailableError(
                f"cannot load CLIP {config.model!r} with weights {config.pretrained!r}: {exc}; pass "
                "--clip-model/--clip-pretrained with a local open_clip checkpoint file"
            ) from None
        self.model = model.eval()
        self.dtype = getattr(torch, dtype)
        self.spec = preprocess_spec(model)
        self.embedding_dim = int(model.visual.output_dim)
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(shape) * 255
        self._std = torch.tensor(self.spec.std, device=self.device).view(shape) * 255
        self._encode = torch.compile(model.encode_image) if config.compile else model.encode_image
        self._pool = ThreadPoolExecutor(max(1, config.preprocess_threads))
        self._loader = ThreadPoolExecutor(1)  # prepares the next batch while the model runs
        self.decoder = self._device_decoder(config.decode)

    def _device_decoder(self, decode: str) -> DeviceDecoder | None:
        if decode == "cpu" or (decode == "auto" and not self.device.startswith("cuda")):
            return None
        decoder = DeviceDecoder(self.spec, self.device, self._pool)
        if decoder.works():
            return decoder
        if decode == "device":
            raise ModelUnavailableError(f"torchvision cannot decode JPEGs on {self.device} (no nvJPEG?); decode on the CPU")
        return None

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """L2-normalised float32 embeddings (N, D) of a prepared (N, 3, H, W) uint8 batch on the device."""
        pixels = ((pixels.float() - self._mean) / self._std).to(self.dtype)
        features = self._encode(pixels).float()
        return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """L2-normalised float32 embeddings (N, D) of a prepared (N, H, W, 3) uint8 batch."""
        return self.embed_pixels(torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 3, 1, 2))

    def _embed_batches(
        self, items: Sequence[T], prepare: Callable[[Sequence[T]], PreparedBatch]
    ) -> tuple[np.ndarray, list[Rejection | None]]:
        """Prepare in the loader thread, one batch ahead of the model; failed items get NaN rows."""
        step = self.config.batch_size
        out = np.full((len(items), self.embedding_dim), np.nan, dtype=np.float32)
        errors: list[Rejection | None] = [None] * len(items)
        if not len(items):
            return out, errors
        pending = self._loader.submit(prepare, items[:step])
        for start in range(0, len(items), step):
            batch = pending.result()
            if start + step < len(items):
                pending = self._loader.submit(prepare, items[start + step : start + 2 * step])
            errors[start : start + len(batch.errors)] = batch.errors
            rows = [start + i for i, error in enumerate(batch.errors) if error is None]
            if rows:
                out[rows] = self.embed_pixels(batch.pixels_on(self.device))
        return out, errors

    def _prepare_on_cpu(self, items: Sequence[T], prepare: Callable[[T], np.ndarray]) -> PreparedBatch:
        """Each item decoded and resized to a (H, W, 3) uint8 array in the thread pool."""

        def attempt(item: T) -> np.ndarray | Rejection:
            try:
                return prepare(item)
            except SampleError as exc:
                return exc.rejection

        results = list(self._pool.map(attempt, items))
        arrays = [r for r in results if not isinstance(r, Rejection)]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) if arrays else None
        return PreparedBatch(pixels, [r if isinstance(r, Rejection) else None for r in results])

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised float32 embeddings (N, D) of decoded images."""
        return self._embed_batches(images, lambda batch: self._prepare_on_cpu(batch, lambda im: prepare_image(im, self.spec)))[0]

    def embed_encoded(self, images: Sequence[bytes], max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, list[Rejection | None]]:
        """Embeddings of encoded images (decoded under the pixel cap); NaN rows where errors[i]."""
        decoder = self.decoder
        if decoder is not None:
            return self._embed_batches(images, lambda batch: decoder.prepare(batch, max_pixels))
        return self._embed_batches(
            images, lambda batch: self._prepare_on_cpu(batch, lambda data: prepare_encoded(data, self.spec, max_pixels))
        )
