"""Prompts of the paper's protocol (Appendix A.3.1), rendered as the model was trained to read them.

- `chat` (instruction-tuned models): each example is a turn of the chat format of `cauldron.chat`,
  images first in the user turn:
  ``User:<image block> {prompt}<end_of_utterance>\\nAssistant:`` and the model writes the answer.
  Few-shot examples are complete earlier turns (``... Assistant: {answer}<end_of_utterance>\\n``).
- `base` (pre-trained models): images then the prompt as plain text; few-shot examples are earlier
  blocks ``{images}{prompt} {answer}\\n``.

An image becomes its token block (`cauldron.chat.image_block`: one crop, or five with image splitting);
a word right after a block is kept apart from it by a space, as `Idefics2Processor` does.

Few-shot examples (`shots` > 0) are drawn, seeded by (seed, item id), from a pool read once from a
support set (another split, or the evaluated one; an item never serves as its own example). The
answer shown for an example is its most frequent reference answer, its correct letter, or its first
caption.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from cauldron.chat import END_OF_UTTERANCE, image_block
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


def instruction(protocol: Protocol, style: str, item: EvalItem) -> str:
    template = protocol.template(style, item.task)
    return template.format(question=item.question, choices=format_choices(item.choices) if item.choices else "")


def _with_images(text: str, images: int, settings: PromptSettings) -> str:
    if not images:
        return text
    block = image_block(images, settings.image_seq_len, settings.image_splitting)
    gap = " " if text and not text[0].isspace() and text[0] != "<" else ""
    return block + gap + text


def _turn(protocol: Protocol, settings: PromptSettings, item: EvalItem, answer: str | None) -> str:
    prompt = _with_images(instruction(protocol, settings.style, item), len(item.images), settings)
    if settings.style == "chat":
        turn = f"User:{prompt}{END_OF_UTTERANCE}\nAssistant:"
        return turn if answer is None else f"{turn} {answer}{END_OF_UTTERANCE}\n"
    return prompt if answer is None else f"{prompt} {answer}\n"


def render_prompt(protocol: Protocol, settings: PromptSettings, item: EvalItem, shots: Sequence[EvalItem] = ()) -> str:
    """The text to generate from (before tokenization; the tokenizer adds BOS)."""
    examples = "".join(_turn(protocol, settings, shot, example_answer(shot)) for shot in shots)
    return examples + _turn(protocol, settings, item, None)


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
