import json

import pytest

from curation.documents import InterleavedDocument, parse_document
from curation.errors import SampleError


def hub_row(**overrides):
    row = {
        "texts": [None, "first", None, "second"],
        "images": ["https://a.example/1.jpg", None, "https://b.example/2.jpg", None],
        "metadata": json.dumps([{"src": "https://a.example/1.jpg"}, None, {"src": "https://b.example/2.jpg"}, None]),
        "general_metadata": json.dumps({"url": "https://page.example/", "warc_filename": "w", "warc_record_offset": 7}),
    }
    row.update(overrides)
    return row


def test_parses_hub_row_with_json_strings_and_stable_id():
    doc = parse_document(hub_row())
    assert doc.texts == [None, "first", None, "second"]
    assert doc.image_urls() == ["https://a.example/1.jpg", "https://b.example/2.jpg"]
    assert doc.general_metadata["url"] == "https://page.example/"
    assert doc.id == parse_document(hub_row()).id
    assert doc.id != parse_document(hub_row(general_metadata=json.dumps({"url": "https://other.example/"}))).id


def test_accepts_decoded_lists_and_hf_image_dicts():
    row = hub_row(
        metadata=[{"src": "u"}, None], general_metadata={"url": "p"}, texts=[None, "t"], images=[{"bytes": b"\x89PNG", "path": None}, None]
    )
    doc = parse_document(row)
    assert doc.images[0] == b"\x89PNG"
    assert doc.image_url(0) == "u"


def test_adjacent_text_nodes_are_merged_on_parse():
    doc = parse_document(hub_row(texts=["a", "b", None], images=[None, None, "u"], metadata=json.dumps([None, None, {"src": "u"}])))
    assert doc.texts == ["a\n\nb", None]


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"texts": ["a"], "images": [None, None]}, "malformed"),
        ({"texts": ["a", None], "images": ["u", None], "metadata": None}, "malformed"),  # both set at 0, neither at 1
        ({"metadata": "{oops"}, "malformed"),
        ({"texts": "not a list"}, "malformed"),
        ({"texts": [], "images": [], "metadata": "[]"}, "empty"),
        ({"texts": [None, b"\xff\xfe"], "images": ["u", None], "metadata": None}, "bad_encoding"),
        ({"texts": [None, 5], "images": ["u", None], "metadata": None}, "malformed"),
    ],
)
def test_bad_rows_raise_sample_errors_with_reasons(overrides, reason):
    with pytest.raises(SampleError) as info:
        parse_document(hub_row(**overrides))
    assert info.value.reason == reason


def test_removing_an_image_removes_slot_and_metadata_and_merges_texts():
    doc = InterleavedDocument(
        "d",
        texts=["intro", None, "middle", None, "end"],
        images=[None, "u1", None, "u2", None],
        metadata=[None, {"src": "u1"}, None, {"src": "u2"}, None],
    )
    cleaned = doc.without_images(lambda pos: doc.image_url(pos) == "u1")
    assert cleaned.texts == ["intro\n\nmiddle", None, "end"]
    assert cleaned.images == [None, "u2", None]
    assert cleaned.metadata == [None, {"src": "u2"}, None]
    assert cleaned.emptiness_reason() is None
    assert cleaned.without_images(lambda pos: True).emptiness_reason() == "no_image"


def test_to_row_round_trips():
    doc = parse_document(hub_row())
    again = parse_document(doc.to_row())
    assert (again.id, again.texts, again.images, again.metadata) == (doc.id, doc.texts, doc.images, doc.metadata)
