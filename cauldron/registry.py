"""The dataset registry: Table 14's datasets, read from `cauldron/data/registry.yaml`."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

TEXT_ONLY = "text_only"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    paper_name: str
    category: str
    family: str
    adapter: str | None
    images: int | None
    qa_pairs: int | None
    answer_tokens: float | None
    mixture_percent: float

    @property
    def text_only(self) -> bool:
        return self.category == TEXT_ONLY


@dataclass(frozen=True)
class Registry:
    categories: Mapping[str, str]
    datasets: Mapping[str, DatasetInfo]

    def __getitem__(self, name: str) -> DatasetInfo:
        try:
            return self.datasets[name]
        except KeyError:
            raise KeyError(f"{name!r} is not in the registry; known: {', '.join(self.datasets)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.datasets

    def __iter__(self) -> Iterator[DatasetInfo]:
        return iter(self.datasets.values())

    def __len__(self) -> int:
        return len(self.datasets)

    def cauldron_subsets(self) -> list[DatasetInfo]:
        return [info for info in self if not info.text_only]

    def text_only_sets(self) -> list[DatasetInfo]:
        return [info for info in self if info.text_only]

    def by_category(self, category: str) -> list[DatasetInfo]:
        return [info for info in self if info.category == category]


def parse_registry(document: Mapping[str, Any]) -> Registry:
    categories = dict(document["categories"])
    datasets: dict[str, DatasetInfo] = {}
    for entry in document["datasets"]:
        info = DatasetInfo(**entry)
        if info.name in datasets:
            raise ValueError(f"dataset {info.name!r} listed twice")
        if info.category not in categories:
            raise ValueError(f"dataset {info.name!r} has unknown category {info.category!r}")
        datasets[info.name] = info
    return Registry(categories, datasets)


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """The shipped registry, or one in the same format at `path`."""
    if path is None:
        return _shipped_registry()
    with open(path, encoding="utf-8") as handle:
        return parse_registry(yaml.safe_load(handle))


@cache
def _shipped_registry() -> Registry:
    text = resources.files("cauldron").joinpath("data", "registry.yaml").read_text("utf-8")
    return parse_registry(yaml.safe_load(text))
