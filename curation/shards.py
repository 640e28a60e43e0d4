"""WebDataset shards: transactional writing with a per-partition manifest, and safe reading.

A sample is a dict: `__key__` plus one entry per file extension (`json`, `txt`, `png`, `0.jpg`, ...)
holding bytes. Shards are named from the input partition (`<partition>-00000.tar`), each written to a
temporary name and renamed when complete. The partition's manifest is written last and is the resume
marker: a partition with a manifest is finished.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from curation.atomic import atomic_path, write_json

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
DEFAULT_SAMPLES_PER_SHARD = 1000
DEFAULT_MAX_MEMBER_BYTES = 256 * 1024 * 1024
OVERSIZED = "__oversized__"  # in a read sample: {ext: size} of members over the size cap, left unread


def safe_key(raw: str) -> str:
    """A WebDataset key: no dots or slashes (webdataset splits the extension at the first dot)."""
    return _KEY_UNSAFE.sub("_", raw) or "_"


@dataclass(frozen=True)
class ShardInfo:
    name: str
    count: int
    bytes: int
    sha256: str


def _manifest_path(out_dir: Path, partition: str) -> Path:
    return out_dir / f"{partition}.manifest.json"


def read_manifest(out_dir: Path, partition: str) -> dict[str, Any] | None:
    path = _manifest_path(out_dir, partition)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    info.mtime = 0  # deterministic bytes for identical content
    tar.addfile(info, io.BytesIO(payload))


class PartitionShardWriter:
    """Writes one partition's samples into `<partition>-NNNNN.tar` shards and finally its manifest."""

    def __init__(self, out_dir: Path, partition: str, samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD):
        self.out_dir = out_dir
        self.partition = partition
        self.samples_per_shard = samples_per_shard
        self.shards: list[ShardInfo] = []
        self._pending: list[dict[str, Any]] = []
        out_dir.mkdir(parents=True, exist_ok=True)
        _manifest_path(out_dir, partition).unlink(missing_ok=True)
        for stale in out_dir.glob(f"{partition}-[0-9][0-9][0-9][0-9][0-9].tar"):
            stale.unlink()  # left by an interrupted attempt; rewritten below

    def write(self, sample: dict[str, Any]) -> None:
        self._pending.append(sample)
        if len(self._pending) >= self.samples_per_shard:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        name = f"{self.partition}-{len(self.shards):05d}.tar"
        path = self.out_dir / name
        with atomic_path(path) as tmp:
            with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for sample in self._pending:
                    key = sample["__key__"]
                    for ext, payload in sample.items():
                        if not ext.startswith("__"):
                            _add_member(tar, f"{key}.{ext}", payload)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.shards.append(ShardInfo(name, len(self._pending), path.stat().st_size, digest))
        self._pending = []

    def close(self, **summary: Any) -> dict[str, Any]:
        """Flush, then write the manifest (the completion marker) with `summary` fields added."""
        self._flush()
        manifest = {
            "partition": self.partition,
            "count": sum(s.count for s in self.shards),
            "bytes": sum(s.bytes for s in self.shards),
            "shards": [asdict(s) for s in self.shards],
            **summary,
        }
        write_json(_manifest_path(self.out_dir, self.partition), manifest)
        return manifest


class UnsafeTarError(ValueError):
    pass


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if name.startswith("/") or ".." in Path(name).parts:
        raise UnsafeTarError(f"unsafe member name {name!r}")


def iter_tar_samples(
    path: Path, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
) -> Iterator[dict[str, Any]]:
    """Read a WebDataset tar as samples without extracting: members are checked, never written to disk.

    Raises UnsafeTarError for absolute or `..` member names. Links and other non-file members are
    skipped; members over `max_member_bytes` are not read but listed in the sample's `OVERSIZED` entry,
    so the caller can ledger that one sample and go on.
    """
    current: dict[str, Any] | None = None
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            _check_member(member)
            if not member.isfile():
                continue
            directory, _, base = member.name.rpartition("/")
            stem, dot, ext = base.partition(".")
            if not dot:
                continue
            key = f"{directory}/{stem}" if directory else stem
            if current is not None and current["__key__"] != key:
                yield current
                current = None
            if current is None:
                current = {"__key__": key}
            if member.size > max_member_bytes:
                current.setdefault(OVERSIZED, {})[ext] = member.size
                continue
            handle = tar.extractfile(member)
            current[ext] = handle.read() if handle else b""
    if current is not None:
        yield current
