"""A download staging on object storage: downloaded in a local scratch folder, published shard by shard.

img2dataset and the staging code write local files, and the workers of a cluster share no disk. For a
staging whose home is an object-store URL (`<output>/staging/<partition>/` under an `s3://` output),
`staged_locally` gives the download a scratch folder that already holds the store's `staging.json`
and its completed shards' `_stats.json` markers (so finished shards are skipped, as on a local disk).
Each shard is uploaded as soon as it completes (`LocalStaging.shard_done`, called by `download_staging`):
its `.tar` and `.parquet` first, its `_stats.json` marker last. The lists the shards belong to
(`urls.parquet`, `rejected.parquet`, then `staging.json`) are on the store before the first shard, so a
task killed mid-download (kill -9, a lost node: no way out runs) loses at most the shards in flight: its
rerun seeds from that `staging.json` and skips every published shard. A staging whose input or options
changed is cleared on the store (its `staging.json` first) before anything new is published. On the way
out (also after a failure) any shard not yet published follows, then the lists if they did not go first.

Readers (`iter_staged_pairs`, `iter_staged_images`) read the store's staging in place; a reader that
needs the whole staging on local disk (`cauldron build --fetch-images` reads images at random offsets of
the tars) asks for `pull=True`, which also copies the completed shards' `.tar` and `.parquet` into the
scratch folder: one GET per file instead of one ranged GET per image.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from curation.pairs.download import IMAGES_DIR, REJECTED_FILE, STAGING_FILE, URLS_FILE, shard_name
from curation.storage import ObjectPath, StoragePath

_MARKER = "_stats.json"


@dataclass
class LocalStaging:
    """The local folder a download writes to, and where its completed shards are published (if anywhere)."""

    path: Path
    remote: ObjectPath | None = None
    seeded_state: dict | None = None  # the store's staging.json when the task started
    published: set[str] = field(default_factory=set)  # shard names the store holds for that state
    checked: bool = False  # whether the local staging.json was compared with the seeded one
    lists_published: bool = False  # whether this task put its lists on the store

    def shard_done(self, shard_id: int) -> None:
        """Publish one shard the download just completed (nothing to do for a local staging)."""
        if self.remote is not None:
            self._publish_shard(self.remote, shard_name(shard_id))

    def _publish_shard(self, remote: ObjectPath, shard: str) -> None:
        self._clear_if_stale(remote)
        if shard in self.published:
            return
        images = self.path / IMAGES_DIR
        for part in (images / f"{shard}.tar", images / f"{shard}.parquet", images / f"{shard}{_MARKER}"):
            if part.exists():
                (remote / IMAGES_DIR / part.name).upload(part)
        self.published.add(shard)

    def _clear_if_stale(self, remote: ObjectPath) -> None:
        """Before the first upload: a staging for a new list or new options replaces the store's, and its
        lists are published at once (`staging.json` last), so a rerun after a kill finds its shards."""
        if self.checked:
            return
        self.checked = True
        if json.loads((self.path / STAGING_FILE).read_text()) != self.seeded_state:
            (remote / STAGING_FILE).unlink(missing_ok=True)  # first: no reader takes old shards for the new list
            (remote / IMAGES_DIR).remove_tree()  # also shards an interrupted publish left without a staging.json
            self.published = set()
            self._publish_lists(remote)

    def _publish_lists(self, remote: ObjectPath) -> None:
        for name in (URLS_FILE, REJECTED_FILE, STAGING_FILE):
            (remote / name).upload(self.path / name)
        self.lists_published = True

    def finish(self) -> None:
        """Publish what is left: shards not yet uploaded, and the lists unless they went before the shards
        (they are rewritten from the input on every run: captions and refused rows follow it)."""
        remote = self.remote
        if remote is None or not (self.path / STAGING_FILE).exists():
            return
        images = self.path / IMAGES_DIR
        for marker in sorted(images.glob(f"*{_MARKER}")) if images.exists() else []:
            self._publish_shard(remote, marker.name[: -len(_MARKER)])
        self._clear_if_stale(remote)
        if not self.lists_published:
            self._publish_lists(remote)


@contextmanager
def staged_locally(staging: StoragePath, pull: bool = False) -> Iterator[LocalStaging]:
    """A local folder to stage and download into: `staging` itself when it is local, else a scratch
    folder whose shards are published to `staging` as they complete and whose lists follow on the way
    out (also after a failure: completed shards are kept).

    `pull`: also copy the completed shards themselves into the scratch folder, not only their markers.
    """
    if not isinstance(staging, ObjectPath):
        yield LocalStaging(staging)
        return
    with tempfile.TemporaryDirectory(prefix="potion-staging-") as scratch:
        local = LocalStaging(Path(scratch), staging)
        local.seeded_state, local.published = _seed(staging, local.path, pull)
        try:
            yield local
        finally:
            local.finish()


def _seed(remote: ObjectPath, local: Path, pull: bool) -> tuple[dict | None, set[str]]:
    """Copy the store's staging.json and completion markers (and with `pull` the completed shards'
    `.tar` and `.parquet`); returns that state and the names of the shards the store has."""
    if not (remote / STAGING_FILE).exists():
        return None, set()
    (remote / STAGING_FILE).download(local / STAGING_FILE)
    (local / IMAGES_DIR).mkdir()
    names = {p.name for p in (remote / IMAGES_DIR).glob("*")}  # one listing
    shards = {name[: -len(_MARKER)] for name in names if name.endswith(_MARKER)}
    wanted = {f"{shard}{_MARKER}" for shard in shards}
    if pull:
        wanted |= {f"{shard}{suffix}" for shard in shards for suffix in (".tar", ".parquet")} & names
    for name in sorted(wanted):
        (remote / IMAGES_DIR / name).download(local / IMAGES_DIR / name)
    return json.loads((local / STAGING_FILE).read_text()), shards
