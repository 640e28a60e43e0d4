"""Prompt templates: one small, pure function per task family.

Every function takes the fields of one raw example and returns (user, assistant) pairs; those that
choose anything take a `random.Random`. All randomness (which suffix, which prompt, choice order)
comes from that generator, so a row rendered with `row_rng(seed, dataset, key)` is the same on every
run and on every worker, whatever the partitioning.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

Pair = tuple[str, str]

SHORT_ANSWER_SUFFIXES = (
    "\nAnswer in a word or two.",
    "\nGive a short answer.",
    "\nReply with a brief answer.",
    "\nKeep the answer short.",
    "\nA few words are enough.",
    "\nAnswer concisely.",
    "\nBrief answer, please.",
    "\nRespond with just the answer.",
)

BREVITY_HINTS = (
    "\nAnswer with the text as it appears in the image, as briefly as possible.",
    "\nGive only the answer, copied from the image.",
    "\nKeep the answer to a few words taken from the image.",
    "\nRespond with the shortest answer possible.",
    "\nNo explanation, just the answer.",
    "\nQuote the relevant words only.",
    "\nThe answer should be short and exact.",
    "\nUse as few words as possible.",
    "\nState only what is asked.",
    "\nA short phrase from the image will do.",
    "\nBe brief and precise.",
)

CHART_TABLE_HINTS = (
    "",
    "\nAnswer using the values shown.",
    "\nBase the answer on the data in the image.",
    "\nRead the answer off the figure.",
)

VERIFICATION_TEMPLATES = (
    "Is this statement true for the image? {statement}",
    "Does the following describe the image correctly? {statement}",
    "Statement: {statement}\nIs it accurate?",
    "Check this claim against the image: {statement}",
    "Looking at the image, is it the case that {statement_lower}",
    "True or false for this picture: {statement}",
)
YES_NO_INSTRUCTION = "\nAnswer yes or no."

MULTIPLE_CHOICE_INSTRUCTION = "Answer with the letter."
CHOICE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

GENERIC_CAPTION_PROMPTS = (
    "Describe the image.",
    "What is shown in this image?",
    "Write a caption for this picture.",
    "Give a description of the image.",
)

# Per-dataset prompt lists for captioning and transcription; adapters and YAML mappings pick one.
PROMPT_LISTS: dict[str, tuple[str, ...]] = {
    "generic_caption": GENERIC_CAPTION_PROMPTS,
    "textcaps": (
        "Describe the image, including any text you can read in it.",
        "Write a caption that mentions the text visible in the picture.",
        "What does this image show? Include the written words.",
        "Give a one-sentence description of the image and its text.",
        "Caption this photo, reading out any legible text.",
    ),
    "localized_narratives": (
        "Describe everything you see in this image in detail.",
        "Narrate what is happening in the picture, part by part.",
        "Give a detailed description of the image.",
        "Walk me through the contents of this image.",
        "Explain in detail what the image shows.",
    ),
    "screen2words": (
        "Summarize the purpose of this app screen.",
        "What is this screen for?",
        "Describe this user interface in one sentence.",
        "Give a short summary of the screenshot.",
    ),
    "transcription": (
        "Transcribe the text in the image.",
        "What is written in this image?",
        "Read out the text shown.",
        "Write down the text exactly as it appears.",
        "Copy the text from the image.",
    ),
    "handwriting": (
        "Transcribe the handwritten text.",
        "What does this handwriting say?",
        "Read the handwritten lines and write them out.",
    ),
    "chart_summary": (
        "Summarize the chart.",
        "Describe what this chart shows.",
        "Write a short description of the figure and its main trend.",
    ),
    "differences": (
        "What is different between the two images?",
        "Describe the differences between these pictures.",
        "List what changed from the first image to the second.",
    ),
}

CODE_PROMPTS = (
    "Write the {language} code that renders this screenshot.",
    "Generate {language} reproducing this page.",
    "Convert the screenshot into {language}.",
    "Write {language} code that looks like this image.",
)


def row_rng(seed: int, *keys: Any) -> random.Random:
    """A generator seeded from `seed` and the row's identity (not Python's salted `hash`)."""
    material = "\x1f".join([str(seed), *(str(key) for key in keys)]).encode()
    return random.Random(int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big"))


def clean_text(text: Any) -> str:
    """Strip and collapse runs of spaces/tabs, keeping line breaks. A null is refused, never rendered as "None"."""
    if text is None:
        raise ValueError("a text field is null")
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in str(text).strip().splitlines()]
    return "\n".join(lines)


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def as_question(text: Any) -> str:
    return capitalise(clean_text(text))


def as_short_answer(text: Any) -> str:
    """Capitalised, ending in a full stop unless it already ends a sentence."""
    answer = capitalise(clean_text(text))
    if answer and answer[-1] not in ".?!":
        answer += "."
    return answer


def most_common_answer(answers: Sequence[Any], rng: random.Random) -> str:
    """The most frequent annotator answer (after whitespace/case folding); ties broken by `rng`."""
    folded = [clean_text(answer) for answer in answers if answer is not None and clean_text(answer)]
    if not folded:
        raise ValueError("no non-empty answer")
    counts = Counter(answer.lower() for answer in folded)
    best = max(counts.values())
    tied = sorted({answer.lower() for answer in folded if counts[answer.lower()] == best})
    winner = tied[0] if len(tied) == 1 else rng.choice(tied)
    return next(answer for answer in folded if answer.lower() == winner)


def short_answer_vqa(question: str, answers: Sequence[Any] | str, rng: random.Random) -> Pair:
    """Short-answer VQA: question + a brevity suffix; the majority answer, capitalised with a full stop."""
    answer_list = [answers] if isinstance(answers, str) else list(answers)
    answer = most_common_answer(answer_list, rng)
    return as_question(question) + rng.choice(SHORT_ANSWER_SUFFIXES), as_short_answer(answer)


def document_vqa(question: str, answers: Sequence[Any] | str, rng: random.Random) -> Pair:
    """OCR/document VQA: question + a brevity hint; the answer keeps the casing read from the image."""
    answer_list = [answers] if isinstance(answers, str) else list(answers)
    return as_question(question) + rng.choice(BREVITY_HINTS), most_common_answer(answer_list, rng)


def multiple_choice(
    question: str,
    choices: Sequence[Any],
    answer: int | str,
    rng: random.Random,
    *,
    context: str | None = None,
    shuffle: bool = False,
) -> Pair:
    """`Question: ...\\nChoices:\\nA. ...\\nAnswer with the letter.` -> `Answer: X`.

    `answer` is the index of the correct choice, or its text. With `shuffle`, the choices are put in an
    order drawn from `rng` (for sources whose gold answer always sits in the same slot).
    """
    options = [clean_text(choice) for choice in choices]
    if len(options) < 2 or len(options) > len(CHOICE_LETTERS):
        raise ValueError(f"multiple choice needs 2..{len(CHOICE_LETTERS)} choices, got {len(options)}")
    correct = answer if isinstance(answer, int) else options.index(clean_text(answer))
    if not 0 <= correct < len(options):
        raise ValueError(f"answer index {correct} out of range for {len(options)} choices")
    order = list(range(len(options)))
    if shuffle:
        rng.shuffle(order)
    lines = []
    if context:
        lines.append(f"Context: {clean_text(context)}")
    lines.append(f"Question: {as_question(question)}")
    lines.append("Choices:")
    lines.extend(f"{CHOICE_LETTERS[slot]}. {options[index]}" for slot, index in enumerate(order))
    lines.append(MULTIPLE_CHOICE_INSTRUCTION)
    return "\n".join(lines), f"Answer: {CHOICE_LETTERS[order.index(correct)]}"


def yes_no(statement: str, label: bool, rng: random.Random) -> Pair:
    """Verification of a statement about the image(s) -> `Yes.` / `No.`."""
    sentence = capitalise(clean_text(statement))
    if sentence and sentence[-1] not in ".?!":
        sentence += "."
    prompt = rng.choice(VERIFICATION_TEMPLATES).format(statement=sentence, statement_lower=sentence[:1].lower() + sentence[1:])
    return prompt + YES_NO_INSTRUCTION, "Yes." if label else "No."


def captioning(caption: str, prompts: Sequence[str], rng: random.Random) -> Pair:
    """A prompt drawn from the dataset's list; the caption as a sentence."""
    return rng.choice(list(prompts)), as_short_answer(caption)


