"""WebDataset shards: transactional writing with a per-partition manifest, and safe reading.

A sample is a dict: `__key__` plus one entry per file extension (`json`, `txt`, `png`, `0.jpg`, ...)
holding bytes. Shards are named from the input partition (`<partition>-00000.tar`), each written to a
temporary name sample by sample as samples arrive (memory holds one sample, not a shard) and renamed
when complete (on object storage: uploaded to its key when complete, see
`curation.atomic`). The partition's manifest is written last and is the resume
marker: a partition with a manifest is finished. Shards are POSIX pax tars (plain ustar headers unless a
name needs more), so any key length or character set round-trips; a key written twice in one partition
is refused as a `duplicate_key` sample error.

Reading is defensive: members are never extracted, and a tar that breaks part-way (a damaged or
truncated header, member data running past the end of the file, a truncated compressed stream, an
unsafe member name, data hidden after the end-of-archive marker, a negative size, a malformed sparse
map, a header asking for one read larger than the member size cap) yields every complete sample before
the damage and then raises `DamagedTarError` saying where and why, instead of ending quietly, looping
forever, raising ValueError or allocating what the header asks, as Python's tarfile does. An error of
the storage under the tar (a timeout, a dropped connection, a vanished object: `is_storage_error`) is
not damage: it is raised as it is, so a pipeline fails the partition and the trainer retries. `list_tar`
counts samples the same way without reading member data, so a partition's input count comes from the
tar itself; on object storage it fetches headers with ranged reads that seek over long member data,
instead of downloading a shard once to count it and again to read it.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import IO, Any

from curation.atomic import atomic_path, remove_stale_temporaries, write_json
from curation.errors import SampleError
from curation.readers import InputCount, UnreadableInputError
from curation.storage import ObjectPath, StoragePath

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
DEFAULT_SAMPLES_PER_SHARD = 1000
DEFAULT_MAX_MEMBER_BYTES = 256 * 1024 * 1024
OVERSIZED = "__oversized__"  # in a read sample: {ext: size} of members over the size cap, left unread
TOO_LARGE = "__too_large__"  # in a read sample over the sample caps: why; the sample then holds no member
DEFAULT_MAX_SAMPLE_MEMBERS = 1024
MAX_KEY_CHARS = 160
_KEY_DIGEST_CHARS = 16


def safe_key(raw: str) -> str:
    """A WebDataset key: no dots or slashes (webdataset splits the extension at the first dot).

    Keys longer than MAX_KEY_CHARS are cut and end in 16 hex digits of the raw string's SHA-1, so
    distinct long ids keep distinct keys.
    """
    key = _KEY_UNSAFE.sub("_", raw) or "_"
    if len(key) <= MAX_KEY_CHARS:
        return key
    return f"{key[: MAX_KEY_CHARS - _KEY_DIGEST_CHARS - 1]}_{_digest(raw)}"


def sample_key(sample_id: str) -> str:
    """The key of a sample with this id: the id itself when it is a safe key, else its safe form plus 16
    hex digits of the id's SHA-1, so distinct ids never share a key in a partition."""
    key = safe_key(sample_id)
    if key == sample_id:
        return key
    return f"{key[: MAX_KEY_CHARS - _KEY_DIGEST_CHARS - 1]}_{_digest(sample_id)}"


def _digest(raw: str) -> str:
    return hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()[:_KEY_DIGEST_CHARS]


@dataclass(frozen=True)
class ShardInfo:
    name: str
    count: int
    bytes: int
    sha256: str


MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_READERS = 16


def _manifest_path(out_dir: StoragePath, partition: str) -> StoragePath:
    return out_dir / f"{partition}{MANIFEST_SUFFIX}"


def read_manifest(out_dir: StoragePath, partition: str) -> dict[str, Any] | None:
    """The partition's manifest, None when it has none (one GET on object storage, no existence check first)."""
    try:
        text = _manifest_path(out_dir, partition).read_text()
    except FileNotFoundError:
        return None
    return json.loads(text)


