"""Downloading the images of kept OBELICS documents and putting their bytes into the documents.

The OBELICS release holds image URLs, not bytes, and a document whose images stay URLs trains on text
alone. After opt-out removal and perplexity selection, the write phase asks for the URL-only image
nodes of the documents it keeps (never an opted-out image, never a dropped document's image) and
downloads them into `staging/<partition>/` with the `curate pairs` downloader (URL guard, X-Robots-Tag
directives, resize to `max_side`, completed staging shards reused on rerun). A failed image is removed
from its document and listed with its reason, its text stays; a document left with fewer than
`min_images` images is ledgered `no_images_left`. Image nodes that already carry bytes are not fetched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from curation.documents import InterleavedDocument
from curation.pairs.download import DownloadOptions, download_staging, iter_staged_images, stage_url_rows
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
class FetchedDocuments:
    documents: list[InterleavedDocument] = field(default_factory=list)
    no_images_left: list[tuple[str, str]] = field(default_factory=list)  # (doc id, detail)
    removed_images: list[dict] = field(default_factory=list)  # {id, url, reason, detail}
    downloaded: int = 0  # image nodes that got bytes from the staging
    requested: int = 0


def download_document_images(
    docs: list[InterleavedDocument], staging: StoragePath, options: DownloadOptions, min_images: int = 1
) -> FetchedDocuments:
    """Fetch the URL-only images of `docs` into `staging` (reused on rerun) and attach them.

    Raises DownloadIncompleteError when some staging shards still fail; the partition fails and a rerun
    resumes from the shards that completed.
    """
    requests = url_requests(docs)
    fetched: dict[str, bytes] = {}
    failed: dict[str, tuple[str, str]] = {}
    if requests:
        with staged_locally(staging) as local:  # itself when local; on object storage, published shard by shard
            stage_url_rows(requests, local.path, columns=_COLUMNS, options=options)
            download_staging(local.path, options, local.shard_done)
        for staged in iter_staged_images(staging):
            if staged.image is not None:
                fetched[staged.id] = staged.image
            else:
                failed[staged.id] = (staged.reason, staged.detail)
    out = FetchedDocuments(requested=len(requests))
    for doc in docs:
        images = list(doc.images)
        lost: set[int] = set()
        for pos in doc.image_positions:
            if not isinstance(images[pos], str):
                continue
            key = image_key(doc.id, pos)
            if key in fetched:
                images[pos] = fetched[key]
                out.downloaded += 1
                continue
            reason, detail = failed.get(key, ("download_error", "no result in the staging"))
            out.removed_images.append({"id": doc.id, "url": doc.image_url(pos), "reason": reason, "detail": detail})
            lost.add(pos)
        with_bytes = InterleavedDocument(doc.id, doc.texts, images, doc.metadata, doc.general_metadata)
        kept = with_bytes.without_images(lost.__contains__) if lost else with_bytes
        left = len(kept.image_positions)
        if left < min_images:
            out.no_images_left.append((doc.id, f"{left} of {len(doc.image_positions)} images left, --min-images {min_images}"))
        else:
            out.documents.append(kept)
    return out
