"""URL-list pairs (LAION COCO style) downloaded with img2dataset into a per-partition staging folder.

Staging layout (one folder per input partition):
    staging.json        what the staged download was made from: url-list fingerprint and the options that
                        change its content; a mismatch on rerun restarts the download from scratch
    urls.parquet        the queued rows: url, pair_id, captions, punsafe, source size; one row group per
                        img2dataset shard (captions are read from here, so they are never stale)
    rejected.parquet    rows refused before any request (`missing_url`, `bad_url_scheme`, `bad_url`,
                        `duplicate_id`, `unreadable_input` for input rows that could not be read)
    images/NNNNN.tar    img2dataset's WebDataset shards (successes only), resized so that the longest
                        side is at most `max_side` (keep_ratio_largest, only if bigger, no needless re-encode)
    images/NNNNN.parquet  one row per requested sample with img2dataset's `status` / `error_message`
    images/NNNNN_stats.json  written last by img2dataset: the shard is complete

We drive img2dataset's own reader, resizer, downloader and WebDataset writer, but run them in our
process pool instead of `img2dataset.download()`: the pool's initializer installs the guarded opener
(`url_guard`: http(s) only, size and pixel caps, content-type check, total time limit) and OpenCV's
pixel cap in every download worker, which `download()` has no hook for; it also does not install a
process-wide SIGINT handler. Completed shards (`_stats.json`) are skipped on rerun, as in img2dataset's
incremental mode; a shard interrupted mid-write has no stats file and is downloaded again. A staging
on object storage is downloaded locally and published shard by shard as each completes
(`curation.pairs.staging_sync`); the readers below read it in place.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from curation.atomic import atomic_path, remove_stale_temporaries, write_json
from curation.errors import Rejection
from curation.images import DEFAULT_MAX_PIXELS
from curation.pairs.download_reasons import reason_for
from curation.pairs.pair import DEFAULT_COLUMNS, DEFAULT_MAX_CAPTION_CHARS, CaptionSource, Pair, PairColumns, make_pair
from curation.pairs.sources import unreadable_rows
from curation.pairs.url_guard import ALLOWED_SCHEMES, DownloadGuard, init_download_worker
from curation.readers import UnreadableRows, iter_rows
from curation.shards import iter_tar_samples
from curation.storage import StoragePath, parquet_file

if TYPE_CHECKING:
    from img2dataset.downloader import Downloader

URLS_FILE = "urls.parquet"
REJECTED_FILE = "rejected.parquet"
STAGING_FILE = "staging.json"
IMAGES_DIR = "images"
MAX_URL_CHARS = 4096
SHARD_DIGITS = 5

URL_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("pair_id", pa.string()),
        ("alt_text", pa.string()),
        ("synthetic_caption", pa.string()),
        ("punsafe", pa.float64()),
        ("source_width", pa.int64()),
        ("source_height", pa.int64()),
    ]
)
ADDITIONAL_COLUMNS = ["pair_id"]  # what img2dataset carries into its shard parquet, next to the status
REJECTED_SCHEMA = pa.schema([("id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])
REJECTED_PER_GROUP = 65_536


@dataclass(frozen=True)
class DownloadOptions:
    max_side: int = 980  # Idefics2's largest training resolution
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = 95  # jpg/webp quality; for png the compression level 0-9 (img2dataset's rule)
    min_side: int = 0
    timeout_s: int = 10  # per socket operation (img2dataset)
    total_timeout_s: float = 60.0  # per body (our guard)
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    processes: int = 1
    threads: int = 16
    samples_per_shard: int = 10_000
    retries: int = 0
    shard_retries: int = 1
    user_agent_token: str | None = None
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    allow_private_networks: bool = False  # fetch from loopback/private addresses (local mirrors, tests)

    def content_key(self) -> dict[str, Any]:
        """The options that change what the staging holds (a change restarts the download)."""
        keys = ("max_side", "encode_format", "encode_quality", "min_side", "max_bytes", "max_pixels")
        return {k: v for k, v in asdict(self).items() if k in keys + ("samples_per_shard",)}


@dataclass(frozen=True)
class StagingSummary:
    rows: int
    queued: int
    rejected: int
    shards: int
    shards_downloaded: int  # by this call; 0 when the staging was already complete


class DownloadIncompleteError(RuntimeError):
    """Some shards did not complete (after retries); rerunning resumes from the completed ones."""


def _url_problem(url: str | None) -> tuple[str, str] | None:
    if not url:
        return "missing_url", "empty URL"
    if len(url) > MAX_URL_CHARS:
        return "bad_url", f"URL of {len(url)} chars"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return "bad_url", str(exc)
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        return "bad_url_scheme", f"scheme {parts.scheme or '(none)'!r}"
    if not parts.hostname:
        return "bad_url", "no host"
    return None


def _typed(value: Any, kind: type) -> Any:
    try:
        return kind(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None


def _staged_rows(rows: Iterable[dict[str, Any] | UnreadableRows], columns: PairColumns, id_prefix: str) -> Iterator[tuple | Rejection]:
    """Each input row once: its URL_SCHEMA values (queued), or a Rejection naming it."""

    def get(row: dict[str, Any], name: str | None) -> Any:
        return row.get(name) if name else None

    seen: set[str] = set()  # only with an id column: row-index ids are distinct by construction
    index = 0
    for row in rows:
        if isinstance(row, UnreadableRows):
            yield from unreadable_rows(row, id_prefix)
            index = row.indices().stop
            continue
        index += 1
        pair_id = str(row[columns.id]) if columns.id and row.get(columns.id) is not None else f"{id_prefix}{index - 1}"
        if columns.id:
            if pair_id in seen:
                yield Rejection("duplicate_id", f"id {pair_id!r} already seen in this file", f"{pair_id}#row{index - 1}")
                continue
            seen.add(pair_id)
        url = get(row, columns.url)
        url = str(url).strip() if url is not None else None
        problem = _url_problem(url)
        if problem:
            yield Rejection(*problem, pair_id)
            continue
        yield (
            url,
            pair_id,
            _typed(get(row, columns.alt_text), str),
            _typed(get(row, columns.synthetic_caption), str),
            _typed(get(row, columns.punsafe), float),
            _typed(get(row, columns.width), int),
            _typed(get(row, columns.height), int),
        )


class _RowGroupWriter:
    """Rows (tuples in `schema` order) written as row groups of `group` rows to a temporary file, which a
    clean exit puts in place (an exception leaves the old file)."""

    def __init__(self, path: Path, schema: pa.Schema, group: int) -> None:
        self.schema = schema
        self.group = group
        self.rows = 0
        self._buffer: list[tuple] = []
        self._stack = ExitStack()
        remove_stale_temporaries(path.parent, glob.escape(path.name))  # left by a writer killed mid-list
        with self._stack:
            tmp = self._stack.enter_context(atomic_path(path))
            self._writer = self._stack.enter_context(pq.ParquetWriter(tmp, schema))
            self._stack = self._stack.pop_all()

    def __enter__(self) -> _RowGroupWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if kind is None:
            self._flush()
        self._stack.__exit__(kind, error, trace)

    def add(self, row: tuple) -> None:
        self._buffer.append(row)
        self.rows += 1
        if len(self._buffer) >= self.group:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            columns = [list(column) for column in zip(*self._buffer, strict=True)]
            self._writer.write_table(pa.Table.from_arrays(columns, schema=self.schema), row_group_size=self.group)
            self._buffer = []


def shard_name(shard_id: int) -> str:
    """`NNNNN`: the name img2dataset gives a shard's files in `images/`."""
    return f"{shard_id:0{SHARD_DIGITS}d}"