def read_manifests(out_dir: StoragePath, partitions: Iterable[str]) -> dict[str, dict[str, Any]]:
    """partition -> manifest for those of `partitions` that have one.

    One listing of the folder finds them (on object storage a LIST a thousand keys, instead of a request or
    two per partition, most of them for manifests that are not there on a first run); the ones found are
    read a few at a time in parallel.
    """
    wanted = set(partitions)
    names = [p.name[: -len(MANIFEST_SUFFIX)] for p in out_dir.glob(f"*{MANIFEST_SUFFIX}")]
    present = [name for name in names if name in wanted]
    with ThreadPoolExecutor(MANIFEST_READERS) as pool:
        found = list(pool.map(lambda name: (name, read_manifest(out_dir, name)), present))
    return {name: manifest for name, manifest in found if manifest is not None}


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    info.mtime = 0  # deterministic bytes for identical content
    tar.addfile(info, io.BytesIO(payload))


class _HashingWriter:
    """A binary file that hashes and counts what goes through it, so a shard's sha256 and size are known
    when its last byte is written (no second read of the file)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def tell(self) -> int:
        return self.size


class _OpenShard:
    """One shard being written: its members go to a temporary file as they arrive, and `publish` makes it
    visible under its name (see curation.atomic); a shard never published leaves nothing under its name."""

    def __init__(self, path: StoragePath) -> None:
        self.name = path.name
        self.count = 0
        self._stack = ExitStack()
        tmp = self._stack.enter_context(atomic_path(path))
        self._file = _HashingWriter(self._stack.enter_context(open(tmp, "wb")))
        # typeshed's fileobj protocol also asks for read(), which writing never calls
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]

    def add(self, sample: dict[str, Any]) -> None:
        key = sample["__key__"]
        for ext, payload in sample.items():
            if not ext.startswith("__"):
                _add_member(self._tar, f"{key}.{ext}", payload)
        # tarfile keeps every header it wrote; nothing here reads them back
        self._tar.members.clear()
        self.count += 1

    def publish(self) -> ShardInfo:
        self._tar.close()  # the end-of-archive blocks and the padding to a whole record
        self._file.handle.flush()
        os.fsync(self._file.handle.fileno())  # on disk before the manifest that names it (which is synced too)
        info = ShardInfo(self.name, self.count, self._file.size, self._file.digest.hexdigest())
        self._stack.close()  # closes the file, then renames or uploads it
        return info

    def discard(self) -> None:
        self._stack.__exit__(_Discarded, _Discarded(), None)


class _Discarded(Exception):
    """Thrown into a shard's atomic_path: its temporary file is removed and nothing is published."""