def transcription(text: str, prompts: Sequence[str], rng: random.Random) -> Pair:
    """A prompt drawn from the dataset's list; the text verbatim (line breaks kept)."""
    return rng.choice(list(prompts)), clean_text(text)


def chart_table_qa(question: str, answer: Any, rng: random.Random) -> Pair:
    """Question over a chart, table, figure or diagram; the answer (a value or a worked solution) verbatim."""
    return as_question(question) + rng.choice(CHART_TABLE_HINTS), clean_text(answer)


def screenshot_to_code(code: str, rng: random.Random, language: str = "HTML") -> Pair:
    """Screenshot to code: the source is the answer, byte for byte (whitespace matters in code)."""
    return rng.choice(CODE_PROMPTS).format(language=language), str(code).strip("\n")


_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant", "model", "bot"}
_SYSTEM_ROLES = {"system"}


def text_conversation(messages: Sequence[Mapping[str, Any] | str]) -> list[Pair]:
    """Text-only conversation -> turns.

    Accepts ShareGPT (`from`/`value`), OpenAI (`role`/`content`) messages, or a list of strings that
    alternate user/assistant. A system message is prepended to the next user message; a trailing
    user message without an answer is dropped.
    """
    pairs: list[Pair] = []
    system: list[str] = []
    pending_user: str | None = None
    for position, message in enumerate(messages):
        if isinstance(message, str):
            role, content = ("user" if position % 2 == 0 else "assistant"), message
        else:
            role = str(message.get("from", message.get("role", ""))).lower()
            content = message.get("value", message.get("content", ""))
        content = str(content).strip()
        if role in _SYSTEM_ROLES:
            if content:
                system.append(content)
        elif role in _USER_ROLES:
            pending_user = "\n\n".join([*system, content])
            system = []
        elif role in _ASSISTANT_ROLES:
            if pending_user is None:
                raise ValueError("assistant message without a preceding user message")
            pairs.append((pending_user, content))
            pending_user = None
        else:
            raise ValueError(f"unknown conversation role {role!r}")
    return pairs


def text_instruction(instruction: str, response: str, context: str | None = None) -> list[Pair]:
    """Single-turn text-only instruction (Dolly, MetaMathQA, ...): context, when given, follows the instruction."""
    user = _verbatim(instruction)
    if context and str(context).strip():
        user += "\n\n" + str(context).strip()
    return [(user, _verbatim(response))]


def _verbatim(text: Any) -> str:
    """The text stripped at its ends only (indentation inside answers is content); a null is refused."""
    if text is None:
        raise ValueError("a text field is null")
    return str(text).strip()
