"""The image URLs of an OBELICS partition, for the opt-out check, read column by column.

The opt-out check needs every image URL of every parseable row, before any cleaning. Parsing whole rows
for that turns every text into Python strings; the texts are most of a partition's bytes and play no part
in its URLs. So the column path applies `parse_document`'s rules in two steps:

- the node lists, vectorised over a batch: `texts` and `images` are lists, not empty, of one length,
  and at every position exactly one of them is null (read from the Arrow validity bitmaps; no text is
  turned into a Python value);
- the metadata, per row, with the parser's own `node_metadata` / `page_metadata`: valid JSON of the right
  type, one entry per node, a dict (or null) at every image node.

A row that passes both parses, and its URLs are taken as `InterleavedDocument.image_urls` takes them
(`node_image_url`: metadata `src`, else the image string), so the list equals the whole-row parse's (`parsed_image_urls`).
Image bytes (a `list<binary>` column) are never copied out: only their presence matters, the URL of
such a node is its `src`. Inputs with other `texts` or `images` types (bytes texts must be checked as
UTF-8; the HF Image struct's `path` can be the URL) take the whole-row parse. A row group damaged only in
a column not read here gives its URLs anyway; the cleaning pass ledgers those rows, so their answers go
unused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.documents import node_image_url, node_metadata, page_metadata, parse_document
from curation.errors import SampleError
from curation.readers import UnreadableRows, input_schema, iter_batches_checked, iter_rows_checked
from curation.storage import StoragePath

COLUMNS = ["texts", "images", "metadata", "general_metadata"]


def _urls_of(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        try:
            doc = parse_document(row)
        except SampleError:
            continue  # ledgered by the cleaning pass
        yield from doc.image_urls()


def parsed_image_urls(path: StoragePath) -> list[str]:
    """All image URLs of a partition's parseable rows, each row parsed whole (any input schema).

    Raises UnreadableInputError for a file that cannot be read at all.
    """
    return list(_urls_of(row for row in iter_rows_checked(path) if not isinstance(row, UnreadableRows)))


def _list_of(schema: pa.Schema, name: str, *kinds: Callable[[pa.DataType], bool]) -> bool:
    """Whether column `name` is a list (or large list) whose values are of one of `kinds`."""
    if name not in schema.names:
        return False
    kind = schema.field(name).type
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind)
    return is_list and any(check(kind.value_type) for check in kinds)


def _well_formed(texts: pa.Array, images: pa.Array) -> np.ndarray:
    """Rows whose node lists `parse_document` accepts: both lists, not empty, of one length, and at every
    position exactly one of text and image set (a vectorised check over the validity bitmaps)."""
    lengths = pc.list_value_length(texts)
    ok = pc.and_(pc.greater(lengths, 0), pc.equal(lengths, pc.list_value_length(images)))
    ok = pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(ok)
    chosen = pa.array(rows, pa.int64())
    texts, images = texts.take(chosen), images.take(chosen)
    one_of_two = pc.xor(pc.is_null(pc.list_flatten(texts)), pc.is_null(pc.list_flatten(images)))
    parents = pc.list_parent_indices(texts).to_numpy()
    ok[rows[np.unique(parents[~one_of_two.to_numpy(zero_copy_only=False)])]] = False
    return ok


def _image_values(images: pa.Array) -> list[list[Any] | None]:
    """The `images` column as Python lists; image bytes become b"" (their presence is all that matters)."""
    if not (pa.types.is_binary(images.type.value_type) or pa.types.is_large_binary(images.type.value_type)):
        return images.to_pylist()
    lengths = pc.fill_null(pc.list_value_length(images), 0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    flat = pc.list_flatten(images)
    nodes = pc.if_else(pc.is_valid(flat), pa.scalar(b"", pa.binary()), pa.scalar(None, pa.binary()))
    return pa.LargeListArray.from_arrays(pa.array(offsets), nodes, mask=pc.is_null(images)).to_pylist()


def _row_urls(images: list[Any], metadata: Any, general: Any) -> list[str] | None:
    """The URLs of one row with well-formed node lists, as its parsed document gives them; None when
    `parse_document` would refuse the row for its metadata."""
    try:
        nodes = node_metadata(metadata)
        page_metadata(general)
    except SampleError:
        return None
    if nodes and len(nodes) != len(images):
        return None
    urls = []
    for position, image in enumerate(images):
        if image is None:
            continue
        meta = nodes[position] if nodes else None
        if meta is not None and not isinstance(meta, dict):
            return None
        if url := node_image_url(image, meta):
            urls.append(url)
    return urls


def _batch_urls(batch: pa.RecordBatch) -> Iterator[str]:
    names = batch.schema.names
    ok = _well_formed(batch.column("texts"), batch.column("images"))
    rows = pa.array(np.flatnonzero(ok), pa.int64())
    images = _image_values(batch.column("images").take(rows))
    absent = [None] * len(rows)
    metadata = batch.column("metadata").take(rows).to_pylist() if "metadata" in names else absent
    general = batch.column("general_metadata").take(rows).to_pylist() if "general_metadata" in names else absent
    for nodes, meta, page in zip(images, metadata, general, strict=True):
        yield from _row_urls(nodes or [], meta, page) or ()  # `nodes` is a list: the row is well-formed


def partition_image_urls(path: StoragePath) -> list[str]:
    """All image URLs of a partition's parseable rows, in row order: the same list as `parsed_image_urls`.

    Raises UnreadableInputError for a file that cannot be read at all.
    """
    schema = input_schema(path)
    strings = (pa.types.is_string, pa.types.is_large_string)
    image_bytes = _list_of(schema, "images", pa.types.is_binary, pa.types.is_large_binary)
    if not (_list_of(schema, "texts", *strings) and (image_bytes or _list_of(schema, "images", *strings))):
        return parsed_image_urls(path)
    urls: list[str] = []
    for batch in iter_batches_checked(path, COLUMNS):
        if not isinstance(batch, UnreadableRows):
            urls.extend(_batch_urls(batch))
    return urls