class PartitionShardWriter:
    """Writes one partition's samples into `<partition>-NNNNN.tar` shards and finally its manifest.

    Each sample's members go to the open shard's temporary file as the sample arrives, so memory holds one
    sample, not a shard. A write or publish that fails removes the shard's temporary file; use the writer
    as a context manager (or call `abort`) so a partition failing elsewhere leaves none behind either.
    """

    def __init__(self, out_dir: StoragePath, partition: str, samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD):
        self.out_dir = out_dir
        self.partition = partition
        self.samples_per_shard = samples_per_shard
        self.shards: list[ShardInfo] = []
        self._open: _OpenShard | None = None
        self._keys: set[str] = set()  # bounded by the partition, like its ledger
        out_dir.mkdir(parents=True, exist_ok=True)
        _manifest_path(out_dir, partition).unlink(missing_ok=True)
        shards = f"{partition}-[0-9][0-9][0-9][0-9][0-9].tar"
        for stale in out_dir.glob(shards):
            stale.unlink()  # left by an interrupted attempt; rewritten below
        remove_stale_temporaries(out_dir, shards)  # shards a killed attempt was still writing

    def write(self, sample: dict[str, Any]) -> None:
        """Add a sample to the open shard; raises SampleError(`duplicate_key`) for a key this partition
        already holds (nothing of that sample is written)."""
        key = sample["__key__"]
        if key in self._keys:
            raise SampleError("duplicate_key", f"key {key!r} is already in this partition's shards")
        self._keys.add(key)
        if self._open is None:
            self._open = _OpenShard(self.out_dir / f"{self.partition}-{len(self.shards):05d}.tar")
        try:
            self._open.add(sample)
        except BaseException:  # a full disk, a payload that is not bytes: the partition fails, the shard goes
            self.abort()
            raise
        if self._open.count >= self.samples_per_shard:
            self._flush()

    def _flush(self) -> None:
        if self._open is not None:
            shard, self._open = self._open, None
            try:
                self.shards.append(shard.publish())
            except BaseException:
                shard.discard()
                raise

    def abort(self) -> None:
        """Drop the shard being written (its temporary file is removed, nothing is published)."""
        if self._open is not None:
            shard, self._open = self._open, None
            shard.discard()

    def __enter__(self) -> PartitionShardWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

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


class DamagedTarError(tarfile.TarError):
    """A tar that cannot be read past some point; `detail` says where and why."""

    def __init__(self, path: StoragePath, detail: str) -> None:
        super().__init__(path, detail)  # both in args, so the error pickles (it crosses Ray)
        self.path = path
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


class UnsafeTarError(DamagedTarError):
    """A member with an absolute or `..` name: the tar is refused from that member on."""


# what tarfile and the decompressors raise for damaged or truncated archives (gzip and bz2 raise OSError
# without an errno; see is_storage_error for the OSErrors that are not about the bytes)
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)


def is_storage_error(exc: BaseException) -> bool:
    """Whether an error reading a tar came from the storage under it (a connection, a timeout, a refused or
    vanished object, an I/O error with an errno) rather than from its bytes: the archive may be whole, so
    it is raised as it is, never taken for damage (a retry or a failed partition, not a ledgered one)."""
    return isinstance(exc, TimeoutError) or (isinstance(exc, OSError) and exc.errno is not None)


