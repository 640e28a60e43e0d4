"""Encoded images -> a batch of CLIP inputs with JPEG decoding, resizing and cropping on the model's device.

The rules of the CPU path (`model_input.prepare_encoded`) hold, with the same ledger reasons:
- Every image's header is read first (PIL, no pixel decoded): `empty_image`, `too_many_pixels` (the cap
  is checked before any decoding) and `decode_error` for an unreadable header.
- JPEGs are decoded together by torchvision's `decode_jpeg` on the device (nvJPEG on a GPU: its hardware
  engine for baseline JPEGs where the GPU has one). If the batch call fails, each JPEG is retried alone,
  and one that still fails goes to the CPU path, whose decoder gives the reason.
- Other formats go to the CPU path (PIL in the thread pool) and join the batch on the device.
- Geometry is open_clip's eval transform (`model_input.resize_geometry`); resizing is antialiased bicubic
  on float pixels, rounded back to uint8 as PIL's output is.
Embeddings differ slightly from the CPU path's: the JPEG is decoded at full size (the CPU path decodes at
a reduced DCT scale) and the resampling filter is torch's rather than PIL's.

On a GPU the work runs on a side CUDA stream and the batch carries an event, so the decoding of the next
batch overlaps the model's forward pass on this one (`ClipImageEmbedder` prepares one batch ahead).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import Executor
from contextlib import nullcontext

import numpy as np
import torch
from PIL import Image

from curation.errors import Rejection, SampleError
from curation.images import open_header
from curation.pairs.model_input import PreparedBatch, PreprocessSpec, prepare_encoded, resize_geometry


def resize_crop(image: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """A (3, H, W) uint8 image resized and centre-cropped to `spec.size`, on its own device."""
    g = resize_geometry(image.shape[2], image.shape[1], spec)
    pixels = torch.nn.functional.interpolate(
        image[None].float(), size=(g.height, g.width), mode=spec.interpolation, antialias=True, align_corners=False
    )
    pixels = pixels[0].round_().clamp_(0, 255).to(torch.uint8)
    height, width = spec.size
    return pixels[:, g.top : g.top + height, g.left : g.left + width]


class DeviceDecoder:
    """Prepares batches of encoded images on `device`; not thread-safe (one preparing thread at a time)."""

    def __init__(self, spec: PreprocessSpec, device: str, pool: Executor) -> None:
        self.spec = spec
        self.device = device
        self.pool = pool  # for the CPU path's images
        self.stream = torch.cuda.Stream(device) if device.startswith("cuda") else None

    def works(self) -> bool:
        """Whether this torchvision build decodes JPEGs on the device (e.g. it was built with nvJPEG)."""
        out = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 90)).save(out, "JPEG")
        return self._decode_jpegs([out.getvalue()])[0] is not None

    def prepare(self, items: Sequence[bytes], max_pixels: int) -> PreparedBatch:
        errors: list[Rejection | None] = [None] * len(items)
        jpegs: list[int] = []
        others: list[int] = []
        for i, data in enumerate(items):
            try:
                header = open_header(data, max_pixels)
            except SampleError as exc:
                errors[i] = exc.rejection
                continue
            (jpegs if header.format == "JPEG" else others).append(i)
        with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
            cpu_jobs = {i: self.pool.submit(_prepare_on_cpu, items[i], self.spec, max_pixels) for i in others}
            prepared: dict[int, torch.Tensor] = {}
            for i, image in zip(jpegs, self._decode_jpegs([items[i] for i in jpegs]), strict=True):
                if image is None:
                    cpu_jobs[i] = self.pool.submit(_prepare_on_cpu, items[i], self.spec, max_pixels)
                else:
                    prepared[i] = resize_crop(image, self.spec)
            for i, job in cpu_jobs.items():
                result = job.result()
                if isinstance(result, Rejection):
                    errors[i] = result
                else:
                    prepared[i] = torch.tensor(result).permute(2, 0, 1).to(self.device, non_blocking=True)
            pixels = torch.stack([prepared[i] for i in sorted(prepared)]) if prepared else None
            ready = None
            if self.stream is not None:
                ready = torch.cuda.Event()
                ready.record(self.stream)
        return PreparedBatch(pixels, errors, ready)

    def _decode_jpegs(self, datas: list[bytes]) -> list[torch.Tensor | None]:
        """Decoded (3, H, W) uint8 images on the device; None where the device decoder failed."""
        if not datas:
            return []
        from torchvision.io import ImageReadMode, decode_jpeg

        encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
        try:
            return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:  # one bad JPEG fails the whole call: find it
            out: list[torch.Tensor | None] = []
            for tensor in encoded:
                try:
                    out.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    out.append(None)
            return out


def _prepare_on_cpu(data: bytes, spec: PreprocessSpec, max_pixels: int) -> np.ndarray | Rejection:
    try:
        return prepare_encoded(data, spec, max_pixels)
    except SampleError as exc:
        return exc.rejection
