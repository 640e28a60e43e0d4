"""Built-in adapters on rows in the real source layouts, declarative YAML mappings, passthrough."""

import io

import pytest
from PIL import Image

from cauldron.adapters import (
    BUILTIN_ADAPTERS,
    adapt_row,
    adapters_from_yaml,
    get_adapter,
    shipped_adapters,
)
from cauldron.registry import load_registry
from curation.errors import SampleError

from .conftest import encode, make_photo

PNG = encode(make_photo(1))
PNG2 = encode(make_photo(2))


def convert(name, row, key=7):
    return get_adapter(name)(row, key=key, seed=0)


def single_turn(row):
    assert len(row["texts"]) == 1
    return row["texts"][0]


def test_vqav2_layout():
    raw = {
        "question_type": "what color",
        "multiple_choice_answer": "white",
        "question": "what color is the cat?",
        "answers": [
            {"answer": a, "answer_confidence": "yes", "answer_id": i} for i, a in enumerate(["white", "white", "grey", "white"], 1)
        ],
        "image_id": 9,
        "answer_type": "other",
        "question_id": 90,
        "image": {"bytes": PNG, "path": None},
    }
    row = convert("vqav2", raw)
    assert row["images"] == [PNG]
    turn = single_turn(row)
    assert turn["user"].startswith("What color is the cat?\n") and turn["assistant"] == "White."
    assert turn["source"] == "vqav2"


def test_textvqa_and_docvqa_layouts():
    textvqa = {
        "image_id": "x",
        "question_id": 1,
        "question": "what brand is this?",
        "answers": ["nokia"] * 6 + ["NOKIA"] * 4,
        "image": Image.open(io.BytesIO(PNG)),
        "ocr_tokens": ["NOKIA"],
        "set_name": "train",
    }
    row = convert("textvqa", textvqa)
    assert single_turn(row)["assistant"] == "nokia"
    assert Image.open(io.BytesIO(row["images"][0])).size == (128, 96)
    docvqa = {
        "questionId": 3,
        "question": "What is the date?",
        "question_types": ["form"],
        "docId": 4,
        "ucsf_document_id": "abc",
        "ucsf_document_page_no": "1",
        "answers": ["May 5, 1999"],
        "image": PNG,
    }
    assert single_turn(convert("docvqa", docvqa))["assistant"] == "May 5, 1999"


def test_chartqa_ai2d_scienceqa_layouts():
    chart = convert("chartqa", {"image": PNG, "query": "Which year is highest?", "label": ["2019"], "human_or_machine": 0})
    assert single_turn(chart)["assistant"] == "2019"
    ai2d = convert("ai2d", {"question": "What eats grass?", "options": ["fox", "rabbit", "hawk", "sun"], "answer": "1", "image": PNG})
    assert single_turn(ai2d)["assistant"] == "Answer: B"
    assert "\nB. rabbit\n" in single_turn(ai2d)["user"]
    science = {
        "image": PNG,
        "question": "Which is a mammal?",
        "choices": ["frog", "whale"],
        "answer": 1,
        "hint": "Mammals feed milk.",
        "task": "closed choice",
        "lecture": "...",
        "solution": "...",
    }
    turn = single_turn(convert("scienceqa", science))
    assert turn["user"].startswith("Context: Mammals feed milk.\nQuestion: Which is a mammal?")
    assert turn["assistant"] == "Answer: B"
    with pytest.raises(SampleError) as rejected:
        convert("scienceqa", {**science, "image": None})
    assert rejected.value.reason == "no_image"


def test_ocrvqa_makes_one_turn_per_question():
    raw = {
        "image": PNG,
        "image_id": "1",
        "questions": ["Who wrote this book?", "Is this a cookbook?"],
        "answers": ["Jane Doe", "No"],
        "title": "T",
        "genre": "G",
    }
    row = convert("ocrvqa", raw)
    assert [t["assistant"] for t in row["texts"]] == ["Jane Doe", "No"]
    assert len(row["images"]) == 1