# what tarfile's header parsing lets slip on malformed sparse maps or a negative long-name size
_PARSE_SLIPS = (ValueError, IndexError)
_DECOMPRESSORS: tuple[tuple[bytes, Callable[[IO[bytes]], io.BufferedIOBase]], ...] = (
    (b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")),
    (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
)


class _BoundedReads:
    """The archive stream as tarfile sees it, refusing any one read sized below zero or past `limit`.

    tarfile reads a pax or GNU long-name header's data in one call of the size its header declares, so a
    header declaring a terabyte would have it allocate a terabyte; member data is read only for members
    under the size cap, so no honest read is larger than the cap.
    """

    def __init__(self, stream: io.BufferedIOBase | IO[bytes], limit: int) -> None:
        self.stream = stream
        self.limit = limit

    def read(self, size: int) -> bytes:
        if not 0 <= size <= self.limit:
            raise tarfile.ReadError(f"a header asks to read {size} bytes at once (at most {self.limit})")
        return self.stream.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def _buffered(handle: IO[bytes]) -> IO[bytes]:
    """An object's file buffered in memory: tarfile reads every 512-byte header on its own, and each read
    of an fsspec file goes through its cache layer in Python (10% of a shard read from S3). Local files
    are buffered already."""
    return handle if isinstance(handle, io.BufferedIOBase) else io.BufferedReader(handle, 1 << 20)  # type: ignore[type-var]


class _HeaderReads(io.RawIOBase):
    """An object read for its tar headers: each read the buffer cannot serve is one ranged request, and
    member data longer than SKIP_OVER_BYTES is seeked over instead of downloaded.

    Reads that follow on (small members, a compressed stream) continue from the buffer's end in blocks
    that double up to MAX_BLOCK, so a tar of small members is still fetched in a few large requests;
    after a skip the block starts again at MIN_BLOCK, about a header's worth.
    """

    MIN_BLOCK = 64 * 1024
    MAX_BLOCK = 8 * 1024 * 1024
    # a request's ~20 ms is what ~2 MiB take to stream at ~100 MB/s: a longer gap is cheaper seeked over
    SKIP_OVER_BYTES = 2 * 1024 * 1024

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self.handle = handle
        self.size = size
        self.pos = 0
        self.start = 0
        self.data = b""
        self.block = self.MIN_BLOCK

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self.handle.close()
        super().close()

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(base + offset, 0)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.size:
            return 0
        if not self.start <= self.pos < self.start + len(self.data):
            self._fetch()
        chunk = self.data[self.pos - self.start : self.pos - self.start + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)

    def _fetch(self) -> None:
        end = self.start + len(self.data)
        if self.data and end <= self.pos < end + self.SKIP_OVER_BYTES:  # close ahead: read on through
            self.block = min(2 * self.block, self.MAX_BLOCK)
            at, size = end, max(self.block, self.pos - end + self.MIN_BLOCK)
        else:
            self.block = self.MIN_BLOCK
            at, size = self.pos, self.block
        self.handle.seek(at)
        self.data = self.handle.read(min(size, self.size - at))
        self.start = at
        if not self.data:
            raise OSError(f"no data at byte {at} of {self.size}")


def _header_stream(path: StoragePath) -> IO[bytes]:
    """The file to list a tar's headers from: on object storage, ranged reads that skip member data."""
    if not isinstance(path, ObjectPath):
        return path.open("rb")
    handle = path.open("rb", cache_type="none")  # every read below is exactly one ranged GET
    size = getattr(handle, "size", None)  # fsspec's buffered files know it from opening
    if not isinstance(size, int):
        return _buffered(handle)
    return io.BufferedReader(_HeaderReads(handle, size), tarfile.BLOCKSIZE)


@contextmanager
def _open_archive(path: StoragePath, max_member_bytes: int, headers_only: bool = False) -> Iterator[tarfile.TarFile]:
    """The tar at `path`, decompressed as its first bytes say (gzip, bzip2, xz or none), read through
    _BoundedReads; with `headers_only`, member data is not read and, on object storage, not fetched."""
    limit = max(max_member_bytes, 1 << 20) + tarfile.BLOCKSIZE
    with _header_stream(path) if headers_only else _buffered(path.open("rb")) as raw:
        magic = raw.read(6)
        raw.seek(0)
        opener = next((open_ for prefix, open_ in _DECOMPRESSORS if magic.startswith(prefix)), None)
        with opener(raw) if opener else nullcontext(raw) as stream:
            try:
                # typeshed's fileobj protocol also asks for write() and close(), which reading never calls
                tar = tarfile.open(fileobj=_BoundedReads(stream, limit), mode="r:")  # type: ignore[call-overload]
            except _PARSE_SLIPS as exc:
                raise tarfile.ReadError(f"malformed header: {exc}") from None
            with tar:
                yield tar


def _members(path: StoragePath, tar: tarfile.TarFile, refuse_unsafe_names: bool = True) -> Iterator[tarfile.TarInfo]:
    """The archive's members in order, each checked by _check_member before the next header is read."""
    while True:
        try:
            member = tar.next()
        except _PARSE_SLIPS as exc:
            raise tarfile.ReadError(f"malformed header after byte {tar.offset}: {exc}") from None
        if member is None:
            return
        _check_member(path, member, refuse_unsafe_names)
        if tar.offset <= member.offset:  # a negative size in the header: tarfile would read it forever
            raise DamagedTarError(path, f"header at byte {member.offset} sends the reader back to byte {tar.offset}")
        # tarfile keeps every header it read: memory growing with a stranger's member count
        tar.members.clear()  # type: ignore[attr-defined]
        yield member


def _check_member(path: StoragePath, member: tarfile.TarInfo, refuse_unsafe_names: bool = True) -> None:
    name = member.name
    if refuse_unsafe_names and (name.startswith("/") or ".." in name.split("/")):  # str ops: a Path per member costs 10% of a read
        raise UnsafeTarError(path, f"unsafe member name {_printable(name)!r} at byte {member.offset}")
    if member.size < 0:
        raise DamagedTarError(path, f"negative size {member.size} of member {_printable(name)!r} at byte {member.offset}")


def _printable(name: str) -> str:
    """A member name as valid text: bytes that were not UTF-8 become `\\xNN` escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class _End:
    """How an archive ended where tarfile stopped: `marker` when at an end-of-archive marker (the last
    sample is complete), `problem` when the end was no proper end."""

    marker: bool
    problem: str | None = None


def _archive_end(tar: tarfile.TarFile) -> _End:
    """tarfile stops quietly at a damaged or truncated header; a proper end is a zero block followed by
    nothing but zeros, or (as GNU tar, Go and Python accept) the end of the file right after a member."""
    at = tar.offset
    handle = tar.fileobj
    handle.seek(at)
    block = handle.read(tarfile.BLOCKSIZE)
    if not block:
        return _End(marker=True)
    if len(block) < tarfile.BLOCKSIZE:
        return _End(False, f"truncated header at byte {at}")
    if block.count(0) != len(block):
        return _End(False, f"damaged header at byte {at} (bad checksum or garbage)")
    while chunk := handle.read(1 << 20):
        if chunk.count(0) != len(chunk):
            return _End(True, f"data after the end-of-archive marker at byte {at} (a second archive appended?)")
    return _End(marker=True)


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    data = handle.read() if handle else b""
    if len(data) != member.size:
        raise tarfile.ReadError(f"member data of {member.size} bytes ends after {len(data)}")
    return data


@dataclass(frozen=True)
class _Caps:
    """What one sample may hold: bytes per member, bytes read in all, and members."""

    member_bytes: int
    sample_bytes: int
    sample_members: int


@dataclass
class _Sample:
    """The sample being read, with the members and bytes it counts so far."""

    fields: dict[str, Any]
    members: int = 0
    held: int = 0

    def over(self, caps: _Caps, ext: str, size: int) -> str | None:
        """Why the sample breaks a cap by taking this member (of `size` bytes to hold), or None."""
        if self.members + 1 > caps.sample_members or self.held + size > caps.sample_bytes:
            return (
                f"over the sample cap at member {ext!r}: {self.members + 1} members, {self.held + size} bytes "
                f"(at most {caps.sample_members} members, {caps.sample_bytes} bytes)"
            )
        return None


def _samples(path: StoragePath, caps: _Caps, read: bool) -> Iterator[dict[str, Any]]:
    """Members grouped into samples (consecutive members with the same key); see iter_tar_samples."""
    current: _Sample | None = None
    where: str | tarfile.TarInfo = "opening the archive"  # a member: its description is made only on error
    try:
        with _open_archive(path, caps.member_bytes, headers_only=not read) as tar:
            for member in _members(path, tar):
                where = member
                if not member.isfile():
                    continue
                directory, _, base = _printable(member.name).rpartition("/")
                stem, dot, ext = base.partition(".")
                if not dot:
                    continue
                key = f"{directory}/{stem}" if directory else stem
                if current is not None and current.fields["__key__"] != key:
                    yield current.fields
                    current = None
                if current is None:
                    current = _Sample({"__key__": key})
                if TOO_LARGE in current.fields:
                    continue  # the rest of a sample over its caps: headers only, data never read
                held = member.size if member.size <= caps.member_bytes else 0
                if reason := current.over(caps, ext, held):
                    current.fields = {"__key__": key, TOO_LARGE: reason}  # what it read is let go
                    continue
                current.members += 1
                current.held += held
                if member.size > caps.member_bytes:
                    current.fields.setdefault(OVERSIZED, {})[ext] = member.size
                    continue
                current.fields[ext] = _read_member(tar, member) if read else b""
            where = "checking the end of the archive"
            end = _archive_end(tar)
    except DamagedTarError:
        raise
    except _READ_ERRORS as exc:
        if is_storage_error(exc):
            raise
        raise DamagedTarError(path, f"{_describe_step(where)}: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    if current is not None and end.marker:  # else it may miss members beyond the damage: part of the rest
        yield current.fields
    if end.problem:
        raise DamagedTarError(path, end.problem)


def _describe_step(where: str | tarfile.TarInfo) -> str:
    if isinstance(where, str):
        return where
    return f"reading member {_printable(where.name)!r} at byte {where.offset}"


def iter_tar_members(path: StoragePath, read_limit: int = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Every member of the tar at `path` with its open archive, for readers that are not WebDataset shaped.

    The same guards as iter_tar_samples (decompression chosen by magic bytes, no single read over
    `read_limit`, negative sizes and malformed headers refused, the end checked for a proper marker),
    raising DamagedTarError where the archive breaks. Member names are not judged: nothing is extracted
    to disk, and the caller decides what an absolute or `..` name means. Read a member with
    `tar.extractfile(member)` before taking the next one.
    """
    where: str | tarfile.TarInfo = "opening the archive"
    try:
        with _open_archive(path, read_limit) as tar:
            for member in _members(path, tar, refuse_unsafe_names=False):
                where = member
                yield tar, member
            where = "checking the end of the archive"
            end = _archive_end(tar)
    except DamagedTarError:
        raise
    except _READ_ERRORS as exc:
        if is_storage_error(exc):
            raise
        raise DamagedTarError(path, f"{_describe_step(where)}: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    if end.problem:
        raise DamagedTarError(path, end.problem)


def iter_tar_samples(
    path: StoragePath,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_sample_bytes: int | None = None,
    max_sample_members: int = DEFAULT_MAX_SAMPLE_MEMBERS,
) -> Iterator[dict[str, Any]]:
    """Read a WebDataset tar as samples without extracting: members are checked, never written to disk.

    Links and other non-file members are skipped, and so are members without an extension (they belong
    to no sample, as in webdataset). Members over `max_member_bytes` are not read but listed in the
    sample's `OVERSIZED` entry, so the caller can ledger that one sample and go on. A sample whose members
    would hold more than `max_sample_bytes` in all (default twice the member cap) or number more than
    `max_sample_members` is yielded as `__key__` and a `TOO_LARGE` reason only: what it read is let go
    and its remaining members are passed over unread, so one key cannot hold a task's memory. Member
    names that are not UTF-8 are read with their odd bytes escaped. After the last complete sample, a
    damaged archive raises DamagedTarError (UnsafeTarError for an absolute or `..` member name).
    """
    caps = _Caps(max_member_bytes, 2 * max_member_bytes if max_sample_bytes is None else max_sample_bytes, max_sample_members)
    yield from _samples(path, caps, read=True)


def list_tar(path: StoragePath, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> InputCount:
    """Count the samples iter_tar_samples will yield, reading headers only (member data is skipped).

    Raises UnreadableInputError when the tar yields no sample at all before its damage.
    """
    samples = 0
    try:
        for _ in _samples(path, _Caps(max_member_bytes, 2 * max_member_bytes, DEFAULT_MAX_SAMPLE_MEMBERS), read=False):
            samples += 1
    except DamagedTarError as exc:
        if samples == 0:
            raise UnreadableInputError(path, f"not a readable tar ({exc.detail})") from None
        return InputCount(samples, exc.detail)
    return InputCount(samples)
