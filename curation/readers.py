"""Input partitions: parquet files, Arrow files of a `save_to_disk` dataset folder, or folders of either.

A partition is one input file; its name (derived from its path under the input root) names everything
written for it, so reruns and resumes line up without a run id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

INPUT_SUFFIXES = (".parquet", ".arrow")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class Partition:
    name: str
    path: Path


def partition_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root) if path != root else Path(path.name)
    stem = str(relative.with_suffix(""))
    return _NAME_UNSAFE.sub("_", stem).strip("_") or "part"


def discover_partitions(inputs: list[Path], suffixes: tuple[str, ...] = INPUT_SUFFIXES) -> list[Partition]:
    """Every input file under `inputs`, sorted; raises FileNotFoundError/ValueError on unusable input."""
    found: dict[str, Partition] = {}
    for root in inputs:
        if not root.exists():
            raise FileNotFoundError(f"input not found: {root}")
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in suffixes)
        for path in files:
            if path.suffix not in suffixes:
                raise ValueError(f"unsupported input file {path} (expected {', '.join(suffixes)})")
            part = Partition(partition_name(path, root if root.is_dir() else root.parent), path)
            if part.name in found:
                raise ValueError(f"two inputs map to partition {part.name!r}: {found[part.name].path} and {path}")
            found[part.name] = part
    if not found:
        raise ValueError(f"no {'/'.join(suffixes)} files found in {', '.join(map(str, inputs))}")
    return sorted(found.values(), key=lambda p: p.name)


def _arrow_batches(path: Path) -> Iterator[pa.RecordBatch]:
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)  # `datasets.save_to_disk` writes the stream format
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            yield from (reader.get_batch(i) for i in range(reader.num_record_batches))
            return
        yield from reader


def iter_rows(path: Path, batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Rows of a parquet or Arrow file as Python dicts, streamed batch by batch."""
    batches = pq.ParquetFile(path).iter_batches(batch_size) if path.suffix == ".parquet" else _arrow_batches(path)
    for batch in batches:
        yield from batch.to_pylist()