def _completed_shards(images: StoragePath) -> set[int]:
    return {int(p.name.split("_")[0]) for p in images.glob("*_stats.json")}


def stage_url_rows(
    rows: Iterable[dict[str, Any] | UnreadableRows],
    staging: Path,
    *,
    columns: PairColumns = DEFAULT_COLUMNS,
    options: DownloadOptions = DownloadOptions(),
    id_prefix: str = "",
) -> tuple[int, int]:
    """Write the url list and the refused rows; restart the staging if its input or options changed.

    Returns (queued, rejected) row counts; every input row is one or the other. Both lists are written as
    the rows stream in (a row group of `samples_per_shard` rows at a time, so memory does not grow with
    the input), then the staging restarts if its input or options changed.
    """
    staging.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()  # of the queued (pair_id, url) list, in order
    with (
        _RowGroupWriter(staging / URLS_FILE, URL_SCHEMA, options.samples_per_shard) as queued,
        _RowGroupWriter(staging / REJECTED_FILE, REJECTED_SCHEMA, REJECTED_PER_GROUP) as rejected,
    ):
        for item in _staged_rows(rows, columns, id_prefix):
            if isinstance(item, Rejection):
                rejected.add((item.id, item.reason, item.detail))
            else:
                queued.add(item)
                digest.update(f"{item[1]}\t{item[0]}\n".encode())
    state = {"fingerprint": digest.hexdigest(), "rows": queued.rows, "options": options.content_key()}
    previous = staging / STAGING_FILE
    if not previous.exists() or json.loads(previous.read_text()) != state:
        shutil.rmtree(staging / IMAGES_DIR, ignore_errors=True)
    write_json(previous, state)
    return queued.rows, rejected.rows