def test_textcaps_localized_narratives_websight():
    caps = convert("textcaps", {"image": PNG, "caption_str": ["a sign says OPEN", "an OPEN sign"], "image_id": "i"})
    assert single_turn(caps)["assistant"] in {"A sign says OPEN.", "An OPEN sign."}
    narrative = convert(
        "localized_narratives",
        {"dataset_id": "coco", "image_id": "1", "annotator_id": 3, "caption": "in this image we can see a dog", "image": PNG},
    )
    assert single_turn(narrative)["assistant"] == "In this image we can see a dog."
    site = convert("websight", {"image": PNG, "text": "<html><body>x</body></html>", "llm_generated_idea": "a page"})
    assert single_turn(site)["assistant"] == "<html><body>x</body></html>"
    assert "HTML" in single_turn(site)["user"]


def test_nlvr2_keeps_two_images_in_order():
    row = convert(
        "nlvr2", {"sentence": "there are two dogs", "label": "False", "identifier": "dev-1", "left_image": PNG, "right_image": PNG2}
    )
    assert row["images"] == [PNG, PNG2]
    assert single_turn(row)["assistant"] == "No."


def test_openhermes_sharegpt_is_text_only():
    raw = {
        "conversations": [{"from": "human", "value": "Name a prime.", "weight": None}, {"from": "gpt", "value": "7", "weight": None}],
        "source": "glaive",
    }
    row = convert("openhermes", raw)
    assert row == {"images": [], "texts": [{"user": "Name a prime.", "assistant": "7", "source": "openhermes"}]}


def test_adapters_are_deterministic_per_key_and_seed():
    raw = {"question": "what is it?", "answers": ["a"], "image": PNG}
    adapter = get_adapter("textvqa")
    assert adapter(raw, key=1) == adapter(raw, key=1)
    users = {adapter(raw, key=k)["texts"][0]["user"] for k in range(20)}
    assert len(users) > 1  # the brevity hint varies across rows


def test_cauldron_rows_pass_through_with_their_sources():
    row = {"images": [{"bytes": PNG, "path": None}], "texts": [{"user": "u", "assistant": "a", "source": "chart2text-pew"}]}
    expected = {"images": [PNG], "texts": [{"user": "u", "assistant": "a", "source": "chart2text-pew"}]}
    assert get_adapter("cauldron")(row, key=0) == expected
    assert adapt_row(get_adapter("vqav2"), row, key=0) == expected
    with pytest.raises(SampleError):
        get_adapter("cauldron")({"question": "q"}, key=0)


def test_declarative_mapping_single_and_zipped_turns():
    adapters = adapters_from_yaml("""
adapters:
  my_vqa:
    family: short_vqa
    images: [image]
    fields: {question: q, answers: annotations.answer}
  my_book:
    family: document_vqa
    images: [pages]
    fields: {question: qs, answers: ans}
    zip: [question, answers]
  my_captions:
    family: captioning
    images: [image]
    fields: {caption: text}
    options: {prompts: ["Describe it."]}
""")
    answers = [{"answer": "yes"}, {"answer": "yes"}, {"answer": "no"}]
    row = adapters["my_vqa"]({"q": "is it day?", "annotations": answers, "image": PNG}, key=0)
    assert row["texts"][0]["assistant"] == "Yes." and row["texts"][0]["source"] == "my_vqa"
    book = adapters["my_book"]({"pages": [PNG, PNG2], "qs": ["a?", "b?"], "ans": ["x", "y"]}, key=0)
    assert book["images"] == [PNG, PNG2] and [t["assistant"] for t in book["texts"]] == ["x", "y"]
    caption = adapters["my_captions"]({"image": PNG, "text": "a cat"}, key=0)
    assert caption["texts"][0] == {"user": "Describe it.", "assistant": "A cat.", "source": "my_captions"}
    with pytest.raises(SampleError) as rejected:
        adapters["my_vqa"]({"q": "is it day?", "image": PNG}, key=0)
    assert rejected.value.reason == "missing_field"


def test_declarative_mapping_is_validated():
    with pytest.raises(ValueError, match="family"):
        adapters_from_yaml("adapters: {bad: {family: nope, fields: {}}}")
    with pytest.raises(ValueError, match="missing"):
        adapters_from_yaml("adapters: {bad: {family: short_vqa, fields: {question: q}}}")


