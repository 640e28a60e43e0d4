"""What each kind of shard sample holds, as the trainer reads it.

    interleaved  OBELICS documents (`curation/interleaved_format.py`): `<key>.json` + `<key>.images.tar`
                 with the image bytes by node position. An image stored only as a URL fails the run
                 (UrlOnlyImagesError) unless the source says `url_images: skip`, which leaves it out and
                 counts it.
    pairs        image-text pairs (`curation/pairs/samples.py`): one image member + `<key>.txt` caption.
    pdf          PDF pages (`curation/pdf/pages.py`): the page image + `<key>.txt` page text.
    sft          Cauldron conversations (`cauldron/sft_shards.py`): `<key>.json` with the turns +
                 `<key>.images.tar`; read with `cauldron.sft_shards.sample_to_row`.

Shards of the earlier layout (one `<key>.<i>.<ext>` member per image) read the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cauldron.sft_shards import IMAGE_EXTENSIONS
from curation.errors import SampleError, UserError
from curation.interleaved_format import sample_to_document


class UrlOnlyImagesError(UserError):
    """A training shard holds image nodes without bytes: a whole source would silently train on text alone."""


class UnusableSourceError(UserError):
    """A reader went through a whole epoch of a source without one usable sample: it would loop forever."""


def interleaved_nodes(sample: Mapping[str, Any], source: str = "", skip_url_images: bool = False) -> tuple[list[str | bytes], int]:
    """The document's text and image-bytes nodes in order, and how many URL-only images were left out.

    A URL-only image raises UrlOnlyImagesError naming the shard and the fix, unless `skip_url_images`.
    """
    try:
        document = sample_to_document(dict(sample))
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as error:
        raise SampleError("malformed", f"not an interleaved document: {error}") from None
    nodes: list[str | bytes] = []
    url_only = 0
    for text, image in zip(document.texts, document.images, strict=True):
        if isinstance(image, bytes):
            nodes.append(image)
        elif isinstance(image, str):
            url_only += 1
        elif text:
            nodes.append(text)
    if url_only and not skip_url_images:
        raise UrlOnlyImagesError(
            f"{sample.get('__url__', 'a shard')}: document {sample.get('__key__', '?')} has {url_only} image(s) stored "
            f"only as URLs; run `curate obelics --images download` to fetch them, or set `url_images: skip` on "
            f"source {source!r} to train without them"
        )
    return nodes, url_only


def single_image_nodes(sample: Mapping[str, Any]) -> list[str | bytes]:
    """[image, text] of a pair or a PDF page sample."""
    images = [ext for ext in sample if ext in IMAGE_EXTENSIONS]
    if len(images) != 1 or "txt" not in sample:
        raise SampleError("malformed", f"expected one image member and .txt, got {sorted(k for k in sample)}")
    try:
        text = sample["txt"].decode("utf-8")
    except UnicodeDecodeError:
        raise SampleError("malformed", "caption is not UTF-8") from None
    return [sample[images[0]], text]
