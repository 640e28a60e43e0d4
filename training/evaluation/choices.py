"""Multiple-choice prompts and the deterministic reading of a letter from a model's answer.

Choices are lettered A, B, C, ... in the order the benchmark lists them. A response names a choice
when, after surrounding whitespace and a leading ``Answer:`` / ``The answer is`` are removed, it

1. starts with a choice letter that is followed by the end, ``.``, ``)`` or ``:`` (``B``, ``B.``,
   ``(B)``, ``B: dog``); a single lower-case letter alone also counts (``b``); or
2. equals the text of exactly one choice, ignoring case, extra whitespace and a final period.

Anything else is unparsed: scored wrong and counted, never replaced by a random guess. (``A cat``
names no choice: the capital A is an article there, not a letter.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ANSWER_PREFIX = re.compile(r"^(?:the\s+answer\s+is|answer)\s*:?\s*", re.IGNORECASE)
LEADING_LETTER = re.compile(r"^\(?([A-Z])(?:\)|\.|:|$)")


def choice_letters(count: int) -> str:
    if not 0 < count <= len(LETTERS):
        raise ValueError(f"a multiple-choice item needs 1 to {len(LETTERS)} choices, got {count}")
    return LETTERS[:count]


def format_choices(choices: Sequence[str]) -> str:
    """``A. first\\nB. second ...``"""
    return "\n".join(f"{letter}. {choice}" for letter, choice in zip(choice_letters(len(choices)), choices, strict=True))


def _plain(text: str) -> str:
    return " ".join(text.lower().split()).removesuffix(".")


def parse_choice(response: str, choices: Sequence[str]) -> str | None:
    """The letter the response names, or None when it names none (see the module docstring)."""
    letters = choice_letters(len(choices))
    text = ANSWER_PREFIX.sub("", response.strip()).strip()
    found = LEADING_LETTER.match(text)
    if found and found.group(1) in letters:
        return found.group(1)
    single = text.removesuffix(".")
    if len(single) == 1 and single.upper() in letters:
        return single.upper()
    matching = [letter for letter, choice in zip(letters, choices, strict=True) if _plain(choice) == _plain(text)]
    return matching[0] if len(matching) == 1 else None
