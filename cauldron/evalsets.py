"""Evaluation sets to deduplicate against, read from parquet, HF dataset folders or image folders.

Each source yields `EvalItem`s: an image (encoded bytes) or a text, with an id that says where it
came from (`file#row/column[i]`, `split#row/column`, or the image's relative path), so that every
removal can name the evaluation item it matched. A source is a local path or an object-store URL
(`s3://...`). An image stored as a path only is read from the eval set, as source rows read theirs
(`cauldron.image_refs`: relative to the parquet file's folder, then to the eval set's root, never outside it).

- parquet: a `.parquet` file or a folder of them (the_cauldron layout included). Image columns are
  `datasets.Image` structs (`{bytes, path}`), alone or in lists; every string column is a text, and
  the user/assistant strings of a the_cauldron `texts` column are texts too.
- HF dataset folder: what `Dataset.save_to_disk` / `DatasetDict.save_to_disk` wrote.
- image folder: any other folder; every file with an image extension is one item.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from cauldron.image_refs import ImageResolver
from curation.errors import SampleError, UserError
from curation.storage import ObjectPath, StoragePath, parquet_file, relative, storage_path

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
HF_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class EvalItem:
    item_id: str
    image: bytes | None = None
    text: str | None = None
    problem: str | None = None  # set when the slot holds an image that could not be read


def iter_eval_items(path: str | os.PathLike[str] | ObjectPath) -> Iterator[EvalItem]:
    """Every image and text of one evaluation source (format detected from the path)."""
    root = storage_path(path)
    if root.is_file():
        if root.suffix != ".parquet":
            raise UserError(f"{root}: an eval set file must be parquet")
        yield from _parquet_items(root, root.name, ImageResolver(root.parent))
    elif not root.is_dir():
        raise FileNotFoundError(f"eval set {root} does not exist")
    elif any((root / marker).exists() for marker in HF_DATASET_MARKERS):
        yield from _hf_dataset_items(root)
    elif parquet_files := _found(root, "*.parquet"):
        for file in parquet_files:
            yield from _parquet_items(file, relative(file, root).as_posix(), ImageResolver(root, file.parent))
    else:
        yield from _image_folder_items(root)


def _parquet_items(file: StoragePath, label: str, resolve: ImageResolver) -> Iterator[EvalItem]:
    parquet = parquet_file(file)
    offset = 0
    for batch in parquet.iter_batches():
        yield from _table_items(pa.Table.from_batches([batch]), label, offset, resolve)
        offset += batch.num_rows


def _hf_dataset_items(root: StoragePath) -> Iterator[EvalItem]:
    import datasets  # heavy import, only needed for this layout

    loaded = datasets.load_from_disk(str(root))
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("train", loaded)]
    for split, dataset in splits:
        offset = 0
        for batch in dataset.data.table.to_batches():
            yield from _table_items(pa.Table.from_batches([batch]), split, offset, ImageResolver(root))
            offset += batch.num_rows


def _image_folder_items(root: StoragePath) -> Iterator[EvalItem]:
    for file in _found(root, "*"):
        if file.suffix.lower() in IMAGE_EXTENSIONS and file.is_file() and not _is_link(file):
            yield EvalItem(item_id=relative(file, root).as_posix(), image=file.read_bytes())


def _found(root: StoragePath, pattern: str) -> list[StoragePath]:
    """Files and folders matching `pattern` anywhere under `root`, in path order (the same local or on a store)."""
    found: list[StoragePath] = list(root.rglob(pattern))
    return sorted(found, key=str)


def _is_link(path: StoragePath) -> bool:
    return not isinstance(path, ObjectPath) and path.is_symlink()


def _table_items(table: pa.Table, label: str, offset: int, resolve: ImageResolver) -> Iterator[EvalItem]:
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = _column_kind(column.type)
        if kind is None:
            continue
        for row, value in enumerate(column.to_pylist()):
            item = f"{label}#{offset + row}/{name}"
            yield from _value_items(kind, value, item, resolve)


def _is_image_struct(kind: pa.DataType) -> bool:
    return pa.types.is_struct(kind) and {"bytes", "path"} <= {kind.field(i).name for i in range(kind.num_fields)}


def _is_turn_struct(kind: pa.DataType) -> bool:
    return pa.types.is_struct(kind) and {"user", "assistant"} <= {kind.field(i).name for i in range(kind.num_fields)}


def _column_kind(kind: pa.DataType) -> str | None:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    if _is_image_struct(kind):
        return "image"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        if _is_image_struct(kind.value_type):
            return "image_list"
        if _is_turn_struct(kind.value_type):
            return "turn_list"
    return None


def _value_items(kind: str, value: Any, item: str, resolve: ImageResolver) -> Iterator[EvalItem]:
    if value is None:
        return
    if kind == "text":
        yield EvalItem(item_id=item, text=value)
    elif kind == "image":
        yield _image_item(item, value, resolve)
    elif kind == "image_list":
        for index, image in enumerate(value):
            if image is not None:
                yield _image_item(f"{item}[{index}]", image, resolve)
    elif kind == "turn_list":
        for index, turn in enumerate(value):
            for role in ("user", "assistant"):
                if turn.get(role):
                    yield EvalItem(item_id=f"{item}[{index}].{role}", text=turn[role])


def _image_item(item: str, value: dict[str, Any], resolve: ImageResolver) -> EvalItem:
    """The image's bytes, embedded or read from the file its path names; a problem when there are none."""
    try:
        return EvalItem(item_id=item, image=resolve(value))
    except SampleError as error:
        return EvalItem(item_id=item, problem=str(error))
