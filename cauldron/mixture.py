"""Instruction mixtures: target answer-token shares -> per-row repetition counts, and a report.

A mixture gives each dataset a target share of the answer tokens of the final training set
(Table 14's "% mixture"). Given the answer-token count of every row of every dataset, `plan_mixture`
decides how often each row appears: every row `floor(f)` times for a factor `f = target / available`,
plus a seeded random subset of rows whose tokens make up the fractional remainder. Picking the
subset by tokens, not by row count, is what lets small and large datasets alike land on their
share. The same seed always gives the same plan.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cauldron.chat import SPECIAL_TOKENS, control_tokens, data_text_ids
from cauldron.schema import CauldronRow
from curation.atomic import atomic_open
from curation.errors import UserError
from curation.storage import ObjectPath, storage_path


@dataclass(frozen=True)
class Mixture:
    name: str
    shares: Mapping[str, float]  # fractions summing to 1


def parse_mixture(document: Mapping[str, Any]) -> Mixture:
    """A mixture from its YAML form: `name`, `unit` (percent | fraction | weight), `datasets: {name: value}`."""
    values = {str(name): float(value) for name, value in (document.get("datasets") or {}).items()}
    if not values:
        raise UserError("a mixture needs at least one dataset")
    if any(value < 0 or not math.isfinite(value) for value in values.values()):
        raise UserError("mixture values must be finite and non-negative")
    unit = document.get("unit", "percent")
    if unit not in {"percent", "fraction", "weight"}:
        raise UserError(f"unknown mixture unit {unit!r}")
    total = sum(values.values())
    if total <= 0:
        raise UserError("mixture values sum to zero")
    return Mixture(str(document.get("name", "mixture")), {name: value / total for name, value in values.items()})


def load_mixture(path: str | os.PathLike[str] | None = None) -> Mixture:
    """The mixture at `path`, or the shipped Idefics2 (Table 14) mixture."""
    if path is None:
        text = resources.files("cauldron").joinpath("data", "idefics2_mixture.yaml").read_text("utf-8")
    else:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    return parse_mixture(yaml.safe_load(text))


def load_tokenizer(name_or_path: str) -> Any:
    """A tokenizer for counting answer tokens (local folder or hub id; remote code is never run).

    A local folder with a `tokenizer.json` loads as a bare `tokenizers.Tokenizer` (same ids, and no
    transformers/torch import in every counting worker); anything else through `AutoTokenizer`.
    """
    local = Path(name_or_path) / "tokenizer.json"
    if local.is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(local))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)


def _control_strings(tokenizer: Any) -> tuple[str, ...]:
    """The strings `cauldron.chat` keeps as plain text inside sample text (`chat.control_tokens`)."""
    if hasattr(tokenizer, "get_added_tokens_decoder"):  # a bare `tokenizers.Tokenizer`
        added = tokenizer.get_added_tokens_decoder().values()
        return tuple(t.content for t in added if (t.special or t.content in SPECIAL_TOKENS) and not t.content.isspace())
    return tuple(control_tokens(tokenizer))


class _AnswerLengths:
    """Tokens per answer text as `cauldron.chat` tokenizes it in training.

    Text without a control-token string is counted in one batched call; text with one (a literal
    `<end_of_utterance>` or `</s>` in an answer) is counted as chat.py encodes it, the control strings
    as the plain text they are, not as the one control token the tokenizer would make of each.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        controls = _control_strings(tokenizer)
        self.pattern = re.compile("|".join(re.escape(c) for c in sorted(controls, key=len, reverse=True)) or "(?!)")
        self.chat_tokenizer: Any = None

    def __call__(self, texts: list[str]) -> list[int]:
        if hasattr(self.tokenizer, "encode_batch"):  # a bare `tokenizers.Tokenizer`
            lengths = [len(encoding.ids) for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        else:
            lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        for position, text in enumerate(texts):
            if self.pattern.search(text):
                lengths[position] = len(data_text_ids(self._chat_tokenizer(), text))
        return lengths

    def _chat_tokenizer(self) -> Any:
        """The tokenizer in the transformers form chat.py takes (built once, when first needed)."""
        if self.chat_tokenizer is None:
            if hasattr(self.tokenizer, "encode_batch"):
                from transformers import PreTrainedTokenizerFast

                self.chat_tokenizer = PreTrainedTokenizerFast(tokenizer_object=self.tokenizer)
            else:
                self.chat_tokenizer = self.tokenizer
        return self.chat_tokenizer


def answer_token_counts(rows: Iterable[CauldronRow], tokenizer: Any, batch_size: int = 512) -> np.ndarray:
    """Answer tokens per row: the assistant texts of all turns, tokenized without special tokens and
    with control-token strings in them as plain text, as `cauldron.chat` tokenizes them for training.

    `tokenizer` is a transformers tokenizer or a bare `tokenizers.Tokenizer`.
    """
    return token_counts(([turn["assistant"] for turn in row["texts"]] for row in rows), tokenizer, batch_size)


def token_counts(answers: Iterable[list[str]], tokenizer: Any, batch_size: int = 512) -> np.ndarray:
    """Tokens per row, for rows given as their lists of assistant texts (control-token strings as plain text)."""
    lengths = _AnswerLengths(tokenizer)
    counts: list[int] = []
    texts: list[str] = []
    owners: list[int] = []

    def flush() -> None:
        if texts:
            for owner, length in zip(owners, lengths(texts), strict=True):
                counts[owner] += length
            texts.clear()
            owners.clear()

    for row_answers in answers:
        counts.append(0)
        for answer in row_answers:
            texts.append(answer or "")
            owners.append(len(counts) - 1)
        if len(texts) >= batch_size:
            flush()
    flush()
    return np.asarray(counts, dtype=np.int64)


@dataclass
class DatasetPlan:
    name: str
    target_share: float
    available_tokens: int
    factor: float  # requested repetition factor (target tokens / available tokens)
    multiplicity: np.ndarray  # how many times each input row appears in the mixture
    selected_tokens: int

    @property
    def rows_in(self) -> int:
        return int(self.multiplicity.size)

    @property
    def rows_out(self) -> int:
        return int(self.multiplicity.sum())


@dataclass
class MixturePlan:
    mixture: str
    seed: int
    total_tokens: int  # the answer-token budget the targets were scaled to
    datasets: dict[str, DatasetPlan]
    missing: list[str] = field(default_factory=list)  # in the mixture, but no rows given
    unused: list[str] = field(default_factory=list)  # rows given, but not in the mixture

    @property
    def selected_tokens(self) -> int:
        return sum(plan.selected_tokens for plan in self.datasets.values())

    def achieved_share(self, name: str) -> float:
        total = self.selected_tokens
        return self.datasets[name].selected_tokens / total if total else 0.0

    def report(self) -> list[dict[str, Any]]:
        return [
            {
                "dataset": name,
                "target_percent": 100 * plan.target_share,
                "achieved_percent": 100 * self.achieved_share(name),
                "available_tokens": plan.available_tokens,
                "selected_tokens": plan.selected_tokens,
                "factor": plan.factor,
                "rows_in": plan.rows_in,
                "rows_out": plan.rows_out,
            }
            for name, plan in self.datasets.items()
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mixture": self.mixture,
            "seed": self.seed,
            "total_tokens": self.total_tokens,
            "selected_tokens": self.selected_tokens,
            "missing": self.missing,
            "unused": self.unused,
            "datasets": self.report(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format_table(self) -> str:
        lines = [f"{'dataset':<24}{'target %':>10}{'achieved %':>12}{'factor':>9}{'rows in':>10}{'rows out':>10}"]
        for entry in self.report():
            lines.append(
                f"{entry['dataset']:<24}{entry['target_percent']:>10.2f}{entry['achieved_percent']:>12.2f}"
                f"{entry['factor']:>9.3f}{entry['rows_in']:>10}{entry['rows_out']:>10}"
            )
        if self.missing:
            lines.append(f"not given (shares renormalised without them): {', '.join(self.missing)}")
        if self.unused:
            lines.append(f"given but not in the mixture (left out): {', '.join(self.unused)}")
        return "\n".join(lines)


def _dataset_seed(seed: int, name: str) -> list[int]:
    return [seed, int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")]


def _plan_dataset(name: str, share: float, counts: np.ndarray, budget: float, seed: int) -> DatasetPlan:
    available = int(counts.sum())
    if available <= 0:
        raise UserError(f"dataset {name!r} has no answer tokens")
    wanted = share * budget
    factor = wanted / available
    repeats = int(math.floor(factor))
    remainder = wanted - repeats * available
    order = np.random.default_rng(_dataset_seed(seed, name)).permutation(counts.size)
    cumulative = np.cumsum(counts[order])
    # the prefix of the shuffled rows whose tokens come closest to the remainder
    cut = int(np.searchsorted(cumulative, remainder))
    if cut < counts.size:
        below = cumulative[cut - 1] if cut > 0 else 0
        if abs(cumulative[cut] - remainder) < abs(remainder - below):
            cut += 1
    multiplicity = np.full(counts.size, repeats, dtype=np.int64)
    multiplicity[order[:cut]] += 1
    selected = int((multiplicity * counts).sum())
    return DatasetPlan(name, share, available, factor, multiplicity, selected)


def plan_mixture(
    mixture: Mixture,
    token_counts: Mapping[str, Sequence[int] | np.ndarray],
    *,
    total_tokens: int | None = None,
    seed: int = 0,
) -> MixturePlan:
    """Repetition counts per row so that each dataset's answer tokens hit its target share.

    `token_counts[name]` holds the answer tokens of each row of dataset `name`. Datasets of the
    mixture that are not given are reported as missing and the remaining shares renormalised.
    `total_tokens` sets the size of the mixture (default: as many answer tokens as the given
    datasets hold together).
    """
    present = [name for name in mixture.shares if name in token_counts and mixture.shares[name] > 0]
    if not present:
        raise UserError("none of the mixture's datasets were given")
    missing = [name for name in mixture.shares if name not in token_counts]
    unused = [name for name in token_counts if name not in mixture.shares]
    arrays = {name: np.asarray(token_counts[name], dtype=np.int64) for name in present}
    norm = sum(mixture.shares[name] for name in present)
    budget = float(total_tokens if total_tokens is not None else sum(int(a.sum()) for a in arrays.values()))
    plans = {name: _plan_dataset(name, mixture.shares[name] / norm, arrays[name], budget, seed) for name in present}
    return MixturePlan(mixture.name, seed, int(budget), plans, missing, unused)


def plot_mixture(plan: MixturePlan, path: str | os.PathLike[str] | ObjectPath) -> None:
    """A horizontal bar chart (PNG) of target versus achieved share per dataset."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    entries = sorted(plan.report(), key=lambda entry: entry["target_percent"])
    positions = np.arange(len(entries))
    figure = Figure(figsize=(8, 1.5 + 0.28 * len(entries)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.barh(positions - 0.2, [e["target_percent"] for e in entries], height=0.4, label="target")
    axes.barh(positions + 0.2, [e["achieved_percent"] for e in entries], height=0.4, label="achieved")
    axes.set_yticks(positions, [e["dataset"] for e in entries])
    axes.margins(y=0.01)
    axes.set_xlabel("% of answer tokens")
    axes.set_title(f"Mixture {plan.mixture}: target vs achieved")
    axes.legend(loc="lower right")
    figure.tight_layout()
    with atomic_open(storage_path(path), "wb") as handle:  # a local file or an object
        figure.savefig(handle, format="png", dpi=100)
