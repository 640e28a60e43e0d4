"""Adapters: one raw source layout -> Cauldron rows, through a template family.

An `Adapter` reads the columns of one raw example, picks the images and the fields a template
family needs, and returns a `CauldronRow`. Built-in adapters cover the real layouts of VQAv2,
TextVQA, DocVQA, ChartQA, AI2D, ScienceQA, OCR-VQA, TextCaps, Localized Narratives, NLVR2,
WebSight and ShareGPT-style text sets (OpenHermes); rows already in the_cauldron schema pass
through (`cauldron`). Any other dataset is added with a declarative YAML mapping:

    adapters:
      my_vqa:
        family: short_vqa              # a key of FAMILIES
        images: [image]                # image columns (each a single image or a list)
        fields:                        # template argument -> column path
          question: question
          answers: answers.answer      # dotted path; a list of dicts maps over the list
        options: {shuffle: false}      # optional: prompts (list name or list), shuffle, language

`zip: [question, answers]` makes list-valued fields give one turn per position (several questions
about one image).

A row that cannot be used raises `RowRejected` with a short reason for the ledger.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from cauldron import templates
from cauldron.images import ImageDecodeError
from cauldron.schema import CauldronRow, is_cauldron_row, make_row, normalise_row
from cauldron.templates import PROMPT_LISTS, Pair, row_rng

Converted = tuple[list[Any], list[Pair]]


class RowRejected(ValueError):
    """A raw row that cannot become a Cauldron row; `reason` is a short ledger code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Adapter:
    """Maps a raw row of one source layout onto Cauldron turns; `convert` returns (images, pairs)."""

    name: str
    family: str
    convert: Callable[[Mapping[str, Any], random.Random], Converted] | None  # None: rows pass through

    def __call__(self, row: Mapping[str, Any], *, key: Any, seed: int = 0, source: str | None = None) -> CauldronRow:
        """Convert one raw row. `key` identifies the row (e.g. its id or index) and seeds its randomness."""
        source = source or self.name
        try:
            if self.convert is None:
                if not is_cauldron_row(row):
                    raise RowRejected("not_cauldron_schema")
                return normalise_row(row)
            images, pairs = self.convert(row, row_rng(seed, source, key))
            if not pairs:
                raise RowRejected("no_turns")
            return make_row(images, pairs, source)
        except RowRejected:
            raise
        except ImageDecodeError as error:
            raise RowRejected("bad_image", str(error)) from error
        except (KeyError, IndexError) as error:
            raise RowRejected("missing_field", repr(error)) from error
        except (ValueError, TypeError) as error:
            raise RowRejected("bad_value", str(error)) from error


# ---- helpers shared by the adapters ------------------------------------------------------------

def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    if text in {"true", "yes", "1"}:
        return True
    if text in {"false", "no", "0"}:
        return False
    raise ValueError(f"not a boolean label: {value!r}")


def parse_index(value: Any) -> int | str:
    """An answer index given as int or digit string; any other string is kept as the answer text."""
    if isinstance(value, bool):
        raise ValueError("boolean is not an answer index")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.isdigit() else text


