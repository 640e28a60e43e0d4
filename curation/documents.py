"""The interleaved web document (OBELICS schema) and the edits the curation stages make to it.

A document is three parallel lists: at every position exactly one of `texts[i]` / `images[i]` is set,
and `metadata[i]` is the image's metadata dict (with `src`, the image URL) or None for a text node.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from curation.errors import SampleError
from curation.untrusted_json import loads as load_json

ImageRef = str | bytes
TEXT_MERGE_SEPARATOR = "\n\n"


def node_image_url(image: Any, meta: dict | None) -> str | None:
    """An image node's URL: its metadata `src`, else the image itself when it is a URL."""
    src = (meta or {}).get("src")
    if isinstance(src, str) and src:
        return src
    return image if isinstance(image, str) else None


@dataclass
class InterleavedDocument:
    id: str
    texts: list[str | None]
    images: list[ImageRef | None]
    metadata: list[dict | None]
    general_metadata: dict = field(default_factory=dict)

    @property
    def text_nodes(self) -> list[str]:
        return [t for t in self.texts if t is not None]

    @property
    def text(self) -> str:
        """All text nodes joined as adjacent text nodes are merged, so removing an image never changes it."""
        return TEXT_MERGE_SEPARATOR.join(self.text_nodes)

    @property
    def image_positions(self) -> list[int]:
        return [i for i, image in enumerate(self.images) if image is not None]

    def image_url(self, position: int) -> str | None:
        """The URL of the image at `position` (see `node_image_url`)."""
        return node_image_url(self.images[position], self.metadata[position])

    def image_urls(self) -> list[str]:
        return [url for pos in self.image_positions if (url := self.image_url(pos))]

    def without_images(self, drop: Callable[[int], bool]) -> InterleavedDocument:
        """A copy without the image nodes at positions where `drop(position)` holds; texts re-merged."""
        keep = [i for i in range(len(self.texts)) if self.images[i] is None or not drop(i)]
        return InterleavedDocument(
            id=self.id,
            texts=[self.texts[i] for i in keep],
            images=[self.images[i] for i in keep],
            metadata=[self.metadata[i] for i in keep],
            general_metadata=self.general_metadata,
        ).merged_texts()

    def merged_texts(self) -> InterleavedDocument:
        """Adjacent text nodes joined with a blank line, as OBELICS' final processing does."""
        texts: list[str | None] = []
        images: list[ImageRef | None] = []
        metadata: list[dict | None] = []
        for text, image, meta in zip(self.texts, self.images, self.metadata, strict=True):
            if text is not None and texts and texts[-1] is not None:
                texts[-1] = texts[-1] + TEXT_MERGE_SEPARATOR + text
                continue
            texts.append(text)
            images.append(image)
            metadata.append(meta)
        return InterleavedDocument(self.id, texts, images, metadata, self.general_metadata)

    def emptiness_reason(self) -> str | None:
        """`no_image` / `no_text` when the document no longer qualifies as interleaved, else None."""
        if not self.image_positions:
            return "no_image"
        if not any(t.strip() for t in self.text_nodes):
            return "no_text"
        return None

    def to_row(self) -> dict[str, Any]:
        """The OBELICS Hub row: metadata and general_metadata as JSON strings."""
        return {
            "id": self.id,
            "texts": list(self.texts),
            "images": [img if isinstance(img, str) or img is None else None for img in self.images],
            "metadata": json.dumps(self.metadata),
            "general_metadata": json.dumps(self.general_metadata),
        }


def _maybe_json(value: Any, expected: type, name: str) -> Any:
    if isinstance(value, (str, bytes)):
        try:
            value = load_json(value)
        except ValueError as exc:
            raise SampleError("malformed", f"{name} is not valid JSON: {exc}") from None
    if value is None and expected is dict:
        return {}
    if not isinstance(value, expected):
        raise SampleError("malformed", f"{name} must be a {expected.__name__}, got {type(value).__name__}")
    return value


def node_metadata(value: Any) -> list:
    """A row's `metadata`: a list (JSON or decoded), [] when absent; SampleError(`malformed`) otherwise."""
    return [] if value is None else _maybe_json(value, list, "metadata")


def page_metadata(value: Any) -> dict:
    """A row's `general_metadata`: a dict (JSON or decoded), {} when absent; SampleError(`malformed`) otherwise."""
    return _maybe_json(value, dict, "general_metadata")


def _image_ref(value: Any, position: int) -> ImageRef | None:
    if value is None or isinstance(value, (str, bytes)):
        return value
    if isinstance(value, dict):  # the HF Image feature: {"bytes": ..., "path": ...}
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        if value.get("path"):
            return str(value["path"])
        return None
    raise SampleError("malformed", f"image at position {position} has type {type(value).__name__}")


def _text(value: Any, position: int) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise SampleError("bad_encoding", f"text at position {position} is not UTF-8") from None
    raise SampleError("malformed", f"text at position {position} has type {type(value).__name__}")


def document_id(row: dict[str, Any], general_metadata: dict) -> str:
    """A stable id: the row's own `id`, else a hash of the page URL and WARC location, else of the content.

    Never derived from a run or a row number, so the same document gets the same id in every run.
    """
    if row.get("id") not in (None, ""):
        return str(row["id"])
    keys = ("url", "warc_filename", "warc_record_offset")
    if general_metadata.get("url"):
        basis = json.dumps([general_metadata.get(k) for k in keys])
    else:
        basis = json.dumps(
            [row.get("texts"), [i if isinstance(i, str) else None for i in row.get("images") or []]],
            default=str,
        )
    return hashlib.sha1(basis.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def parse_document(row: dict[str, Any]) -> InterleavedDocument:
    """Validate an OBELICS row (Hub strings or decoded lists) into a document; raise SampleError if unusable."""
    texts, images = row.get("texts"), row.get("images")
    if not isinstance(texts, list) or not isinstance(images, list):
        raise SampleError("malformed", "texts and images must be lists")
    if not texts:
        raise SampleError("empty", "document has no nodes")
    metadata = node_metadata(row.get("metadata"))
    general = page_metadata(row.get("general_metadata"))
    if not metadata:
        metadata = [None] * len(texts)
    if not (len(texts) == len(images) == len(metadata)):
        raise SampleError("malformed", f"unequal lengths: texts={len(texts)} images={len(images)} metadata={len(metadata)}")
    doc_texts = [_text(t, i) for i, t in enumerate(texts)]
    doc_images = [_image_ref(im, i) for i, im in enumerate(images)]
    for i, (text, image) in enumerate(zip(doc_texts, doc_images, strict=True)):
        if (text is None) == (image is None):
            both = "both" if text is not None else "neither"
            raise SampleError("malformed", f"position {i} has {both} text and image")
    doc_meta: list[dict | None] = []
    for i, meta in enumerate(metadata):
        if doc_images[i] is None:
            doc_meta.append(None)
        elif meta is None or isinstance(meta, dict):
            doc_meta.append(meta or {})
        else:
            raise SampleError("malformed", f"metadata at position {i} has type {type(meta).__name__}")
    return InterleavedDocument(document_id(row, general), doc_texts, doc_images, doc_meta, general).merged_texts()
