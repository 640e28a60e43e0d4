"""Downloading the images of kept OBELICS documents and putting their bytes into the documents.

The OBELICS release holds image URLs, not bytes, and a document whose images stay URLs trains on text
alone. After opt-out removal and perplexity selection, the write phase asks for the URL-only image
nodes of the documents it keeps (never an opted-out image, never a dropped document's image) and
downloads them into `staging/<partition>/` with the `curate pairs` downloader (URL guard, X-Robots-Tag
directives, resize to `max_side`, completed staging shards reused on rerun). A failed image is removed
from its document and listed with its reason, its text stays; a document left with fewer than
`min_images` images is ledgered `no_images_left`. Image nodes that already carry bytes are not fetched.

Memory: downloading and attaching are two passes over the documents (`stage_document_images`, then
`with_staged_images`), so a partition's documents are never all held with their image bytes; the staging
on disk holds them, and attaching reads it shard by shard as the documents come.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from curation.documents import InterleavedDocument
from curation.pairs.download import DownloadOptions, StagedImage, download_staging, iter_staged_images, stage_url_rows
from curation.pairs.pair import PairColumns
from curation.pairs.staging_sync import staged_locally
from curation.storage import StoragePath

NO_IMAGES_LEFT = "no_images_left"
_COLUMNS = PairColumns(url="url", alt_text=None, synthetic_caption=None, punsafe=None, width=None, height=None, id="id")


def image_key(doc_id: str, position: int) -> str:
    """The staging id of a document's image node (unique: one per document id and node position)."""
    return f"{doc_id}#{position}"


def url_requests(docs: Iterable[InterleavedDocument]) -> list[dict[str, str]]:
    """{id, url} of every URL-only image node of `docs`, in document order (nodes with bytes are left out)."""
    return [
        {"id": image_key(doc.id, pos), "url": url} for doc in docs for pos in doc.image_positions if isinstance(url := doc.images[pos], str)
    ]


@dataclass
class ImageTally:
    """What attaching the staged images did to a partition's documents."""

    no_images_left: list[tuple[str, str]] = field(default_factory=list)  # (doc id, detail)
    removed_images: list[dict] = field(default_factory=list)  # {id, url, reason, detail}
    downloaded: int = 0  # image nodes that got bytes from the staging
    requested: int = 0


@dataclass
class FetchedDocuments(ImageTally):
    documents: list[InterleavedDocument] = field(default_factory=list)


def stage_document_images(docs: Iterable[InterleavedDocument], staging: StoragePath, options: DownloadOptions) -> int:
    """Download the URL-only images of `docs` into `staging` (reused on rerun); returns how many were requested.

    Raises DownloadIncompleteError when some staging shards still fail; the partition fails and a rerun
    resumes from the shards that completed.
    """
    requests = url_requests(docs)
    if requests:
        with staged_locally(staging) as local:  # itself when local; on object storage, published shard by shard
            stage_url_rows(requests, local.path, columns=_COLUMNS, options=options)
            download_staging(local.path, options, local.shard_done)
    return len(requests)


class _StagedLookup:
    """The staging's results taken by key in request order, reading the staging only as far as needed.

    Requests are staged in document order and each staging shard holds a contiguous run of them (in any
    order inside the shard), so reading ahead to a key holds at most about one shard's images; each
    result is let go once taken.
    """

    def __init__(self, staged: Iterator[StagedImage]) -> None:
        self._staged = staged
        self._ahead: dict[str, StagedImage] = {}

    def take(self, key: str) -> StagedImage | None:
        while key not in self._ahead:
            staged = next(self._staged, None)
            if staged is None:
                return None
            self._ahead[staged.id] = staged
        return self._ahead.pop(key)


def with_staged_images(
    docs: Iterable[InterleavedDocument], staging: StoragePath, tally: ImageTally, min_images: int = 1
) -> Iterator[InterleavedDocument]:
    """`docs` (those `stage_document_images` staged, in the same order) with their staged image bytes, one
    at a time; a failed image is removed and listed in `tally`, a document left with fewer than
    `min_images` images is left out and listed there too."""
    lookup = _StagedLookup(iter_staged_images(staging) if tally.requested else iter(()))
    for doc in docs:
        images = list(doc.images)
        lost: set[int] = set()
        for pos in doc.image_positions:
            if not isinstance(images[pos], str):
                continue
            staged = lookup.take(image_key(doc.id, pos))
            if staged is not None and staged.image is not None:
                images[pos] = staged.image
                tally.downloaded += 1
                continue
            reason, detail = (staged.reason, staged.detail) if staged is not None else ("download_error", "no result in the staging")
            tally.removed_images.append({"id": doc.id, "url": doc.image_url(pos), "reason": reason, "detail": detail})
            lost.add(pos)
        with_bytes = InterleavedDocument(doc.id, doc.texts, images, doc.metadata, doc.general_metadata)
        kept = with_bytes.without_images(lost.__contains__) if lost else with_bytes
        left = len(kept.image_positions)
        if left < min_images:
            tally.no_images_left.append((doc.id, f"{left} of {len(doc.image_positions)} images left, --min-images {min_images}"))
        else:
            yield kept


def download_document_images(
    docs: list[InterleavedDocument], staging: StoragePath, options: DownloadOptions, min_images: int = 1
) -> FetchedDocuments:
    """`stage_document_images` then `with_staged_images` over a list, all documents kept in memory."""
    out = FetchedDocuments(requested=stage_document_images(docs, staging, options))
    out.documents = list(with_staged_images(docs, staging, out, min_images))
    return out