def first(value: Any) -> Any:
    """The first element of a list-valued field, or the value itself."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("empty list")
        return value[0]
    return value


def require_image(value: Any) -> Any:
    if value is None:
        raise RowRejected("no_image")
    return value


def resolve_path(row: Any, path: str) -> Any:
    """Follow a dotted path; a list meets a name by mapping over its items, an integer indexes it."""
    value = row
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value[part]
        elif isinstance(value, (list, tuple)):
            value = value[int(part)] if part.lstrip("-").isdigit() else [item[part] for item in value]
        else:
            raise KeyError(f"{path}: cannot look up {part!r} in a {type(value).__name__}")
    return value


def resolve_prompts(option: str | Sequence[str] | None, default: str) -> tuple[str, ...]:
    if option is None:
        return PROMPT_LISTS[default]
    if isinstance(option, str):
        return PROMPT_LISTS[option]
    return tuple(option)


# ---- template families as uniform builders (used by the declarative mappings) ----------------

@dataclass(frozen=True)
class Family:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    build: Callable[[Mapping[str, Any], random.Random, Mapping[str, Any]], list[Pair]]


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("short_vqa", ("question", "answers"), (),
               lambda f, rng, o: [templates.short_answer_vqa(f["question"], f["answers"], rng)]),
        Family("document_vqa", ("question", "answers"), (),
               lambda f, rng, o: [templates.document_vqa(f["question"], f["answers"], rng)]),
        Family("multiple_choice", ("question", "choices", "answer"), ("context",),
               lambda f, rng, o: [templates.multiple_choice(
                   f["question"], f["choices"], parse_index(f["answer"]), rng,
                   context=f.get("context"), shuffle=bool(o.get("shuffle", False)))]),
        Family("yes_no", ("statement", "label"), (),
               lambda f, rng, o: [templates.yes_no(f["statement"], parse_bool(f["label"]), rng)]),
        Family("captioning", ("caption",), (),
               lambda f, rng, o: [templates.captioning(
                   f["caption"], resolve_prompts(o.get("prompts"), "generic_caption"), rng)]),
        Family("transcription", ("text",), (),
               lambda f, rng, o: [templates.transcription(
                   f["text"], resolve_prompts(o.get("prompts"), "transcription"), rng)]),
        Family("chart_table_qa", ("question", "answer"), (),
               lambda f, rng, o: [templates.chart_table_qa(f["question"], f["answer"], rng)]),
        Family("screenshot_to_code", ("code",), (),
               lambda f, rng, o: [templates.screenshot_to_code(f["code"], rng, o.get("language", "HTML"))]),
        Family("text_conversation", ("messages",), (),
               lambda f, rng, o: templates.text_conversation(f["messages"])),
        Family("text_instruction", ("instruction", "response"), ("context",),
               lambda f, rng, o: templates.text_instruction(f["instruction"], f["response"], f.get("context"))),
    )
}


@dataclass(frozen=True)
class MappingSpec:
    """A declarative adapter, as written in YAML."""

    name: str
    family: str
    fields: Mapping[str, str]
    images: tuple[str, ...] = ()
    zip: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, spec: Mapping[str, Any]) -> MappingSpec:
        unknown = set(spec) - {"family", "fields", "images", "zip", "options"}
        if unknown:
            raise ValueError(f"adapter {name!r}: unknown keys {sorted(unknown)}")
        family = FAMILIES.get(spec.get("family", ""))
        if family is None:
            raise ValueError(f"adapter {name!r}: family must be one of {sorted(FAMILIES)}")
        fields = dict(spec.get("fields") or {})
        missing = set(family.required) - set(fields)
        extra = set(fields) - set(family.required) - set(family.optional)
        if missing or extra:
            raise ValueError(f"adapter {name!r}: fields missing {sorted(missing)}, not understood {sorted(extra)}")
        zipped = tuple(spec.get("zip") or ())
        if set(zipped) - set(fields):
            raise ValueError(f"adapter {name!r}: zip names fields that are not mapped")
        prompts = (spec.get("options") or {}).get("prompts")
        if isinstance(prompts, str) and prompts not in PROMPT_LISTS:
            raise ValueError(f"adapter {name!r}: prompt list {prompts!r} is not one of {sorted(PROMPT_LISTS)}")
        return cls(name, family.name, fields, tuple(spec.get("images") or ()), zipped, dict(spec.get("options") or {}))

    def convert(self, row: Mapping[str, Any], rng: random.Random) -> Converted:
        images: list[Any] = []
        for column in self.images:
            value = resolve_path(row, column)
            images.extend(value if isinstance(value, (list, tuple)) else [value])
        images = [image for image in images if image is not None]
        if self.images and not images:
            raise RowRejected("no_image")
        values = {name: _optional_path(row, path, name in FAMILIES[self.family].optional)
                  for name, path in self.fields.items()}
        values = {name: value for name, value in values.items() if value is not None}
        build = FAMILIES[self.family].build
        if not self.zip:
            return images, build(values, rng, self.options)
        lengths = {len(values[name]) for name in self.zip}
        if len(lengths) != 1:
            raise ValueError(f"zipped fields have different lengths {sorted(lengths)}")
        pairs: list[Pair] = []
        for position in range(lengths.pop()):
            turn = {name: (value[position] if name in self.zip else value) for name, value in values.items()}
            pairs.extend(build(turn, rng, self.options))
        return images, pairs

    def adapter(self) -> Adapter:
        return Adapter(self.name, self.family, self.convert)


def _optional_path(row: Mapping[str, Any], path: str, optional: bool) -> Any:
    try:
        return resolve_path(row, path)
    except (KeyError, IndexError):
        if optional:
            return None
        raise


def adapters_from_yaml(text: str) -> dict[str, Adapter]:
    """Adapters declared in a YAML document with a top-level `adapters:` mapping."""
    document = yaml.safe_load(text) or {}
    specs = document.get("adapters") or {}
    return {name: MappingSpec.from_dict(name, spec).adapter() for name, spec in specs.items()}


def load_adapters_yaml(path: str | os.PathLike[str]) -> dict[str, Adapter]:
    with open(path, encoding="utf-8") as handle:
        return adapters_from_yaml(handle.read())


# ---- built-in adapters for real source layouts ----------------------------------------------

def _vqav2(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # HuggingFaceM4/VQAv2: answers = [{answer, answer_confidence, answer_id}] x 10
    answers = [item["answer"] if isinstance(item, Mapping) else item for item in row.get("answers") or []]
    if not answers:
        answers = [row["multiple_choice_answer"]]
    return [require_image(row["image"])], [templates.short_answer_vqa(row["question"], answers, rng)]


def _ocr_question(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # TextVQA (question, answers[10]) and DocVQA (question, answers[]) share this shape
    return [require_image(row["image"])], [templates.document_vqa(row["question"], row["answers"], rng)]


def _chartqa(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # HuggingFaceM4/ChartQA: image, query, label (list with one string), human_or_machine
    return [require_image(row["image"])], [templates.chart_table_qa(row["query"], first(row["label"]), rng)]


def _ai2d(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # lmms-lab/ai2d: question, options, answer (index as a digit string)
    pair = templates.multiple_choice(row["question"], row["options"], parse_index(row["answer"]), rng)
    return [require_image(row["image"])], [pair]


def _scienceqa(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # derek-thomas/ScienceQA: image (None for text-only questions), question, choices, answer, hint
    image = require_image(row.get("image"))
    pair = templates.multiple_choice(row["question"], row["choices"], int(row["answer"]), rng,
                                     context=row.get("hint") or None)
    return [image], [pair]


def _ocrvqa(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # howard-hou/OCR-VQA: one book cover, parallel lists `questions` and `answers`
    questions, answers = list(row["questions"]), list(row["answers"])
    if len(questions) != len(answers):
        raise ValueError("questions and answers differ in length")
    pairs = [templates.document_vqa(question, [answer], rng) for question, answer in zip(questions, answers)]
    return [require_image(row["image"])], pairs


def _textcaps(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # lmms-lab/TextCaps: caption_str is the list of reference captions (a string in the raw JSON)
    captions = row["caption_str"]
    caption = rng.choice(list(captions)) if isinstance(captions, (list, tuple)) else captions
    return [require_image(row["image"])], [templates.captioning(caption, PROMPT_LISTS["textcaps"], rng)]


def _localized_narratives(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # annotation lines (dataset_id, image_id, annotator_id, caption, ...) joined with their `image`
    pair = templates.captioning(row["caption"], PROMPT_LISTS["localized_narratives"], rng)
    return [require_image(row["image"])], [pair]


def _nlvr2(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # NLVR2: sentence, label ("True"/"False"), a left and a right image
    if "left_image" in row:
        images = [require_image(row["left_image"]), require_image(row["right_image"])]
    else:
        images = [require_image(image) for image in row["images"]]
    if len(images) != 2:
        raise ValueError(f"NLVR2 needs two images, got {len(images)}")
    return images, [templates.yes_no(row["sentence"], parse_bool(row["label"]), rng)]


def _websight(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # HuggingFaceM4/WebSight: image (screenshot), text (HTML + Tailwind), llm_generated_idea
    return [require_image(row["image"])], [templates.screenshot_to_code(row["text"], rng, "HTML")]


def _sharegpt(row: Mapping[str, Any], rng: random.Random) -> Converted:
    # teknium/OpenHermes-2.5: conversations = [{from: system|human|gpt, value}]
    return [], templates.text_conversation(row["conversations"])


BUILTIN_ADAPTERS: dict[str, Adapter] = {
    adapter.name: adapter
    for adapter in (
        Adapter("vqav2", "short_vqa", _vqav2),
        Adapter("textvqa", "document_vqa", _ocr_question),
        Adapter("docvqa", "document_vqa", _ocr_question),
        Adapter("chartqa", "chart_table_qa", _chartqa),
        Adapter("ai2d", "multiple_choice", _ai2d),
        Adapter("scienceqa", "multiple_choice", _scienceqa),
        Adapter("ocrvqa", "document_vqa", _ocrvqa),
        Adapter("textcaps", "captioning", _textcaps),
        Adapter("localized_narratives", "captioning", _localized_narratives),
        Adapter("nlvr2", "yes_no", _nlvr2),
        Adapter("websight", "screenshot_to_code", _websight),
        Adapter("openhermes", "text_conversation", _sharegpt),
        Adapter("cauldron", "cauldron", None),
    )
}


def shipped_adapters() -> dict[str, Adapter]:
    """Declarative adapters shipped in `cauldron/data/adapters.yaml` (the text-only instruction sets)."""
    return dict(_shipped_adapters())


@cache
def _shipped_adapters() -> dict[str, Adapter]:
    return adapters_from_yaml(resources.files("cauldron").joinpath("data", "adapters.yaml").read_text("utf-8"))


def get_adapter(name: str, extra: Mapping[str, Adapter] | None = None) -> Adapter:
    """Look an adapter up: user-declared first, then built-in, then shipped declarative ones."""
    if extra and name in extra:
        return extra[name]
    if name in BUILTIN_ADAPTERS:
        return BUILTIN_ADAPTERS[name]
    shipped = shipped_adapters()
    if name in shipped:
        return shipped[name]
    known = sorted({*BUILTIN_ADAPTERS, *shipped, *(extra or {})})
    raise KeyError(f"no adapter named {name!r}; known: {', '.join(known)}")


def adapt_row(adapter: Adapter, row: Mapping[str, Any], *, key: Any, seed: int = 0,
              source: str | None = None) -> CauldronRow:
    """Convert one raw row; rows already in the_cauldron schema pass through whatever the adapter."""
    if is_cauldron_row(row):
        return normalise_row(row)
    return adapter(row, key=key, seed=seed, source=source)
