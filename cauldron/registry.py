"""The dataset registry: Table 14's datasets, read from `cauldron/data/registry.yaml`.

Besides the paper's statistics, each dataset says where its raw data is published (`SourceInfo`: the
Hub id and split, or the release files) and the commands that turn a download into a `--source` that
`curate cauldron build` reads. Subsets read in the_cauldron's own schema default to their config of
`HuggingFaceM4/the_cauldron`. `curate cauldron sources` prints the commands.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from curation.errors import UserError

TEXT_ONLY = "text_only"
THE_CAULDRON = "HuggingFaceM4/the_cauldron"
RAW = "raw"  # the folder the printed commands download into


@dataclass(frozen=True)
class SourceInfo:
    """Where a dataset's raw data is published and how it becomes a `--source` of `cauldron build`."""

    split: str  # the split that is trained on (always a train split; the build refuses the others)
    hub: str | None = None  # Hub dataset repository, downloaded with `hf download`
    include: tuple[str, ...] = ()  # the repository's files to download (all when empty)
    urls: tuple[str, ...] = ()  # release files that are not on the Hub
    prepare: str = ""  # a command, run in the download folder, that makes the download readable by the build
    path: str = ""  # what `--source` points at, under the download folder
    fetch_images: bool = False  # its images are URLs: build with --fetch-images
    note: str = ""

    def commands(self, name: str) -> list[str]:
        folder = f"{RAW}/{name}"
        lines = []
        if self.hub:
            include = "".join(f' --include "{pattern}"' for pattern in self.include)
            lines.append(f"hf download {self.hub} --repo-type dataset{include} --local-dir {folder}")
        lines.extend(f"curl -L --create-dirs -o {folder}/{url.rsplit('/', 1)[1]} {url}" for url in self.urls)
        if self.prepare:
            lines.append(f"(cd {folder} && {self.prepare})")
        return lines

    def source_argument(self, name: str, adapter: str | None) -> str:
        label = name if adapter in (None, name) else f"{name}:{adapter}"
        path = f"{RAW}/{name}/{self.path}".rstrip("/")
        return f"--source {label}={path}" + (" --fetch-images" if self.fetch_images else "")


def _source(entry: dict[str, Any] | None, name: str, adapter: str | None) -> SourceInfo | None:
    if entry is None:
        return SourceInfo("train", THE_CAULDRON, (f"{name}/*",), path=name) if adapter == "cauldron" else None
    values = dict(entry)
    for key in ("include", "urls"):
        values[key] = tuple(values.get(key) or ())
    return SourceInfo(**values)


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
    source: SourceInfo | None = None

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
        entry = dict(entry)
        info = DatasetInfo(**{**entry, "source": _source(entry.pop("source", None), entry["name"], entry.get("adapter"))})
        if info.name in datasets:
            raise UserError(f"dataset {info.name!r} listed twice")
        if info.category not in categories:
            raise UserError(f"dataset {info.name!r} has unknown category {info.category!r}")
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
