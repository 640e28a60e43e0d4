"""The `HuggingFaceM4/the_cauldron` row schema, and cauldron parquet files in it.

A row is `{"images": [encoded image bytes, ...], "texts": [{"user", "assistant", "source"}, ...]}`.
Text-only rows have an empty image list. On disk, images are `datasets.Image` structs
(`{"bytes", "path"}`), and the file carries the `datasets` feature metadata so that
`datasets.load_dataset("parquet", ...)` decodes them as images.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypedDict

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from cauldron.images import to_image_bytes


class Turn(TypedDict):
    user: str
    assistant: str
    source: str


class CauldronRow(TypedDict):
    images: list[bytes]
    texts: list[Turn]


CAULDRON_FEATURES = datasets.Features(
    {
        "images": datasets.Sequence(datasets.Image()),
        "texts": [
            {
                "user": datasets.Value("string"),
                "assistant": datasets.Value("string"),
                "source": datasets.Value("string"),
            }
        ],
    }
)

# Includes the `huggingface` schema metadata that tells `datasets` the list items are images.
CAULDRON_ARROW_SCHEMA: pa.Schema = CAULDRON_FEATURES.arrow_schema

TURN_KEYS = ("user", "assistant", "source")


def make_row(images: Iterable[Any], pairs: Iterable[tuple[str, str]], source: str) -> CauldronRow:
    """A Cauldron row from images (bytes or anything `to_image_bytes` accepts) and (user, assistant) pairs."""
    return {
        "images": [to_image_bytes(image) for image in images],
        "texts": [{"user": user, "assistant": assistant, "source": source} for user, assistant in pairs],
    }


def is_cauldron_row(row: Mapping[str, Any]) -> bool:
    """True when a raw row already has the_cauldron's shape (an image list and user/assistant/source turns)."""
    texts = row.get("texts")
    if not isinstance(row.get("images"), (list, tuple)) or not isinstance(texts, (list, tuple)) or not texts:
        return False
    return all(isinstance(turn, Mapping) and set(TURN_KEYS) <= set(turn) for turn in texts)


def normalise_row(row: Mapping[str, Any]) -> CauldronRow:
    """A row in the_cauldron's shape with images as bytes (`None` image slots are dropped)."""
    return {
        "images": [to_image_bytes(image) for image in row["images"] if image is not None],
        "texts": [Turn(user=str(turn["user"]), assistant=str(turn["assistant"]), source=str(turn["source"])) for turn in row["texts"]],
    }


def rows_to_table(rows: Iterable[CauldronRow]) -> pa.Table:
    images: list[list[dict[str, Any]]] = []
    texts: list[list[Turn]] = []
    for row in rows:
        images.append([{"bytes": data, "path": None} for data in row["images"]])
        texts.append(list(row["texts"]))
    return pa.Table.from_pydict({"images": images, "texts": texts}, schema=CAULDRON_ARROW_SCHEMA)


def table_to_rows(table: pa.Table) -> Iterator[CauldronRow]:
    for record in table.select(["images", "texts"]).to_pylist():
        yield normalise_row(record)


def write_cauldron_parquet(rows: Iterable[CauldronRow], path: str | os.PathLike[str]) -> Path:
    """Write rows to `path` atomically (a temporary name, renamed when complete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    pq.write_table(rows_to_table(rows), partial)
    os.replace(partial, path)
    return path


def read_cauldron_parquet(path: str | os.PathLike[str]) -> Iterator[CauldronRow]:
    """Rows of one cauldron parquet file, ours or one from the_cauldron on the Hub."""
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(columns=["images", "texts"]):
        yield from table_to_rows(pa.Table.from_batches([batch]))
