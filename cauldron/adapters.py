"""Adapters: one raw source layout -> Cauldron rows, through a template family.

Built-in adapters cover the published layouts of VQAv2, TextVQA, DocVQA, ChartQA, AI2D, ScienceQA,
OCR-VQA, TextCaps, Localized Narratives, NLVR2, WebSight and ShareGPT-style text sets (OpenHermes)
(`cauldron.source_adapters`); rows already in the_cauldron schema pass through (`cauldron`). Any
other dataset is added with a declarative YAML mapping (`cauldron.mappings`). This module looks them
up by name. A row that cannot be used raises `curation.errors.SampleError` with a short reason for the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cauldron.adapter_types import Adapter, Resolve
from cauldron.images import to_image_bytes
from cauldron.mappings import FAMILIES, MappingSpec, adapters_from_yaml, load_adapters_yaml, shipped_adapters
from cauldron.schema import CauldronRow, is_cauldron_row
from cauldron.source_adapters import BUILTIN_ADAPTERS

__all__ = [
    "BUILTIN_ADAPTERS",
    "FAMILIES",
    "Adapter",
    "MappingSpec",
    "adapt_row",
    "adapters_from_yaml",
    "get_adapter",
    "load_adapters_yaml",
    "shipped_adapters",
]


def get_adapter(name: str, extra: Mapping[str, Adapter] | None = None) -> Adapter:
    """Look an adapter up: user-declared first, then built-in, then shipped declarative ones."""
    if extra and name in extra:
        return extra[name]
    if name in BUILTIN_ADAPTERS:
        return BUILTIN_ADAPTERS[name]
    shipped = shipped_adapters()
    if name in shipped:
        return shipped[name]
    known = sorted({*BUILTIN_ADAPTERS, *shipped, *(extra or {})})
    raise KeyError(f"no adapter named {name!r}; known: {', '.join(known)}")


def adapt_row(
    adapter: Adapter, row: Mapping[str, Any], *, key: Any, seed: int = 0, source: str | None = None, resolve: Resolve = to_image_bytes
) -> CauldronRow:
    """Convert one raw row; rows already in the_cauldron schema pass through whatever the adapter."""
    chosen = BUILTIN_ADAPTERS["cauldron"] if is_cauldron_row(row) else adapter
    return chosen(row, key=key, seed=seed, source=source, resolve=resolve)