def test_shipped_text_only_mappings():
    dolly = get_adapter("dolly")(
        {"instruction": "Summarise.", "context": "Text.", "response": "Short.", "category": "summarization"}, key=0
    )
    assert dolly["texts"] == [{"user": "Summarise.\n\nText.", "assistant": "Short.", "source": "dolly"}]
    lima = get_adapter("lima")({"conversations": ["Hi", "Hello", "Bye"], "source": "x"}, key=0)
    assert lima["texts"] == [{"user": "Hi", "assistant": "Hello", "source": "lima"}]


def test_registry_adapters_exist_and_agree_on_family():
    known = {**BUILTIN_ADAPTERS, **shipped_adapters()}
    for info in load_registry():
        if info.adapter is None:
            continue
        adapter = known[info.adapter]
        assert adapter.family in {info.family, "cauldron"}, info.name


def reason(name, row):
    with pytest.raises(SampleError) as rejected:
        convert(name, row)
    return rejected.value.reason


def test_unusable_images_are_rejected_with_a_reason():
    assert reason("chartqa", {"image": {"bytes": None, "path": "charts/1.png"}, "query": "q", "label": ["1"]}) == "bad_image"
    with pytest.raises(ValueError, match="prompt list"):
        adapters_from_yaml("adapters: {x: {family: captioning, fields: {caption: c}, options: {prompts: nope}}}")


def test_nulls_are_refused_never_rendered():
    vqa = {"question": "what is it?", "answers": None, "multiple_choice_answer": None, "image": PNG}
    assert reason("vqav2", vqa) == "null_field"  # VQAv2 test and test-dev rows
    assert reason("vqav2", {**vqa, "question": None, "answers": ["a"]}) == "null_field"
    assert convert("vqav2", {**vqa, "answers": [{"answer": None}, {"answer": "cat"}]})["texts"][0]["assistant"] == "Cat."
    assert reason("textvqa", {"question": "q?", "answers": [], "image": PNG}) == "no_answer"
    assert reason("dolly", {"instruction": None, "response": "r"}) == "null_field"
    assert reason("openhermes", {"conversations": [{"from": "human", "value": None}, {"from": "gpt", "value": "7"}]}) == "null_field"
    assert reason("cauldron", {"images": [PNG], "texts": [{"user": None, "assistant": "a", "source": "s"}]}) == "null_field"
    assert reason("scienceqa", {"image": PNG, "question": "q", "choices": ["a", None], "answer": 0}) == "null_field"


def test_nlvr2_labels_are_words_an_integer_without_names_is_ambiguous():
    row = {"sentence": "two dogs", "left_image": PNG, "right_image": PNG2}
    assert single_turn(convert("nlvr2", {**row, "label": "True"}))["assistant"] == "Yes."
    assert single_turn(convert("nlvr2", {**row, "label": "false"}))["assistant"] == "No."
    assert reason("nlvr2", {**row, "label": 0}) == "ambiguous_label"
    urls = {"sentence": "s", "left_url": "http://x/l.png", "right_url": "http://x/r.png", "label": "True"}
    assert get_adapter("nlvr2").urls(urls) == ["http://x/l.png", "http://x/r.png"]


def test_release_layouts_name_their_image_files():
    seen = []

    def resolve(value):
        seen.append(value)
        return PNG

    chart = get_adapter("chartqa")({"imgname": "41.png", "query": "Which year?", "label": "2019"}, key=0, resolve=resolve)
    assert single_turn(chart)["assistant"] == "2019"
    ai2d = {
        "imageName": "7.png",
        "questions": {
            "What eats grass?": {"abcLabel": False, "answerTexts": ["fox", "rabbit"], "correctAnswer": 1, "questionId": "7.png-0"},
            "Which label is the sun?": {"abcLabel": True, "answerTexts": ["A", "B"], "correctAnswer": 0, "questionId": "7.png-1"},
        },
    }
    row = get_adapter("ai2d")(ai2d, key=0, resolve=resolve)
    assert [t["assistant"] for t in row["texts"]] == ["Answer: B"]  # the letter-label question is left out
    assert seen == ["png/41.png", "images/7.png"]
    eval_ids = get_adapter("ai2d").eval_ids
    assert eval_ids is not None and eval_ids.key(ai2d) == "7"
