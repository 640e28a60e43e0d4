"""Where inputs and outputs live: a local path, or an object-store URL (`s3://`, `gs://`, `hf://`, ...).

`storage_path(text)` turns a command-line path into a `pathlib.Path` (plain paths and `file://` URLs:
local code paths stay exactly what they were) or an `ObjectPath`, which offers the few pathlib
operations the pipelines use (`/`, `name`, `exists`, `glob`, `open`, `unlink`, ...) through fsspec.
An `ObjectPath` is a URL string, so it pickles to Ray workers, which open their own filesystem.

Credentials come from the environment and the usual config files only (AWS_* variables and
`~/.aws/`, `GOOGLE_APPLICATION_CREDENTIALS` and gcloud's files, `HF_TOKEN` and the Hub's token file),
plus fsspec's own configuration (`FSSPEC_<PROTOCOL>_<OPTION>` variables, `~/.config/fsspec/*.json`);
never from flags. Listings are never cached: another process may have written since.

An input's identity (`stat_key`, `stat_keys`) says whether a file is the one a finished phase read,
without reading its bytes: size and modification time in nanoseconds on a local disk, size and the
store's content tag on object stores (S3 `ETag`, GCS `etag`/`generation`, the Hub's `blob_id`), or its
modification or creation time where a store keeps no tag. Rewriting a local file with the same bytes
changes its mtime and so its identity: the partition is redone, never wrongly kept.

Objects are never written in place: `upload` puts a finished local file under its final key in one
PUT (or a multipart upload, which becomes visible only when complete), so no half-written object is
ever seen under its final name (see `curation.atomic`).
"""

from __future__ import annotations

import fnmatch
import io
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from curation.errors import UserError

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", re.DOTALL)


