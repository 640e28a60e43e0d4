import json

import pytest

from curation.errors import SampleError
from curation.pdf.text import parse_annotation, transcription_text
from tests.curation.pdf.docs import idl_json, pdfa_json


def test_pdfa_annotation_gives_lines_words_and_corner_boxes():
    lines = [("Hello world", [0.1, 0.2, 0.4, 0.05]), ("Second", [0.1, 0.3, 0.2, 0.05])]
    pages = parse_annotation(pdfa_json([lines, []]))
    assert list(pages) == [0]  # the empty second page falls back to other text sources
    page = pages[0]
    assert page.text == "Hello world\nSecond" and page.source == "annotation"
    assert [(s.text, s.box) for s in page.lines] == [
        ("Hello world", (0.1, 0.2, 0.5, 0.25)),
        ("Second", (0.1, 0.3, 0.3, 0.35)),
    ]
    assert [w.text for w in page.words] == ["Hello", "world", "Second"]
    assert page.words[1].box == pytest.approx((0.3, 0.2, 0.48, 0.25))


def test_idl_annotation_is_the_flat_form():
    pages = parse_annotation(idl_json([[("Line one", [0.0, 0.0, 0.5, 0.1])], [("Line two", [0.5, 0.9, 0.7, 0.2])]]))
    assert pages[0].text == "Line one" and pages[0].words == []
    assert pages[1].lines[0].box == (0.5, 0.9, 1.0, 1.0)  # clamped to the page


def test_malformed_boxes_keep_the_text_but_not_the_box():
    payload = json.dumps({"pages": [{"text": ["a", "b", "c"], "bbox": [[0, 0, 1], "x"]}]}).encode()
    page = parse_annotation(payload)[0]
    assert page.text == "a\nb\nc" and page.lines == []


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b'{"pages": 3}', b'{"pages": ["x"]}'])
def test_unreadable_annotations_are_bad_annotation(payload):
    with pytest.raises(SampleError) as raised:
        parse_annotation(payload)
    assert raised.value.reason == "bad_annotation"


def test_single_image_json_and_transcriptions():
    assert parse_annotation(b'{"text": "one\\ntwo"}')[0].text == "one\ntwo"
    assert parse_annotation(b'{"caption": "no text here"}') == {}
    assert transcription_text("\nfirst  \nsecond\n").text == "first\nsecond"
