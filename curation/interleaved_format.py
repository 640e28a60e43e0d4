"""How an interleaved document is stored in a WebDataset sample (see docs/formats.md).

    <key>.json       {"id", "texts", "images", "metadata", "general_metadata"}; `images[i]` is the image
                     URL (or null) and `texts[i]` the text (or null), as in the OBELICS release
    <key>.<i>.<ext>  the encoded bytes of the image at position i, when the input carried bytes
"""

from __future__ import annotations

import json
from typing import Any

from curation.documents import InterleavedDocument
from curation.images import image_extension
from curation.shards import safe_key


def document_to_sample(doc: InterleavedDocument) -> dict[str, Any]:
    sample: dict[str, Any] = {"__key__": safe_key(doc.id)}
    image_refs: list[str | None] = []
    for position, image in enumerate(doc.images):
        if isinstance(image, bytes):
            sample[f"{position}.{image_extension(image)}"] = image
            image_refs.append(doc.image_url(position))
        else:
            image_refs.append(image)
    record = {
        "id": doc.id,
        "texts": doc.texts,
        "images": image_refs,
        "metadata": doc.metadata,
        "general_metadata": doc.general_metadata,
    }
    sample["json"] = json.dumps(record, ensure_ascii=False).encode("utf-8")
    return sample


def sample_to_document(sample: dict[str, Any]) -> InterleavedDocument:
    record = json.loads(sample["json"])
    images: list[str | bytes | None] = list(record["images"])
    for name, payload in sample.items():
        position, dot, _ = name.partition(".")
        if dot and position.isdigit():
            images[int(position)] = payload
    return InterleavedDocument(record["id"], record["texts"], images, record["metadata"], record["general_metadata"])
