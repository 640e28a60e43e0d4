"""Images that rows name only by URL (NLVR2, Localized Narratives on the Hub), fetched on request.

With `--fetch-images`, the distinct URLs of one source file (from its adapter's URL columns) are staged
and downloaded with `curate pairs`' machinery (`curation.pairs.download`: img2dataset's downloader behind
the guarded opener of `curation.pairs.url_guard`: http(s) only, no private addresses unless allowed,
size, pixel and time caps, `X-Robots-Tag: noai` honoured) into a staging folder; completed shards are
reused when the build runs again. What comes back is an index, URL -> (tar, offset, size) or the reason
the download failed, so a row's bytes are read from the tar when the row is converted and only the
index is held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from curation.errors import SampleError
from curation.pairs.download import (
    IMAGES_DIR,
    REJECTED_FILE,
    DownloadOptions,
    download_staging,
    stage_url_rows,
)
from curation.pairs.download_reasons import reason_for
from curation.pairs.pair import PairColumns
from curation.pairs.staging_sync import LocalStaging
from curation.shards import iter_tar_members

URL_COLUMNS = PairColumns(url="url", alt_text="alt", synthetic_caption=None, punsafe=None, width=None, height=None, id="id")
IMAGE_SUFFIXES = (".jpg", ".png", ".webp")


def url_id(url: str) -> str:
    return hashlib.sha1(url.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class FetchedUrls:
    """Where each fetched URL's bytes are (tar, offset, size), or why it has none (reason, detail)."""

    located: dict[str, tuple[Path, int, int]] = field(default_factory=dict)
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)

    def get(self, url: str) -> bytes:
        key = url_id(url)
        if key in self.located:
            tar, offset, size = self.located[key]
            with open(tar, "rb") as handle:
                handle.seek(offset)
                return handle.read(size)
        reason, detail = self.failed.get(key, ("image_url_not_fetched", "the URL was not among those fetched"))
        raise SampleError(reason, f"{url[:200]}: {detail}"[:400])  # the reasons of `curate pairs`' downloads


def fetch_urls(urls: Iterable[str], local: LocalStaging, options: DownloadOptions) -> FetchedUrls:
    """Download the distinct `urls` into the `local` staging folder (reusing completed shards, publishing
    new ones where it says) and index the results.

    Raises `curation.pairs.download.DownloadIncompleteError` when shards still fail after retries.
    """
    staging = local.path
    rows = [{"url": url, "id": url_id(url)} for url in dict.fromkeys(urls)]
    stage_url_rows(rows, staging, columns=URL_COLUMNS, options=options)
    download_staging(staging, options, local.shard_done)
    fetched = FetchedUrls()
    for row in pq.read_table(staging / REJECTED_FILE).to_pylist():
        fetched.failed[row["id"]] = (row["reason"], row["detail"] or "")
    for status_file in sorted((staging / IMAGES_DIR).glob("*.parquet")):
        offsets = _tar_offsets(status_file.with_suffix(".tar"))
        for row in pq.read_table(status_file, columns=["key", "status", "error_message", "pair_id"]).to_pylist():
            if row["status"] == "success" and row["key"] in offsets:
                fetched.located[row["pair_id"]] = (status_file.with_suffix(".tar"), *offsets[row["key"]])
            else:
                fetched.failed[row["pair_id"]] = (reason_for(row["status"], row["error_message"]), row["error_message"] or "")
    return fetched


def _tar_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """Sample key -> (data offset, size) of the image member of each sample in one img2dataset tar."""
    found: dict[str, tuple[int, int]] = {}
    if not path.exists():
        return found
    for _, member in iter_tar_members(path):
        name = Path(member.name)
        if member.isfile() and name.suffix in IMAGE_SUFFIXES:
            found[name.stem] = (member.offset_data, member.size)
    return found
