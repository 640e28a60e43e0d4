"""The benchmark registry: which columns of a benchmark's published files hold what, its task and metric.

Read from `training/evaluation/data/benchmarks.yaml` (or a user's file of the same shape), together with
the evaluation protocol (prompts and stop words). See that file for the meaning of every field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from curation.errors import UserError

TASKS = ("open", "multiple_choice", "caption", "mixed")
METRICS = ("vqa_accuracy", "anls", "relaxed_accuracy", "choice_accuracy", "open_accuracy", "cider", "mixed")
ANSWER_FORMATS = ("letter", "index", "text")
STYLES = ("chat", "base")
EOS_PLACEHOLDER = "<eos>"


class RegistryError(UserError):
    pass


@dataclass(frozen=True)
class Columns:
    id: str | None = None  # None: the row number in file order
    question: str | None = None
    context: str | None = None
    images: tuple[str, ...] = ()
    answers: str | None = None
    answer_field: str | None = None
    choices: str | tuple[str, ...] | None = None
    choices_format: str = "list"  # list | literal
    answer_key: str | None = None
    answer_format: str = "letter"
    type: str | None = None
    type_values: Mapping[str, str] = field(default_factory=dict)
    precision: str | None = None
    group: str | None = None
    group_modulo: int | None = None
    breakdown: str | None = None

    def names(self) -> list[str]:
        """Every column an item needs, once each."""
        singles = [
            self.id,
            self.question,
            self.context,
            self.answers,
            self.answer_key,
            self.type,
            self.precision,
            self.group,
            self.breakdown,
        ]
        choices = list(self.choices) if isinstance(self.choices, tuple) else [self.choices]
        return list(dict.fromkeys(name for name in [*singles, *self.images, *choices] if name))


@dataclass(frozen=True)
class Benchmark:
    name: str
    paper_name: str
    hub: str
    split: str
    task: str
    metric: str
    columns: Columns
    max_new_tokens: int
    config: str | None = None

    def item_task(self, type_value: Any) -> str:
        """The task of one item: the benchmark's, or for `mixed` the one its type column maps to."""
        if self.task != "mixed":
            return self.task
        try:
            return self.columns.type_values[str(type_value)]
        except KeyError:
            raise RegistryError(f"{self.name}: unknown item type {type_value!r}; known: {sorted(self.columns.type_values)}") from None


@dataclass(frozen=True)
class Protocol:
    """Prompt templates per style and task, and the stop words (A.3.1)."""

    stop_words: tuple[str, ...]
    prompts: Mapping[str, Mapping[str, str]]  # style -> task -> template
    base_extra_stop_words: tuple[str, ...] = ()

    def template(self, style: str, task: str) -> str:
        if style not in self.prompts:
            raise RegistryError(f"no prompts for style {style!r}; known: {sorted(self.prompts)}")
        return self.prompts[style][task]

    def stops(self, style: str, eos_token: str) -> tuple[str, ...]:
        words = [eos_token if word == EOS_PLACEHOLDER else word for word in self.stop_words]
        return tuple(words) + (self.base_extra_stop_words if style == "base" else ())


@dataclass(frozen=True)
class Registry:
    benchmarks: Mapping[str, Benchmark]
    protocol: Protocol

    def __getitem__(self, name: str) -> Benchmark:
        try:
            return self.benchmarks[name]
        except KeyError:
            raise RegistryError(f"unknown benchmark {name!r}; known: {', '.join(self.benchmarks)}") from None


def _columns(name: str, values: Mapping[str, Any]) -> Columns:
    known = {f for f in Columns.__dataclass_fields__}
    unknown = set(values) - known
    if unknown:
        raise RegistryError(f"benchmark {name}: unknown column keys {sorted(unknown)}")
    values = dict(values)
    values["images"] = tuple(values.get("images") or ())
    if isinstance(values.get("choices"), list):
        values["choices"] = tuple(values["choices"])
    values["type_values"] = dict(values.get("type_values") or {})
    columns = Columns(**values)
    if columns.answer_format not in ANSWER_FORMATS:
        raise RegistryError(f"benchmark {name}: answer_format must be one of {ANSWER_FORMATS}")
    return columns


def _benchmark(name: str, values: Mapping[str, Any]) -> Benchmark:
    values = dict(values)
    try:
        benchmark = Benchmark(name=name, columns=_columns(name, values.pop("columns")), **values)
    except (KeyError, TypeError) as error:
        raise RegistryError(f"benchmark {name}: {error}") from None
    if benchmark.task not in TASKS or benchmark.metric not in METRICS:
        raise RegistryError(f"benchmark {name}: task must be one of {TASKS} and metric one of {METRICS}")
    needs_choices = benchmark.task in ("multiple_choice", "mixed")
    if needs_choices and not (benchmark.columns.choices and benchmark.columns.answer_key):
        raise RegistryError(f"benchmark {name}: a {benchmark.task} task needs columns.choices and answer_key")
    if benchmark.task == "mixed" and not (benchmark.columns.type and benchmark.columns.type_values):
        raise RegistryError(f"benchmark {name}: a mixed task needs columns.type and type_values")
    if benchmark.task in ("open", "caption", "mixed") and not benchmark.columns.answers:
        raise RegistryError(f"benchmark {name}: columns.answers is required for a {benchmark.task} task")
    return benchmark


def _protocol(values: Mapping[str, Any]) -> Protocol:
    prompts = {style: dict(values[style]) for style in STYLES if style in values}
    for style, templates in prompts.items():
        missing = {"open", "multiple_choice", "caption"} - set(templates)
        if missing:
            raise RegistryError(f"protocol.{style}: missing prompts for {sorted(missing)}")
    return Protocol(tuple(values["stop_words"]), prompts, tuple(values.get("base_extra_stop_words") or ()))


def load_registry(path: str | Path | None = None) -> Registry:
    """The bundled registry, or the one in `path`."""
    if path is None:
        text = resources.files("training.evaluation").joinpath("data/benchmarks.yaml").read_text()
    else:
        text = Path(path).read_text()
    values = yaml.safe_load(text) or {}
    if "benchmarks" not in values or "protocol" not in values:
        raise RegistryError(f"{path or 'benchmarks.yaml'}: needs `benchmarks` and `protocol` sections")
    benchmarks = {name: _benchmark(name, spec) for name, spec in values["benchmarks"].items()}
    return Registry(benchmarks, _protocol(values["protocol"]))


def benchmark_paths(values: list[str], flag: str, registry: Registry) -> list[tuple[Benchmark, Path]]:
    """`NAME=PATH` arguments as (registry benchmark, existing path) pairs."""
    pairs = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UserError(f"{flag} expects NAME=PATH, got {value!r}")
        if not Path(path).exists():
            raise FileNotFoundError(f"{flag} {name}: {path} does not exist")
        pairs.append((registry[name], Path(path)))
    return pairs
