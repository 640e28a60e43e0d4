"""A download staging on object storage: downloaded in a local scratch folder, published shard by shard.

img2dataset and the staging code write local files, and the workers of a cluster share no disk. For a
staging whose home is an object-store URL (`<output>/staging/<partition>/` under an `s3://` output),
`staged_locally` gives the download a scratch folder that already holds the store's `staging.json`
and its completed shards' `_stats.json` markers (so finished shards are skipped, as on a local disk),
and afterwards uploads every shard completed here: its `.tar` and `.parquet` first, its `_stats.json`
marker last, then `urls.parquet`, `rejected.parquet` and finally `staging.json`. A staging whose input
or options changed is cleared on the store before anything new is published. Readers
(`iter_staged_pairs`, `iter_staged_images`) read the store's staging in place; a reader that needs the
whole staging on local disk (`cauldron build --fetch-images` reads images at random offsets of the tars)
asks for `pull=True`, which also copies the completed shards' `.tar` and `.parquet` into the scratch
folder: one GET per file instead of one ranged GET per image.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from curation.pairs.download import IMAGES_DIR, REJECTED_FILE, STAGING_FILE, URLS_FILE
from curation.storage import ObjectPath, StoragePath

_MARKER = "_stats.json"


@contextmanager
def staged_locally(staging: StoragePath, pull: bool = False) -> Iterator[Path]:
    """A local folder to stage and download into: `staging` itself when it is local, else a scratch
    folder published to `staging` on the way out (also after a failure: completed shards are kept).

    `pull`: also copy the completed shards themselves into the scratch folder, not only their markers.
    """
    if not isinstance(staging, ObjectPath):
        yield staging
        return
    with tempfile.TemporaryDirectory(prefix="potion-staging-") as scratch:
        local = Path(scratch)
        seeded_state, seeded = _seed(staging, local, pull)
        try:
            yield local
        finally:
            if (local / STAGING_FILE).exists():
                _publish(local, staging, seeded_state, seeded)


def _seed(remote: ObjectPath, local: Path, pull: bool) -> tuple[dict | None, set[str]]:
    """Copy the store's staging.json and completion markers (and with `pull` the completed shards'
    `.tar` and `.parquet`); returns that state and the markers copied."""
    if not (remote / STAGING_FILE).exists():
        return None, set()
    (remote / STAGING_FILE).download(local / STAGING_FILE)
    (local / IMAGES_DIR).mkdir()
    names = {p.name for p in (remote / IMAGES_DIR).glob("*")}  # one listing
    markers = {name for name in names if name.endswith(_MARKER)}
    shards = {name[: -len(_MARKER)] for name in markers}
    wanted = markers | ({f"{shard}{suffix}" for shard in shards for suffix in (".tar", ".parquet")} & names if pull else set())
    for name in sorted(wanted):
        (remote / IMAGES_DIR / name).download(local / IMAGES_DIR / name)
    return json.loads((local / STAGING_FILE).read_text()), markers


def _publish(local: Path, remote: ObjectPath, seeded_state: dict | None, seeded: set[str]) -> None:
    if json.loads((local / STAGING_FILE).read_text()) != seeded_state:  # a new list or new options
        (remote / STAGING_FILE).unlink(missing_ok=True)  # first: no reader takes old shards for the new list
        (remote / IMAGES_DIR).remove_tree()  # also shards an interrupted publish left without a staging.json
        seeded = set()
    images = local / IMAGES_DIR
    for marker in sorted(images.glob(f"*{_MARKER}")) if images.exists() else []:
        if marker.name in seeded:
            continue
        shard = marker.name[: -len(_MARKER)]
        for part in (images / f"{shard}.tar", images / f"{shard}.parquet", marker):
            if part.exists():
                (remote / IMAGES_DIR / part.name).upload(part)
    for name in (URLS_FILE, REJECTED_FILE, STAGING_FILE):
        (remote / name).upload(local / name)
