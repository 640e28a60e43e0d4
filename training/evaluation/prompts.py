"""Prompts of the paper's protocol (Appendix A.3.1), rendered as the model was trained to read them.

- `chat` (instruction-tuned models): each example is a turn of the chat format of `cauldron.chat`,
  images first in the user turn:
  ``User:<image block> {prompt}<end_of_utterance>\\nAssistant:`` and the model writes the answer.
  Few-shot examples are complete earlier turns (``... Assistant: {answer}<end_of_utterance>\\n``).
- `base` (pre-trained models): images then the prompt as plain text; few-shot examples are earlier
  blocks ``{images}{prompt} {answer}\\n``.

The prompt comes back as a `RenderedChat` whose data spans mark the benchmark's own text (questions,
choices, example answers), so that control-token strings in it tokenize as plain text
(`cauldron.chat.tokenize_chat`), as in training.

An image becomes its token block (`cauldron.chat.image_block`: one crop, or five with image splitting);
a word right after a block is kept apart from it by a space, as `Idefics2Processor` does.

Few-shot examples (`shots` > 0) are drawn, seeded by (seed, item id), from a pool read once from a
support set (another split, or the evaluated one; an item never serves as its own example). The
answer shown for an example is its most frequent reference answer, its correct letter, or its first
caption.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from cauldron.chat import END_OF_UTTERANCE, RenderedChat, TextBuilder, image_block
from curation.errors import UserError
from training.data import stable_seed
from training.evaluation.choices import format_choices
from training.evaluation.registry import Protocol
from training.evaluation.sources import EvalItem


@dataclass(frozen=True)
class PromptSettings:
    style: str = "chat"  # chat | base
    shots: int = 0
    seed: int = 0
    image_seq_len: int = 64
    image_splitting: bool = False


def example_answer(item: EvalItem) -> str:
    """The answer a few-shot example shows."""
    if item.task == "multiple_choice":
        return item.answer_letter or ""
    if item.task == "caption":
        return item.answers[0] if item.answers else ""
    counts = Counter(item.answers)
    return max(item.answers, key=lambda answer: counts[answer]) if item.answers else ""


def instruction(protocol: Protocol, style: str, item: EvalItem) -> list[tuple[str, bool]]:
    """The benchmark's prompt template filled with the item, as (piece, is the item's own text) pairs."""
    template = protocol.template(style, item.task)
    fields = {"question": item.question, "choices": format_choices(item.choices) if item.choices else ""}
    formatter = string.Formatter()
    pieces: list[tuple[str, bool]] = []
    for literal, name, spec, conversion in formatter.parse(template):
        pieces.append((literal, False))
        if name is not None:
            value = formatter.convert_field(fields[name], conversion)
            pieces.append((formatter.format_field(value, spec or ""), True))
    return pieces


def _add_turn(out: TextBuilder, protocol: Protocol, settings: PromptSettings, item: EvalItem, answer: str | None) -> None:
    pieces = instruction(protocol, settings.style, item)
    text = "".join(piece for piece, _ in pieces)
    chat = settings.style == "chat"
    if chat:
        out.add("User:")
    if item.images:
        out.add(image_block(len(item.images), settings.image_seq_len, settings.image_splitting))
        out.add(" " if text and not text[0].isspace() and text[0] != "<" else "")
    for piece, data in pieces:
        out.add(piece, data=data)
    if chat:
        out.add(f"{END_OF_UTTERANCE}\nAssistant:")
    if answer is not None:
        out.add(" ")
        out.add(answer, data=True)
        out.add(f"{END_OF_UTTERANCE}\n" if chat else "\n")


def render_prompt(protocol: Protocol, settings: PromptSettings, item: EvalItem, shots: Sequence[EvalItem] = ()) -> RenderedChat:
    """The text to generate from, with its data spans (before tokenization; the tokenizer adds BOS)."""
    out = TextBuilder()
    for shot in shots:
        _add_turn(out, protocol, settings, shot, example_answer(shot))
    _add_turn(out, protocol, settings, item, None)
    return out.build(sum(len(example.images) for example in [*shots, item]))


def pick_shots(pool: Sequence[EvalItem], item: EvalItem, settings: PromptSettings) -> list[EvalItem]:
    """`settings.shots` examples from the pool, never the item itself, seeded by (seed, item id)."""
    if settings.shots == 0:
        return []
    candidates = [example for example in pool if example.id != item.id and not example.problem]
    if len(candidates) < settings.shots:
        raise UserError(
            f"{settings.shots}-shot evaluation needs at least {settings.shots + 1} usable support items, the pool has {len(candidates)}"
        )
    return random.Random(stable_seed(settings.seed, "shots", item.id)).sample(candidates, settings.shots)


def cut_at_stop_words(text: str, stop_words: Sequence[str]) -> str:
    """The text before the first stop word, stripped."""
    end = min((index for index in (text.find(word) for word in stop_words) if index >= 0), default=len(text))
    return text[:end].strip()
