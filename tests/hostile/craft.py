"""Crafted hostile inputs: damaged parquet and tar files, odd names, odd JSON, odd image modes.

Each builder writes one file and returns its path. They sit next to the crafted images, PDFs and tars
(craft_images, craft_pdfs, craft_tars; see SOURCES.md) and damage our input formats as a whole.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

Sample = dict[str, bytes]  # extension -> payload, keyed by its sample key in the dicts below


def jpeg(seed: int, size: tuple[int, int] = (24, 16), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "CMYK": 4, "L": 1}[mode]
    pixels = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8).squeeze()
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_tar(path: Path, samples: dict[str, Sample], fmt: int = tarfile.PAX_FORMAT) -> Path:
    """A WebDataset tar: members `<key>.<ext>` in the given order. A `#suffix` on a dict key is dropped,
    so one key can appear twice; keys may hold surrogate escapes, written as the raw (non-UTF-8) bytes."""
    with tarfile.open(path, "w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for key, members in samples.items():
            for ext, payload in members.items():
                info = tarfile.TarInfo(f"{key.split('#')[0]}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


def member_offsets(path: Path) -> list[int]:
    """Header offsets of the tar's members, in order."""
    with tarfile.open(path) as tar:
        return [m.offset for m in tar.getmembers()]


def truncated_in_header(path: Path, samples: dict[str, Sample], member: int) -> Path:
    """The tar cut half-way through the header of member `member`."""
    write_tar(path, samples)
    cut = member_offsets(path)[member] + tarfile.BLOCKSIZE // 2
    path.write_bytes(path.read_bytes()[:cut])
    return path


def bad_checksum_midway(path: Path, samples: dict[str, Sample], member: int) -> Path:
    """The tar with garbage in the checksum field of member `member`'s header (tarfile stops there quietly)."""
    write_tar(path, samples)
    data = bytearray(path.read_bytes())
    at = member_offsets(path)[member] + 148  # the chksum field of a ustar header
    data[at : at + 8] = b"99999999"
    path.write_bytes(bytes(data))
    return path


def _archive_end(path: Path) -> int:
    """Where the tar's end-of-archive marker starts."""
    with tarfile.open(path) as tar:
        tar.getmembers()
        return tar.offset


def absurd_size(path: Path, samples: dict[str, Sample], key: str = "huge") -> Path:
    """A tar whose last member's header declares a terabyte of data that is not there."""
    write_tar(path, samples)
    info = tarfile.TarInfo(f"{key}.jpg")
    info.size = 10**12
    path.write_bytes(path.read_bytes()[: _archive_end(path)] + info.tobuf(tarfile.GNU_FORMAT) + b"\xff" * 4096)
    return path


def gzip_truncated(path: Path, samples: dict[str, Sample]) -> Path:
    """A .tar.gz cut at two thirds of its compressed size."""
    compressed = gzip.compress(write_tar(path, samples).read_bytes())
    path.unlink()
    gz = path.with_name(path.name + ".gz")
    gz.write_bytes(compressed[: len(compressed) * 2 // 3])
    return gz


def appended_archive(path: Path, first: dict[str, Sample], second: dict[str, Sample]) -> Path:
    """Two tars concatenated: tarfile stops at the first end-of-archive marker and hides the second."""
    write_tar(path, first)
    other = write_tar(path.with_name("second.tmp"), second)
    path.write_bytes(path.read_bytes() + other.read_bytes())
    other.unlink()
    return path


def deep_json(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


def surrogate_json(field: str = "caption") -> bytes:
    return json.dumps({field: "x"}).replace('"x"', '"a\\udc80b"').encode()


def parquet_with_bad_row_group(path: Path, rows: list[dict], row_group_size: int, bad_group: int) -> Path:
    """Uncompressed parquet whose row group `bad_group` has its pages overwritten (the footer stays intact)."""
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size, compression="none")
    group = pq.ParquetFile(path).metadata.row_group(bad_group)
    columns = [group.column(i) for i in range(group.num_columns)]
    start = min(c.dictionary_page_offset or c.data_page_offset for c in columns)
    data = bytearray(path.read_bytes())
    data[start : start + group.total_byte_size] = b"\xff" * group.total_byte_size
    path.write_bytes(bytes(data))
    return path


def truncated_file(path: Path, data: bytes, keep: float = 0.5) -> Path:
    path.write_bytes(data[: int(len(data) * keep)])
    return path
