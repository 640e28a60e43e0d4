"""Atomic file output: a reader never sees a partial file under its final name.

A local file is written to a temporary sibling, then renamed over the final name. An object (see
`curation.storage`) is written to a local temporary file, then uploaded to its final key in one step:
an object store makes an upload visible only once it is complete, so the key holds the old object or
the whole new one, never a part.

A local writer killed mid-write (SIGKILL, a lost node) leaves its temporary sibling `.<name>.tmp-<pid>`:
hidden and with a suffix no reader matches, so never read, but as large as the file it was to become.
The next writer of that name removes it (`remove_stale_temporaries`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.storage import ObjectPath, StoragePath


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_stale_temporaries(folder: StoragePath, pattern: str) -> int:
    """Delete the temporary files that killed writers left for names matching the glob `pattern` in a local
    folder; returns how many. Objects leave none under their prefix (their temporary file is in scratch)."""
    if isinstance(folder, ObjectPath) or not folder.is_dir():
        return 0
    stale = list(folder.glob(f".{pattern}.tmp-*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


@contextmanager
def atomic_path(path: StoragePath) -> Iterator[Path]:
    """Yield a local temporary path; on success it replaces `path` (a file or an object), on error it is removed."""
    if isinstance(path, ObjectPath):
        with tempfile.TemporaryDirectory(prefix="potion-upload-") as scratch:
            tmp = Path(scratch) / path.name
            yield tmp
            path.upload(tmp)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: StoragePath, mode: str = "wb") -> Iterator[IO[Any]]:
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: StoragePath, payload: Any) -> None:
    with atomic_open(path, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)


def write_parquet(path: StoragePath, table: pa.Table, **options: Any) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **options)