def _expected_shards(staging: StoragePath) -> int:
    state = json.loads((staging / STAGING_FILE).read_text())
    return math.ceil(state["rows"] / state["options"]["samples_per_shard"])


def download_staging(staging: Path, options: DownloadOptions = DownloadOptions(), on_shard: Callable[[int], None] | None = None) -> int:
    """Download the staged url list's missing shards with img2dataset; returns how many were downloaded.

    `on_shard(shard_id)` is called as each shard completes (its `_stats.json` written), e.g. to publish it.
    Raises DownloadIncompleteError when shards still fail after `shard_retries` extra rounds.
    """
    from img2dataset.reader import Reader

    expected = _expected_shards(staging)
    images = staging / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    done = _completed_shards(images)
    if expected == 0 or len(done & set(range(expected))) == expected:
        return 0
    tmp = staging / "_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    reader = Reader(
        str(staging / URLS_FILE), "parquet", "url", None, None, None, ADDITIONAL_COLUMNS,
        options.samples_per_shard, done, str(tmp),
    )  # fmt: skip
    downloader = _img2dataset_downloader(options, images, reader.column_list)
    guard = DownloadGuard(options.max_bytes, options.max_pixels, options.total_timeout_s, options.allow_private_networks)
    pending = list(reader)
    downloaded = len(pending)
    with get_context("spawn").Pool(options.processes, initializer=init_download_worker, initargs=(guard,), maxtasksperchild=5) as pool:
        for _ in range(1 + options.shard_retries):
            if not pending:
                break
            failed = []
            for ok, row in pool.imap_unordered(downloader, pending):
                if not ok:
                    failed.append(row)
                elif on_shard is not None:
                    on_shard(row[0])
            pending = failed
    shutil.rmtree(tmp, ignore_errors=True)
    missing = set(range(expected)) - _completed_shards(images)
    if missing:
        raise DownloadIncompleteError(f"shards {sorted(missing)} of {staging} did not complete; rerun to resume")
    return downloaded


def _img2dataset_downloader(options: DownloadOptions, images: Path, column_list: list[str]) -> Downloader:
    """img2dataset's shard downloader with our options: resized to at most `max_side` (only if bigger, no
    needless re-encode), successes only, written as WebDataset shards with a status parquet each."""
    from img2dataset.downloader import Downloader
    from img2dataset.resizer import Resizer
    from img2dataset.writer import WebDatasetSampleWriter

    resizer = Resizer(
        image_size=options.max_side,
        resize_mode="keep_ratio_largest",
        resize_only_if_bigger=True,
        encode_quality=options.encode_quality,
        encode_format=options.encode_format,
        skip_reencode=True,
        min_image_size=options.min_side,
        max_image_area=options.max_pixels,
    )
    return Downloader(
        sample_writer_class=WebDatasetSampleWriter,
        resizer=resizer,
        thread_count=options.threads,
        save_caption=False,
        extract_exif=False,
        output_folder=str(images),
        column_list=column_list,
        timeout=options.timeout_s,
        number_sample_per_shard=options.samples_per_shard,
        oom_shard_count=SHARD_DIGITS,
        compute_hash="sha256",
        verify_hash_type=None,
        encode_format=options.encode_format,
        retries=options.retries,
        user_agent_token=options.user_agent_token,
        disallowed_header_directives=list(options.disallowed_header_directives) or None,
    )


