"""Chat rendering for Idefics2: the one place that turns a sample into text, tokens and a loss mask.

A sample `{"images": [...], "texts": [{user, assistant, ...}, ...]}` renders exactly as
transformers' Idefics2 processor renders the equivalent messages with its published chat template,
all images going to the first user turn:

    User:<image><image>{user 1}<end_of_utterance>\\n
    Assistant: {assistant 1}<end_of_utterance>\\n
    User: {user 2}<end_of_utterance>\\n
    Assistant: {assistant 2}<end_of_utterance>\\n

Loss is carried by each `" {assistant}<end_of_utterance>"` (and by a final EOS when one is added);
user text, image tokens, role prefixes and the newlines carry none. With `image_seq_len`, every image
expands the way `Idefics2Processor.__call__` expands it, so token ids match the processor's.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
IMAGE_TOKEN = "<image>"
END_OF_UTTERANCE = "<end_of_utterance>"
# In the order Idefics2 adds them to the tokenizer.
SPECIAL_TOKENS = (FAKE_IMAGE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE)
IMAGE_CROPS_WITH_SPLITTING = 5  # four crops and the whole image
IGNORE_INDEX = -100

# The chat template published with the Idefics2 processor, for exporting processors.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{message['role'].capitalize()}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def select_turns(
    texts: Sequence[Mapping[str, Any]], *, shuffle_seed: int | None = None, max_turns: int | None = None
) -> list[tuple[str, str]]:
    """The (user, assistant) turns to render: shuffled when a seed is given, then cut to `max_turns`."""
    turns = [(str(turn["user"]), str(turn["assistant"])) for turn in texts]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(turns)
    if max_turns is not None:
        turns = turns[:max_turns]
    if not turns:
        raise ValueError("a sample needs at least one turn")
    for user, assistant in turns:
        for token in SPECIAL_TOKENS:
            if token in user or token in assistant:
                raise ValueError(f"sample text contains the special token {token}")
    return turns


def to_messages(sample: Mapping[str, Any], *, shuffle_seed: int | None = None, max_turns: int | None = None) -> list[dict[str, Any]]:
    """The sample as transformers chat messages (images as `{"type": "image"}` in the first user turn)."""
    messages: list[dict[str, Any]] = []
    for position, (user, assistant) in enumerate(select_turns(sample["texts"], shuffle_seed=shuffle_seed, max_turns=max_turns)):
        content: list[dict[str, Any]] = []
        if position == 0:
            content.extend({"type": "image"} for _ in sample["images"])
        content.append({"type": "text", "text": user})
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": assistant}]})
    return messages


def image_block(num_images: int, image_seq_len: int, image_splitting: bool = False) -> str:
    """What the processor writes for `num_images` adjacent images (shared boundary tokens collapsed)."""
    crops = num_images * (IMAGE_CROPS_WITH_SPLITTING if image_splitting else 1)
    return FAKE_IMAGE_TOKEN + (IMAGE_TOKEN * image_seq_len + FAKE_IMAGE_TOKEN) * crops


@dataclass(frozen=True)
class RenderedChat:
    text: str
    loss_spans: tuple[tuple[int, int], ...]  # [start, end) character spans that carry loss
    num_images: int

    def loss_text(self) -> str:
        return "".join(self.text[start:end] for start, end in self.loss_spans)


def render_chat(
    sample: Mapping[str, Any],
    *,
    shuffle_seed: int | None = None,
    max_turns: int | None = None,
    image_seq_len: int | None = None,
    image_splitting: bool = False,
) -> RenderedChat:
    """Render a sample as chat text with its loss spans.

    Without `image_seq_len` each image is one `<image>` placeholder (what `apply_chat_template`
    returns); with it, images are expanded as `Idefics2Processor` expands them before tokenizing.
    """
    num_images = len(sample["images"])
    turns = select_turns(sample["texts"], shuffle_seed=shuffle_seed, max_turns=max_turns)
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0

    def emit(piece: str, loss: bool = False) -> None:
        nonlocal length
        if loss:
            spans.append((length, length + len(piece)))
        pieces.append(piece)
        length += len(piece)

    for position, (user, assistant) in enumerate(turns):
        if position == 0 and num_images:
            emit("User:")
            if image_seq_len is None:
                emit(IMAGE_TOKEN * num_images)
            else:
                emit(image_block(num_images, image_seq_len, image_splitting))
                # the processor keeps a word after the closing boundary token apart from it
                if user and not user[0].isspace() and user[0] != "<":
                    emit(" ")
            emit(user)
        else:
            emit("User: " + user)
        emit(END_OF_UTTERANCE + "\nAssistant:")
        emit(" " + assistant + END_OF_UTTERANCE, loss=True)
        emit("\n")
    return RenderedChat("".join(pieces), tuple(spans), num_images)


@dataclass(frozen=True)
class TokenizedChat:
    input_ids: list[int]
    loss_mask: list[bool]

    def labels(self) -> list[int]:
        """Input ids where loss is taken, `IGNORE_INDEX` elsewhere."""
        return [token if keep else IGNORE_INDEX for token, keep in zip(self.input_ids, self.loss_mask, strict=True)]


def tokenize_chat(rendered: RenderedChat, tokenizer: Any, *, add_special_tokens: bool = True, add_eos: bool = False) -> TokenizedChat:
    """Token ids of the rendered text (as the tokenizer itself splits it) and the per-token loss mask.

    A token carries loss when its characters overlap a loss span. Needs a fast tokenizer (offsets).
    `add_eos` appends the tokenizer's EOS, with loss, to end the sample for training.
    """
    encoding = tokenizer(rendered.text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    marks = bytearray(len(rendered.text))
    for start, end in rendered.loss_spans:
        marks[start:end] = b"\x01" * (end - start)
    ids = list(encoding["input_ids"])
    mask = [end > start and any(marks[start:end]) for start, end in encoding["offset_mapping"]]
    if add_eos:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token")
        ids.append(tokenizer.eos_token_id)
        mask.append(True)
    return TokenizedChat(ids, mask)
