"""Loading Hugging Face models and tokenizers by hub id or local path, with an actionable offline error."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


class ModelUnavailableError(RuntimeError):
    pass


def load_pretrained(loader: Callable[..., Any], name_or_path: str, flag: str, **kwargs: Any) -> Any:
    """Call `loader(name_or_path, ...)`; a missing model becomes one clear message naming the CLI flag."""
    try:
        return loader(name_or_path, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (offline mode is on: HF_HUB_OFFLINE=1)" if offline else ""
        raise ModelUnavailableError(f"cannot load {name_or_path!r}{hint}; pass {flag} with a local model directory: {exc}") from None


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
