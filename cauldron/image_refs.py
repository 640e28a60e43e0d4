"""Image values of raw rows -> encoded bytes: embedded bytes, files next to the source, fetched URLs.

Raw datasets hold images in several shapes: encoded bytes, a `datasets.Image` struct `{bytes, path}`,
a PIL image, a file path (release files, `Dataset.to_parquet` of a dataset built from local files,
which keeps `{bytes: None, path}`), or only a URL (NLVR2, Localized Narratives on the Hub).

A path is looked up, in order, relative to the folder of the file that named it, relative to the
source root, and, for an absolute path written on another machine, by its trailing components under
the source root (`/data/chartqa/train/png/x.png` is found as `png/x.png`). Lookups never leave the
source root, follow no symlink out of it, and read at most `max_bytes`. A URL is answered from the
images fetched for this source (`cauldron.url_images`), if the user asked for them. Anything else
is refused with a reason that says what is missing and how to provide it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol, TypeGuard

from PIL import Image

from cauldron.images import encode_png
from curation.errors import SampleError
from curation.storage import ObjectPath, StoragePath

MAX_IMAGE_FILE_BYTES = 64 * 2**20
URL_PREFIXES = ("http://", "https://")


class UrlImages(Protocol):
    def get(self, url: str) -> bytes:
        """The fetched bytes of `url`; raises SampleError with the download's failure reason."""
        ...


def is_url(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and value.strip().lower().startswith(URL_PREFIXES)


@dataclass(frozen=True)
class ImageResolver:
    root: StoragePath  # the source root: no file outside it is read
    folder: StoragePath | None = None  # the folder of the file being read (paths are relative to it first)
    urls: UrlImages | None = None
    max_bytes: int = MAX_IMAGE_FILE_BYTES

    def __call__(self, value: Any) -> bytes:
        """Encoded bytes for one image value; raises SampleError when there are none to be had."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._non_empty(bytes(value))
        if isinstance(value, Image.Image):
            return encode_png(value)
        if isinstance(value, Mapping):
            if value.get("bytes") is not None:
                return self._non_empty(bytes(value["bytes"]))
            path = value.get("path")
            if not path:
                raise SampleError("no_image", "an image struct with neither bytes nor a path")
            return self._url(path) if is_url(path) else self._file(str(path))
        if isinstance(value, str) and value.strip():
            return self._url(value) if is_url(value) else self._file(value)
        if value is None:
            raise SampleError("no_image")
        raise SampleError("bad_image", f"unsupported image value of type {type(value).__name__}")

    @staticmethod
    def _non_empty(data: bytes) -> bytes:
        if not data:
            raise SampleError("empty_image", "zero-byte image")
        return data

    def _url(self, url: str) -> bytes:
        if self.urls is None:
            raise SampleError(
                "image_url_not_fetched",
                f"image given only as a URL ({url[:200]}); pass "
                "--fetch-images to download it with the guarded downloader of `curate pairs`",
            )
        return self.urls.get(url.strip())

    def _file(self, path: str) -> bytes:
        found = self.find(path)
        if found is None:
            raise SampleError(
                "image_bytes_missing",
                f"image stored as a path only ({path[:200]!r}) and no such file under {self.root}: put the image "
                "files there, or embed the bytes in the source (datasets: save_to_disk and push_to_hub embed "
                "image files, to_parquet does not)",
            )
        size = found.stat().st_size
        if size > self.max_bytes:
            raise SampleError("image_too_large", f"{found.name} has {size} bytes (cap {self.max_bytes})")
        return self._non_empty(found.read_bytes())

    def find(self, path: str) -> StoragePath | None:
        """The file a stored path names, under the source root, or None."""
        parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", "")]
        if not parts or ".." in parts:
            return None
        bases = [self.folder, self.root] if self.folder and self.folder != self.root else [self.root]
        tails = [parts] if not os.path.isabs(path) else [parts[i:] for i in range(len(parts))]
        for tail in tails:
            for base in bases:
                candidate = base.joinpath(*tail)
                if candidate.is_file() and _inside(candidate, self.root):
                    return candidate
        return None


def _inside(path: StoragePath, root: StoragePath) -> bool:
    if isinstance(path, ObjectPath) or isinstance(root, ObjectPath):  # no links on a store; `..` is refused before
        return isinstance(path, ObjectPath) and path.is_relative_to(root)
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False