def download_pairs(
    rows: Iterable[dict[str, Any] | UnreadableRows],
    staging: Path,
    *,
    columns: PairColumns = DEFAULT_COLUMNS,
    options: DownloadOptions = DownloadOptions(),
    id_prefix: str = "",
    on_shard: Callable[[int], None] | None = None,
) -> StagingSummary:
    """Stage and download one partition's URL rows (e.g. `curation.readers.iter_rows_checked(path)`);
    `on_shard` as in `download_staging`."""
    queued, rejected = stage_url_rows(rows, staging, columns=columns, options=options, id_prefix=id_prefix)
    downloaded = download_staging(staging, options, on_shard)
    return StagingSummary(queued + rejected, queued, rejected, _expected_shards(staging), downloaded)


def _image_member(sample: dict[str, Any]) -> bytes | None:
    return next((v for k, v in sample.items() if k in ("jpg", "png", "webp")), None)


def iter_staged_pairs(
    staging: StoragePath,
    *,
    caption: CaptionSource = "synthetic",
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS,
) -> Iterator[Pair | Rejection]:
    """Every input row of a completed staging, once: a Pair (downloaded) or a Rejection naming it.

    Raises DownloadIncompleteError if the staging is not complete, ValueError if a shard's tar and
    parquet disagree (a damaged staging folder: delete it and rerun).
    """
    for row in iter_rows(staging / REJECTED_FILE):
        yield Rejection(row["reason"], row["detail"] or "", row["id"])
    expected = _expected_shards(staging)
    images = staging / IMAGES_DIR
    missing = set(range(expected)) - _completed_shards(images) if images.exists() else set(range(expected))
    if missing:
        raise DownloadIncompleteError(f"shards {sorted(missing)} of {staging} are not downloaded yet")
    queued = parquet_file(staging / URLS_FILE)
    for shard_id in range(expected):
        name = shard_name(shard_id)
        inputs = {row["pair_id"]: row for row in queued.read_row_group(shard_id).to_pylist()}
        samples = iter_tar_samples(images / f"{name}.tar")
        for row in iter_rows(images / f"{name}.parquet"):
            if row["status"] != "success":
                detail = row["error_message"] or row["status"] or ""
                yield Rejection(reason_for(row["status"], row["error_message"]), detail, row["pair_id"])
                continue
            sample = next(samples, None)
            if sample is None or sample["__key__"] != row["key"]:
                raise ValueError(f"{images / name}.tar does not match its parquet at key {row['key']}")
            source = inputs[row["pair_id"]]
            yield make_pair(
                row["pair_id"],
                image=_image_member(sample),
                alt_text=source["alt_text"],
                synthetic_caption=source["synthetic_caption"],
                caption=caption,
                url=source["url"],
                punsafe=source["punsafe"],
                width=row["width"],
                height=row["height"],
                metadata={
                    "original_width": row["original_width"],
                    "original_height": row["original_height"],
                    "source_width": source["source_width"],
                    "source_height": source["source_height"],
                    "sha256": row["sha256"],
                },
                max_caption_chars=max_caption_chars,
            )


@dataclass(frozen=True)
class StagedImage:
    """One queued or refused row of a completed staging: its image bytes, or why there are none."""

    id: str
    image: bytes | None
    reason: str = ""
    detail: str = ""


def iter_staged_images(staging: StoragePath) -> Iterator[StagedImage]:
    """Every row of a completed staging once, by id: the resized image, or the reason it failed.

    The plain-image view of `iter_staged_pairs`, for callers (OBELICS documents) that attach images to
    their own records. Raises DownloadIncompleteError / ValueError as `iter_staged_pairs` does.
    """
    for row in iter_rows(staging / REJECTED_FILE):
        yield StagedImage(row["id"], None, row["reason"], row["detail"] or "")
    expected = _expected_shards(staging)
    images = staging / IMAGES_DIR
    missing = set(range(expected)) - _completed_shards(images) if images.exists() else set(range(expected))
    if missing:
        raise DownloadIncompleteError(f"shards {sorted(missing)} of {staging} are not downloaded yet")
    for shard_id in range(expected):
        name = shard_name(shard_id)
        samples = iter_tar_samples(images / f"{name}.tar")
        for row in iter_rows(images / f"{name}.parquet"):
            if row["status"] != "success":
                detail = row["error_message"] or row["status"] or ""
                yield StagedImage(row["pair_id"], None, reason_for(row["status"], row["error_message"]), detail)
                continue
            sample = next(samples, None)
            if sample is None or sample["__key__"] != row["key"]:
                raise ValueError(f"{images / name}.tar does not match its parquet at key {row['key']}")
            yield StagedImage(row["pair_id"], _image_member(sample))
