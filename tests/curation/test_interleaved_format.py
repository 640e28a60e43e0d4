import json

import pytest

from curation.documents import InterleavedDocument
from curation.errors import SampleError
from curation.image_tar import pack_images, unpack_images
from curation.interleaved_format import document_to_sample, sample_to_document

PNG = b"\x89PNG\r\n\x1a\nimage-one"
JPEG = b"\xff\xd8\xffimage-two"


def document() -> InterleavedDocument:
    return InterleavedDocument(
        "doc/1",
        texts=["Intro.", None, "Middle.", None, None],
        images=[None, PNG, None, "https://img.example/2.jpg", JPEG],
        metadata=[None, {"src": "https://img.example/1.png", "alt_text": "one"}, None, {"src": "https://img.example/2.jpg"}, {}],
        general_metadata={"url": "https://page.example/1", "warc_record_offset": 7},
    )


def test_a_document_is_json_in_the_hub_schema_plus_one_images_tar():
    sample = document_to_sample(document())
    assert sorted(sample) == ["__key__", "images.tar", "json"] and sample["__key__"].startswith("doc_1_")  # "doc/1" has an unsafe "/"
    record = json.loads(sample["json"])
    assert record == {
        "id": "doc/1",
        "texts": ["Intro.", None, "Middle.", None, None],
        "images": [None, "https://img.example/1.png", None, "https://img.example/2.jpg", None],
        "metadata": json.dumps(document().metadata),
        "general_metadata": json.dumps(document().general_metadata),
    }
    assert unpack_images(sample["images.tar"]) == {1: PNG, 4: JPEG}


def test_round_trip():
    assert sample_to_document(document_to_sample(document())) == document()


def test_a_url_only_document_has_an_empty_images_tar():
    doc = InterleavedDocument("d", ["t", None], [None, "https://img.example/x"], [None, {"src": "https://img.example/x"}], {})
    sample = document_to_sample(doc)
    assert unpack_images(sample["images.tar"]) == {} and sample_to_document(sample) == doc


def test_shards_of_the_earlier_layout_still_read():
    doc = document()
    record = {
        "id": doc.id,
        "texts": doc.texts,
        "images": [None, "https://img.example/1.png", None, doc.images[3], None],
        "metadata": doc.metadata,
        "general_metadata": doc.general_metadata,
    }
    old = {"__key__": "doc_1", "json": json.dumps(record).encode(), "1.png": PNG, "4.jpg": JPEG}
    assert sample_to_document(old) == doc


@pytest.mark.parametrize("position", [0, 9])
def test_an_image_outside_the_image_nodes_is_malformed(position):
    sample = document_to_sample(document())
    sample["images.tar"] = pack_images([(position, PNG)])
    with pytest.raises(SampleError, match="position"):
        sample_to_document(sample)
