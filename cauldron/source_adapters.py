"""Built-in adapters: the layouts in which the sources of The Cauldron are published.

Each function reads one raw row of its source as published on the Hub (parquet, `save_to_disk`) or in
its original release files, with the types its `datasets.Features` give it; `cauldron/data/registry.yaml`
says which Hub id and split each reads, and tests build rows with exactly those features. Rows already
in the_cauldron schema pass through (`cauldron`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from cauldron import templates
from cauldron.adapter_types import (
    Adapter,
    Converted,
    EvalIds,
    choices_list,
    first,
    image_of,
    parse_index,
    required,
    strict_bool,
    text,
    texts,
)
from cauldron.templates import PROMPT_LISTS
from curation.errors import SampleError

DATA_FILES = ("*.parquet", "*.arrow", "*.jsonl", "*.jsonl.gz")


def _vqav2(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # HuggingFaceM4/VQAv2: answers = [{answer, answer_confidence, answer_id}] x 10; both null in test splits
    raw = row.get("answers")
    if raw is not None and not isinstance(raw, list):
        raise SampleError("bad_value", f"answers is a {type(raw).__name__}, not a list")
    answers = [item.get("answer") if isinstance(item, Mapping) else item for item in raw or []]
    answers = [str(a) for a in answers if isinstance(a, (str, int, float)) and not isinstance(a, bool) and str(a).strip()]
    if not answers:
        if row.get("multiple_choice_answer") is None:
            raise SampleError("null_field", "answers and multiple_choice_answer are both null (a test split row?)")
        answers = [text(row, "multiple_choice_answer")]
    return [image_of(row, "image")], [templates.short_answer_vqa(text(row, "question"), answers, rng)]


def _ocr_question(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # facebook/textvqa (answers: 10 strings, [] in test) and the DocVQA layouts (answers: strings)
    return [image_of(row, "image")], [templates.document_vqa(text(row, "question"), texts(row, "answers"), rng)]


def _chartqa(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # HuggingFaceM4/ChartQA: image, query, label (a list with one string), human_or_machine (ClassLabel);
    # the release's train_*.json: imgname, query, label (a string), the image in png/
    image = row["image"] if row.get("image") is not None else f"png/{text(row, 'imgname')}"
    return [image], [templates.chart_table_qa(text(row, "query"), first(required(row, "label")), rng)]


def _ai2d(row: Mapping[str, Any], rng: random.Random) -> Converted:
    if "imageName" in row:
        return _ai2d_release(row, rng)
    # lmms-lab/ai2d layout: question, options, answer (an index as a digit string), image
    pair = templates.multiple_choice(
        text(row, "question"), choices_list(required(row, "options"), "options"), parse_index(row.get("answer")), rng
    )
    return [image_of(row, "image")], [pair]


def _ai2d_release(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # ai2d-all.zip, questions/<n>.png.json: {imageName, questions: {text: {answerTexts, correctAnswer, abcLabel}}}.
    # Questions about the diagram's letter labels (abcLabel) are left out, as in the_cauldron.
    questions = required(row, "questions")
    if not isinstance(questions, Mapping):
        raise SampleError("bad_value", "questions is not an object")
    pairs = [
        templates.multiple_choice(
            question, choices_list(spec.get("answerTexts"), "answerTexts"), parse_index(spec.get("correctAnswer")), rng
        )
        for question, spec in questions.items()
        if isinstance(spec, Mapping) and not spec.get("abcLabel")
    ]
    return [f"images/{text(row, 'imageName')}"], pairs


def _ai2d_id(row: Mapping[str, Any]) -> str | None:
    name = row.get("imageName")
    return PurePosixPath(name).stem if isinstance(name, str) else None


def _scienceqa(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # derek-thomas/ScienceQA: image (None for text-only questions), question, choices, answer (int8), hint
    image = image_of(row, "image")
    pair = templates.multiple_choice(
        text(row, "question"),
        choices_list(required(row, "choices"), "choices"),
        int(required(row, "answer")),
        rng,
        context=row.get("hint") or None,
    )
    return [image], [pair]


def _ocrvqa(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # howard-hou/OCR-VQA: one book cover, parallel lists `questions` and `answers`
    questions, answers = list(required(row, "questions")), list(required(row, "answers"))
    if len(questions) != len(answers):
        raise SampleError("bad_value", "questions and answers differ in length")
    pairs = [
        templates.document_vqa(question, [answer], rng)
        for question, answer in zip(questions, answers, strict=True)
        if question is not None and answer is not None
    ]
    return [image_of(row, "image")], pairs


def _textcaps(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # HuggingFaceM4/TextCaps: reference_strs (the reference captions; null in test); lmms-lab/TextCaps also
    # has caption_str (one caption). The_cauldron drew one of the references.
    captions = texts(row, "reference_strs" if row.get("reference_strs") is not None else "caption_str")
    return [image_of(row, "image")], [templates.captioning(rng.choice(captions), PROMPT_LISTS["textcaps"], rng)]


def _localized_narratives(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # HuggingFaceM4/LocalizedNarratives: dataset_id, image_id, annotator_id, caption, original_caption,
    # image_url (no image bytes). The release's JSON lines carry no image at all.
    if row.get("image") is None and row.get("image_url") is None:
        raise SampleError(
            "no_image",
            "Localized Narratives annotations name no image: use a copy with an `image` "
            "or `image_url` column (HuggingFaceM4/LocalizedNarratives, with --fetch-images)",
        )
    pair = templates.captioning(text(row, "caption"), PROMPT_LISTS["localized_narratives"], rng)
    return [image_of(row, "image", "image_url")], [pair]


def _nlvr2(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # HuggingFaceM4/NLVR2: sentence, left/right image (Image, or only left_url/right_url), label
    # (ClassLabel names ["True", "False"]: index 0 is True; the reader decodes it to the name)
    if "images" in row and "left_image" not in row and "left_url" not in row:
        images = list(required(row, "images"))
    else:
        images = [image_of(row, "left_image", "left_url"), image_of(row, "right_image", "right_url")]
    if len(images) != 2:
        raise SampleError("bad_value", f"NLVR2 needs two images, got {len(images)}")
    return images, [templates.yes_no(text(row, "sentence"), strict_bool(required(row, "label")), rng)]


def _websight(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # HuggingFaceM4/WebSight: image (screenshot), text (HTML + Tailwind), llm_generated_idea
    return [image_of(row, "image")], [templates.screenshot_to_code(text(row, "text"), rng, "HTML")]


def _sharegpt(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # teknium/OpenHermes-2.5 (openhermes2_5.json): conversations = [{from: system|human|gpt, value, weight}]
    messages = required(row, "conversations")
    if not isinstance(messages, list) or any(not isinstance(m, Mapping) or m.get("value") is None for m in messages):
        raise SampleError("null_field", "a conversation message is null or has no value")
    return [], templates.text_conversation(messages)


AI2D_TEST_IDS = EvalIds("ai2d_test_ids.csv", "https://s3-us-east-2.amazonaws.com/prior-datasets/ai2d_test_ids.csv", _ai2d_id)

BUILTIN_ADAPTERS: dict[str, Adapter] = {
    adapter.name: adapter
    for adapter in (
        Adapter("vqav2", "short_vqa", _vqav2),
        Adapter("textvqa", "document_vqa", _ocr_question),
        Adapter("docvqa", "document_vqa", _ocr_question),
        Adapter("chartqa", "chart_table_qa", _chartqa, include=(*DATA_FILES, "train_*.json")),
        Adapter("ai2d", "multiple_choice", _ai2d, include=(*DATA_FILES, "questions/*.json"), eval_ids=AI2D_TEST_IDS),
        Adapter("scienceqa", "multiple_choice", _scienceqa),
        Adapter("ocrvqa", "document_vqa", _ocrvqa),
        Adapter("textcaps", "captioning", _textcaps),
        Adapter("localized_narratives", "captioning", _localized_narratives, url_columns=("image_url",)),
        Adapter("nlvr2", "yes_no", _nlvr2, url_columns=("left_url", "right_url")),
        Adapter("websight", "screenshot_to_code", _websight),
        Adapter("openhermes", "text_conversation", _sharegpt),
        Adapter("cauldron", "cauldron", None),
    )
}
