"""The LAION CLIP-based NSFW detector head: a small MLP over an L2-normalised CLIP image embedding.

Released heads (LAION-AI/CLIP-based-NSFW-Detector, MIT):
- ViT-L/14 (768-d), an AutoKeras model: Normalization(mean, variance) -> Dense 64 -> ReLU -> Dense 512 ->
  ReLU -> Dense 256 -> ReLU -> Dense 1 -> sigmoid.
- ViT-H/14 (1024-d), a PyTorch `nn.Sequential`: Linear 1024 -> 1024 -> 2048 -> 1024 -> 256 -> 128, each
  followed by ReLU and Dropout(0.2), then Linear 128 -> 16 and Linear 16 -> 1 with no activation between
  or after them (its outputs are used raw, as NeMo Curator does).

`HeadSpec` describes any such stack (optional input normalization, linear layers, one activation after
each), so both load into one `NsfwHead`. Heads are stored as safetensors (`norm.mean`, `norm.variance`,
`layers.<i>.weight` in torch's (out, in) layout, `layers.<i>.bias`) with the spec as JSON in the file's
metadata under `potion.nsfw_head`; `curation.pairs.nsfw_convert` writes them from the released files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from curation.errors import UserError

Activation = Literal["relu", "sigmoid", "none"]
METADATA_KEY = "potion.nsfw_head"
KERAS_EPSILON = 1e-7  # Keras' Normalization divides by max(sqrt(variance), epsilon)


@dataclass(frozen=True)
class HeadSpec:
    dims: tuple[int, ...]  # embedding size, hidden sizes..., output size (1)
    activations: tuple[Activation, ...]  # one after each linear layer
    input_norm: bool = False  # Keras Normalization layer in front (mean/variance buffers)

    def __post_init__(self) -> None:
        if len(self.dims) < 2 or len(self.activations) != len(self.dims) - 1:
            raise ValueError(f"{len(self.dims)} dims need {len(self.dims) - 1} activations, got {self.activations}")
        if self.dims[-1] != 1:
            raise ValueError(f"an NSFW head has one output, got {self.dims[-1]}")
        unknown = set(self.activations) - {"relu", "sigmoid", "none"}
        if unknown:
            raise ValueError(f"unknown activations {sorted(unknown)}")

    @property
    def embedding_dim(self) -> int:
        return self.dims[0]


_ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "none": lambda x: x}


class NsfwHead(nn.Module):
    """Maps L2-normalised embeddings (N, D) to NSFW scores (N,); higher is more likely NSFW."""

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.norm = nn.Module()
        if spec.input_norm:
            self.norm.register_buffer("mean", torch.zeros(spec.embedding_dim))
            self.norm.register_buffer("variance", torch.ones(spec.embedding_dim))
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(spec.dims))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = embeddings
        if self.spec.input_norm:
            mean, variance = self.norm.get_buffer("mean"), self.norm.get_buffer("variance")
            x = (x - mean) / torch.clamp(variance.sqrt(), min=KERAS_EPSILON)
        for layer, activation in zip(self.layers, self.spec.activations, strict=True):
            x = _ACTIVATIONS[activation](layer(x))
        return x.squeeze(-1)


def save_head(head: NsfwHead, path: Path) -> None:
    from safetensors.torch import save_file

    from curation.atomic import atomic_path

    tensors = {name: tensor.detach().float().contiguous().cpu() for name, tensor in head.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(asdict(head.spec))})


def load_head(path: Path, device: str = "cpu") -> NsfwHead:
    """A head from a safetensors file written by `save_head` / `nsfw_convert` (strict: every weight present)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get(METADATA_KEY)
    if raw is None:
        raise UserError(f"{path} has no {METADATA_KEY!r} metadata; convert the released head with nsfw_convert")
    fields = json.loads(raw)
    spec = HeadSpec(tuple(fields["dims"]), tuple(fields["activations"]), bool(fields["input_norm"]))
    head = NsfwHead(spec)
    head.load_state_dict(load_file(str(path)), strict=True)
    return head.to(device).eval()
