"""How an interleaved document is stored in a WebDataset sample (see docs/formats.md).

    <key>.json        the document in the OBELICS release's row schema: {"id", "texts", "images",
                      "metadata", "general_metadata"}; `texts[i]` is the text or null, `images[i]` the
                      image's URL or null, `metadata` and `general_metadata` are JSON strings
    <key>.images.tar  the encoded bytes of every image the document carries, as `<position>.<ext>`
                      (`curation/image_tar.py`); an empty tar when its images are URLs only

Every sample has exactly these two members, and the JSON's types never depend on the document (free-form
metadata is a string, as on the Hub), so `datasets` and Ray Data load every document and every image.

Shards written before this layout (`<key>.<position>.<ext>` image members, metadata as JSON values)
still read back.
"""

from __future__ import annotations

import json
from typing import Any

from curation.documents import InterleavedDocument
from curation.errors import SampleError
from curation.image_tar import IMAGES_MEMBER, pack_images, unpack_images
from curation.shards import sample_key


def document_record(doc: InterleavedDocument) -> dict[str, Any]:
    """The document as an OBELICS release row: image nodes as their URLs (bytes travel apart), metadata
    as JSON strings."""
    return {
        "id": doc.id,
        "texts": doc.texts,
        "images": [None if image is None else doc.image_url(position) for position, image in enumerate(doc.images)],
        "metadata": json.dumps(doc.metadata, ensure_ascii=False),
        "general_metadata": json.dumps(doc.general_metadata, ensure_ascii=False),
    }


def document_to_sample(doc: InterleavedDocument) -> dict[str, Any]:
    images = [(position, image) for position, image in enumerate(doc.images) if isinstance(image, bytes)]
    record = document_record(doc)
    return {
        "__key__": sample_key(doc.id),
        "json": json.dumps(record, ensure_ascii=False).encode("utf-8"),
        IMAGES_MEMBER: pack_images(images),
    }


def _json_field(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _legacy_images(sample: dict[str, Any]) -> dict[int, bytes]:
    images = {}
    for name, payload in sample.items():
        position, dot, _ = name.partition(".")
        if dot and position.isdigit():
            images[int(position)] = payload
    return images


def sample_to_document(sample: dict[str, Any]) -> InterleavedDocument:
    """The document of a shard sample; SampleError(`malformed`) when its images do not fit its nodes."""
    record = json.loads(sample["json"])
    images: list[str | bytes | None] = list(record["images"])
    packed = unpack_images(sample[IMAGES_MEMBER]) if IMAGES_MEMBER in sample else _legacy_images(sample)
    texts = record["texts"]
    metadata = _json_field(record["metadata"])
    if not (isinstance(texts, list) and isinstance(metadata, list) and len(texts) == len(images) == len(metadata)):
        raise SampleError("malformed", "texts, images and metadata are not lists of one length")
    for position, data in packed.items():
        if position >= len(images) or texts[position] is not None:
            raise SampleError("malformed", f"image at position {position}, which is not an image node")
        images[position] = data
    return InterleavedDocument(record["id"], texts, images, metadata, _json_field(record["general_metadata"]))