class ObjectPath:
    """A file or folder on object storage, named by its URL (`<protocol>://<path>`)."""

    __slots__ = ("protocol", "path")

    def __init__(self, url: str) -> None:
        match = _URL.match(url)
        if match is None:
            raise ValueError(f"not a URL: {url!r}")
        self.protocol = match.group(1).lower()
        self.path = match.group(2).strip("/")

    # -- names (pure, no I/O) --------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.path}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"ObjectPath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other: ObjectPath) -> bool:
        return self.url < other.url

    def __reduce__(self) -> tuple[Any, ...]:
        return (ObjectPath, (self.url,))

    def __truediv__(self, part: str | PurePosixPath) -> ObjectPath:
        part = str(part).strip("/")
        return ObjectPath(f"{self.url}/{part}" if part else self.url)

    def joinpath(self, *parts: str) -> ObjectPath:
        path = self
        for part in parts:
            path = path / part
        return path

    def is_relative_to(self, other: StoragePath) -> bool:
        return isinstance(other, ObjectPath) and other.protocol == self.protocol and (self.path + "/").startswith(other.path + "/")

    @property
    def _pure(self) -> PurePosixPath:
        return PurePosixPath("/" + self.path)

    @property
    def name(self) -> str:
        return self._pure.name

    @property
    def stem(self) -> str:
        return self._pure.stem

    @property
    def suffix(self) -> str:
        return self._pure.suffix

    @property
    def parent(self) -> ObjectPath:
        parent = str(self._pure.parent).strip("/")
        return ObjectPath(f"{self.protocol}://{parent}") if parent else self

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def with_suffix(self, suffix: str) -> ObjectPath:
        return self.with_name(self._pure.with_suffix(suffix).name)

    def relative_to(self, other: StoragePath) -> PurePosixPath:
        if not isinstance(other, ObjectPath) or other.protocol != self.protocol:
            raise ValueError(f"{self} is not under {other}")
        return self._pure.relative_to(other._pure)

    # -- the filesystem ----------------------------------------------------------------------------
    @property
    def fs(self) -> Any:
        """The fsspec filesystem of this URL's protocol (one per process, fsspec caches instances)."""
        return _filesystem(self.protocol)

    def exists(self) -> bool:
        return bool(self.fs.exists(self.path))

    def is_file(self) -> bool:
        return bool(self.fs.isfile(self.path))

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.path))

    def stat(self) -> ObjectStat:
        """Size, and modification time where the store keeps one (0 where it does not)."""
        info = self.fs.info(self.path)
        try:
            modified = self.fs.modified(self.path).timestamp()
        except (NotImplementedError, AttributeError, KeyError, ValueError, TypeError):
            modified = 0.0
        return ObjectStat(int(info["size"]), int(modified * 1e9))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do on object stores (a folder is a key prefix); folder-based filesystems get one."""
        if not _FLAT.get(self.protocol, False):
            self.fs.makedirs(self.path, exist_ok=True)

    def unlink(self, missing_ok: bool = False) -> None:
        if not missing_ok and not self.fs.isfile(self.path):  # deleting a missing key succeeds on S3
            raise FileNotFoundError(str(self))
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def remove_tree(self) -> None:
        """Delete every object under this prefix (nothing when there is none)."""
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)

    def iterdir(self) -> Iterator[ObjectPath]:
        for entry in sorted(self.fs.ls(self.path, detail=False)):
            if entry.strip("/") != self.path:
                yield ObjectPath(f"{self.protocol}://{entry}")

    def _files(self) -> list[str]:
        """Every file under this prefix, as paths relative to it."""
        prefix = self.path + "/"
        return sorted(f[len(prefix) :] for f in self.fs.find(self.path) if f.startswith(prefix) and not f.endswith("/"))

    def starting_with(self, prefix: str) -> list[ObjectPath]:
        """The entries directly in this folder whose name starts with `prefix`, sorted.

        On stores that filter a listing by key prefix (S3) only the matching keys are listed: finding one
        partition's shards among a million objects is one request, not a thousand.
        """
        if not prefix or self.protocol not in _PREFIX_LISTING:
            entries = list(self.iterdir())
        else:
            found = self.fs.find(self.path, prefix=prefix, maxdepth=1, withdirs=True)
            entries = [ObjectPath(f"{self.protocol}://{entry}") for entry in sorted(found) if entry.strip("/") != self.path]
        return [entry for entry in entries if entry.name.startswith(prefix)]

    def glob(self, pattern: str) -> Iterator[ObjectPath]:
        """Entries matching `pattern` (`*`, `?`, `[...]` per path component; `**` for any depth); a single
        component is listed by its literal start (`part-7-*.tar` lists only keys starting `part-7-`)."""
        parts = pattern.split("/")
        if len(parts) == 1 and "**" not in pattern:
            try:
                entries = self.starting_with(_literal_start(pattern))
            except FileNotFoundError:  # as pathlib: no folder, no matches
                return
            yield from (entry for entry in entries if fnmatch.fnmatchcase(entry.name, pattern))
            return
        for relative in self._files():
            if _match_parts(relative.split("/"), parts):
                yield self / relative

    def rglob(self, pattern: str) -> Iterator[ObjectPath]:
        """Files anywhere under this prefix whose name matches `pattern`."""
        for relative in self._files():
            if fnmatch.fnmatchcase(relative.rsplit("/", 1)[-1], pattern):
                yield self / relative

    def open(self, mode: str = "r", encoding: str | None = None, **options: Any) -> IO[Any]:
        """A file object for reading (`r`, `rb`); writes go through `curation.atomic`, never in place."""
        if not set(mode) <= {"r", "b", "t"}:
            raise ValueError(f"{self}: objects are written through curation.atomic, not opened with mode {mode!r}")
        handle = self.fs.open(self.path, "rb", **options)
        return handle if "b" in mode else io.TextIOWrapper(handle, encoding=encoding or "utf-8")

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.path))

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def upload(self, local: Path) -> None:
        """Put the finished local file `local` under this key in one step (see the module docstring)."""
        self.fs.put_file(str(local), self.path)

    def download(self, local: Path) -> None:
        self.fs.get_file(self.path, str(local))


@dataclass(frozen=True)
class ObjectStat:
    st_size: int
    st_mtime_ns: int = 0


StoragePath = Path | ObjectPath

# object stores: a folder is only a key prefix, so mkdir has nothing to create
_FLAT = {"s3": True, "s3a": True, "gs": True, "gcs": True, "az": True, "abfs": True, "memory": False, "hf": True}


# stores whose fsspec `find(prefix=...)` has the server filter the listing (s3fs; others list the folder)
_PREFIX_LISTING = {"s3", "s3a"}


def _literal_start(pattern: str) -> str:
    """The part of a glob component before its first wildcard."""
    return re.split(r"[*?\[]", pattern, maxsplit=1)[0]


def _match_parts(names: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not names
    if pattern[0] == "**":
        return any(_match_parts(names[i:], pattern[1:]) for i in range(len(names) + 1))
    return bool(names) and fnmatch.fnmatchcase(names[0], pattern[0]) and _match_parts(names[1:], pattern[1:])


def _filesystem(protocol: str) -> Any:
    import fsspec

    try:
        return fsspec.filesystem(protocol, use_listings_cache=False)
    except ImportError as exc:
        raise UserError(f"{protocol}:// paths need an extra package ({exc}); install potion[storage]") from None


def is_url(text: str | Path | ObjectPath) -> bool:
    """Whether `text` names an object-store location (a URL other than `file://`)."""
    if isinstance(text, ObjectPath):
        return True
    match = _URL.match(str(text)) if isinstance(text, str) else None
    return match is not None and match.group(1).lower() not in ("file", "local")


def storage_path(text: str | os.PathLike[str] | ObjectPath) -> StoragePath:
    """A local `Path` for plain paths and `file://` URLs, an `ObjectPath` for other fsspec URLs.

    Raises UserError for a scheme fsspec does not know.
    """
    if isinstance(text, (Path, ObjectPath)):
        return text
    text = os.fspath(text)
    match = _URL.match(text)
    if match is None:
        return Path(text)
    protocol = match.group(1).lower()
    if protocol in ("file", "local"):
        return Path("/" + match.group(2).lstrip("/"))
    from fsspec.registry import known_implementations, registry

    if protocol not in known_implementations and protocol not in registry:
        raise UserError(f"{text}: unknown storage scheme {protocol}:// (use a local path or an fsspec URL such as s3://, gs://, hf://)")
    return ObjectPath(text)


def glob_paths(pattern: str) -> list[StoragePath]:
    """What a glob pattern (`*`, `?`, `[...]`, `**`) matches, sorted: local files and folders, or objects
    for a URL pattern (`s3://bucket/run/shards/*.tar`)."""
    import glob

    location = storage_path(pattern)
    if not isinstance(location, ObjectPath):
        return sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    parts = location.path.split("/")
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    if fixed == 0:
        raise UserError(f"{pattern}: a pattern in the bucket name is not supported")
    if fixed == len(parts):
        return [location] if location.exists() else []
    root = ObjectPath(f"{location.protocol}://{'/'.join(parts[:fixed])}")
    return sorted(root.glob("/".join(parts[fixed:])))


def relative(path: StoragePath, root: StoragePath) -> PurePosixPath:
    """`path` under `root` (both local or both on one store), as a relative POSIX path."""
    if isinstance(path, ObjectPath):
        return path.relative_to(root)
    if isinstance(root, ObjectPath):
        raise ValueError(f"{path} is not under {root}")
    return PurePosixPath(path.relative_to(root).as_posix())


def remove_tree(path: StoragePath) -> None:
    """Delete a folder (or every object under a prefix) and all it holds; nothing when it is not there."""
    if isinstance(path, ObjectPath):
        path.remove_tree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def absolute(path: StoragePath) -> StoragePath:
    """A local path made absolute (Ray workers do not share the driver's working directory); a URL as is."""
    return path if isinstance(path, ObjectPath) else path.absolute()


def local_only(path: StoragePath, what: str) -> Path:
    """`path` when it is local; a UserError naming `what` and the rule when it is an object-store URL."""
    if isinstance(path, ObjectPath):
        raise UserError(f"{what} must be a local path, got {path}")
    return path


# what names an object's content, first found wins; then, where a store keeps no tag, a time
_CONTENT_TAGS = ("ETag", "etag", "generation", "blob_id", "md5Hash", "crc32c")
_TIMES = ("LastModified", "last_modified", "mtime", "updated", "created")
MISSING_KEY = "missing"


def _time_ns(value: object) -> int:
    """A store's time (a datetime, a POSIX timestamp, or an ISO string) in nanoseconds since the epoch."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        return round(value.timestamp() * 1e9)
    return round(float(value) * 1e9)  # type: ignore[arg-type]


def _object_key(info: dict[str, Any]) -> str:
    """The identity of an object from its fsspec info (`info()` and `ls(detail=True)` give the same)."""
    size = int(info.get("size") or 0)
    for tag in _CONTENT_TAGS:
        if info.get(tag) is not None:
            return f"{size}:{tag}={str(info[tag]).strip(chr(34))}"
    for name in _TIMES:
        if info.get(name) is not None:
            return f"{size}:time_ns={_time_ns(info[name])}"
    return f"{size}:"


def stat_key(path: StoragePath) -> str:
    """The identity of one input file (see the module docstring); raises FileNotFoundError when absent."""
    if isinstance(path, ObjectPath):
        return _object_key(path.fs.info(path.path))
    info = path.stat()
    return f"{info.st_size}:mtime_ns={info.st_mtime_ns}"


def stat_keys(paths: Sequence[StoragePath]) -> list[str]:
    """`stat_key` of each path, `MISSING_KEY` for one that is gone; the objects of one folder come from one
    listing (a request per folder, not per object)."""
    listed: dict[str, dict[str, Any]] = {}
    for folder in sorted({p.parent for p in paths if isinstance(p, ObjectPath)}):
        try:
            entries = folder.fs.ls(folder.path, detail=True)
        except FileNotFoundError:
            continue
        listed.update((f"{folder.protocol}://{e['name'].strip('/')}", e) for e in entries if e.get("type") == "file")
    keys = []
    for path in paths:
        if str(path) in listed:
            keys.append(_object_key(listed[str(path)]))
            continue
        try:
            keys.append(stat_key(path))
        except FileNotFoundError:
            keys.append(MISSING_KEY)
    return keys


def _parquet_source(path: StoragePath) -> Any:
    """What pyarrow's parquet readers take: a local path as is, or an object opened here. Opened here, not
    through `filesystem=`: pyarrow's fsspec handler asks whether the key is a file before opening it,
    one more request for each file read."""
    return path.open("rb") if isinstance(path, ObjectPath) else path


def parquet_file(path: StoragePath, **options: Any) -> Any:
    """`pyarrow.parquet.ParquetFile` of a local file or an object (ranged reads, not a download)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(_parquet_source(path), **options)


def read_parquet(path: StoragePath, **options: Any) -> Any:
    """`pyarrow.parquet.read_table` of a local file or an object."""
    import pyarrow.parquet as pq

    with _opened(path) as source:
        return pq.read_table(source, **options)


def read_parquet_schema(path: StoragePath) -> Any:
    import pyarrow.parquet as pq

    with _opened(path) as source:
        return pq.read_schema(source)


def read_parquet_metadata(path: StoragePath) -> Any:
    import pyarrow.parquet as pq

    with _opened(path) as source:
        return pq.read_metadata(source)


def _opened(path: StoragePath) -> AbstractContextManager[Any]:
    source = _parquet_source(path)
    return source if isinstance(path, ObjectPath) else nullcontext(source)


def open_arrow_input(path: StoragePath) -> Any:
    """A seekable pyarrow input of a local file (memory-mapped, as before) or an object (a ranged reader)."""
    import pyarrow as pa

    if isinstance(path, ObjectPath):
        return pa.PythonFile(path.open("rb"), mode="r")
    return pa.memory_map(str(path))
