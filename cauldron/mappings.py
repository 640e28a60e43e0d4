"""Declarative adapters: a dataset's columns mapped onto a template family in YAML, no code.

    adapters:
      my_vqa:
        family: short_vqa              # a key of FAMILIES
        images: [image]                # image columns (each a single image or a list; bytes, path or URL)
        fields:                        # template argument -> column path
          question: question
          answers: answers.answer      # dotted path; a list of dicts maps over the list
        options: {shuffle: false}      # optional: prompts (list name or list), shuffle, language
        include: ["*.jsonl"]           # optional: globs of the files to read in a source folder

`zip: [question, answers]` makes list-valued fields give one turn per position (several questions
about one image). A required field that is absent or null refuses the row (`missing_field`,
`null_field`); an optional one (e.g. `context`) is then left out.
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
from cauldron.adapter_types import Adapter, Converted, parse_bool, parse_index
from cauldron.templates import PROMPT_LISTS, Pair
from curation.errors import SampleError, UserError


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


@dataclass(frozen=True)
class Family:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    build: Callable[[Mapping[str, Any], random.Random, Mapping[str, Any]], list[Pair]]


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("short_vqa", ("question", "answers"), (), lambda f, rng, o: [templates.short_answer_vqa(f["question"], f["answers"], rng)]),
        Family("document_vqa", ("question", "answers"), (), lambda f, rng, o: [templates.document_vqa(f["question"], f["answers"], rng)]),
        Family(
            "multiple_choice",
            ("question", "choices", "answer"),
            ("context",),
            lambda f, rng, o: [
                templates.multiple_choice(
                    f["question"],
                    f["choices"],
                    parse_index(f["answer"]),
                    rng,
                    context=f.get("context"),
                    shuffle=bool(o.get("shuffle", False)),
                )
            ],
        ),
        Family("yes_no", ("statement", "label"), (), lambda f, rng, o: [templates.yes_no(f["statement"], parse_bool(f["label"]), rng)]),
        Family(
            "captioning",
            ("caption",),
            (),
            lambda f, rng, o: [templates.captioning(f["caption"], resolve_prompts(o.get("prompts"), "generic_caption"), rng)],
        ),
        Family(
            "transcription",
            ("text",),
            (),
            lambda f, rng, o: [templates.transcription(f["text"], resolve_prompts(o.get("prompts"), "transcription"), rng)],
        ),
        Family("chart_table_qa", ("question", "answer"), (), lambda f, rng, o: [templates.chart_table_qa(f["question"], f["answer"], rng)]),
        Family(
            "screenshot_to_code", ("code",), (), lambda f, rng, o: [templates.screenshot_to_code(f["code"], rng, o.get("language", "HTML"))]
        ),
        Family("text_conversation", ("messages",), (), lambda f, rng, o: templates.text_conversation(f["messages"])),
        Family(
            "text_instruction",
            ("instruction", "response"),
            ("context",),
            lambda f, rng, o: templates.text_instruction(f["instruction"], f["response"], f.get("context")),
        ),
    )
}

_SPEC_KEYS = {"family", "fields", "images", "zip", "options", "include"}


@dataclass(frozen=True)
class MappingSpec:
    """A declarative adapter, as written in YAML."""

    name: str
    family: str
    fields: Mapping[str, str]
    images: tuple[str, ...] = ()
    zip: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    include: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, name: str, spec: Mapping[str, Any]) -> MappingSpec:
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise UserError(f"adapter {name!r}: unknown keys {sorted(unknown)}")
        family = FAMILIES.get(spec.get("family", ""))
        if family is None:
            raise UserError(f"adapter {name!r}: family must be one of {sorted(FAMILIES)}")
        fields = dict(spec.get("fields") or {})
        missing = set(family.required) - set(fields)
        extra = set(fields) - set(family.required) - set(family.optional)
        if missing or extra:
            raise UserError(f"adapter {name!r}: fields missing {sorted(missing)}, not understood {sorted(extra)}")
        zipped = tuple(spec.get("zip") or ())
        if set(zipped) - set(fields):
            raise UserError(f"adapter {name!r}: zip names fields that are not mapped")
        prompts = (spec.get("options") or {}).get("prompts")
        if isinstance(prompts, str) and prompts not in PROMPT_LISTS:
            raise UserError(f"adapter {name!r}: prompt list {prompts!r} is not one of {sorted(PROMPT_LISTS)}")
        return cls(
            name,
            family.name,
            fields,
            tuple(spec.get("images") or ()),
            zipped,
            dict(spec.get("options") or {}),
            tuple(spec.get("include") or ()),
        )

    def convert(self, row: Mapping[str, Any], rng: random.Random) -> Converted:
        images: list[Any] = []
        for column in self.images:
            value = resolve_path(row, column)
            images.extend(value if isinstance(value, (list, tuple)) else [value])
        images = [image for image in images if image is not None]
        if self.images and not images:
            raise SampleError("no_image")
        family = FAMILIES[self.family]
        values = {name: self._value(row, name, path, name in family.optional) for name, path in self.fields.items()}
        values = {name: value for name, value in values.items() if value is not None}
        if not self.zip:
            return images, family.build(values, rng, self.options)
        lengths = {len(values[name]) for name in self.zip}
        if len(lengths) != 1:
            raise SampleError("bad_value", f"zipped fields have different lengths {sorted(lengths)}")
        pairs: list[Pair] = []
        for position in range(lengths.pop()):
            turn = {name: (value[position] if name in self.zip else value) for name, value in values.items()}
            if any(turn[name] is None for name in self.zip):
                continue  # a null slot in parallel lists: that turn is missing, the others are fine
            pairs.extend(family.build(turn, rng, self.options))
        return images, pairs

    @staticmethod
    def _value(row: Mapping[str, Any], name: str, path: str, optional: bool) -> Any:
        try:
            value = resolve_path(row, path)
        except (KeyError, IndexError):
            if optional:
                return None
            raise SampleError("missing_field", path) from None
        if value is None and not optional:
            raise SampleError("null_field", path)
        return value

    def adapter(self) -> Adapter:
        urls = self.images  # a declared image column may hold URLs only; --fetch-images gets them
        return Adapter(self.name, self.family, self.convert, include=self.include, url_columns=urls)


def adapters_from_yaml(text: str) -> dict[str, Adapter]:
    """Adapters declared in a YAML document with a top-level `adapters:` mapping."""
    document = yaml.safe_load(text) or {}
    specs = document.get("adapters") or {}
    return {name: MappingSpec.from_dict(name, spec).adapter() for name, spec in specs.items()}


def load_adapters_yaml(path: str | os.PathLike[str]) -> dict[str, Adapter]:
    with open(path, encoding="utf-8") as handle:
        return adapters_from_yaml(handle.read())


def shipped_adapters() -> dict[str, Adapter]:
    """Declarative adapters shipped in `cauldron/data/adapters.yaml` (the text-only instruction sets)."""
    return dict(_shipped_adapters())


@cache
def _shipped_adapters() -> dict[str, Adapter]:
    return adapters_from_yaml(resources.files("cauldron").joinpath("data", "adapters.yaml").read_text("utf-8"))
