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

Only the renderer places control tokens. A control-token string inside the sample's own text (one of
the three Idefics2 tokens or any special token of the tokenizer, e.g. `<image>` or `</s>` in an
answer) is tokenized as plain text, as transformers does with `sanitize_control_tokens=True`; text
without such strings tokenizes exactly as the processor tokenizes it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
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
    data_spans: tuple[tuple[int, int], ...]  # [start, end) spans of sample text: never control tokens

    def loss_text(self) -> str:
        return "".join(self.text[start:end] for start, end in self.loss_spans)


@dataclass
class TextBuilder:
    """Rendered text built piece by piece: adjacent loss pieces make one loss span, and pieces that
    come from the sample are marked as data."""

    pieces: list[str] = field(default_factory=list)
    loss_spans: list[tuple[int, int]] = field(default_factory=list)
    data_spans: list[tuple[int, int]] = field(default_factory=list)
    length: int = 0

    def add(self, piece: str, *, loss: bool = False, data: bool = False) -> None:
        start, end = self.length, self.length + len(piece)
        if loss and self.loss_spans and self.loss_spans[-1][1] == start:
            self.loss_spans[-1] = (self.loss_spans[-1][0], end)
        elif loss:
            self.loss_spans.append((start, end))
        if data and piece:
            self.data_spans.append((start, end))
        self.pieces.append(piece)
        self.length = end

    def build(self, num_images: int) -> RenderedChat:
        return RenderedChat("".join(self.pieces), tuple(self.loss_spans), num_images, tuple(self.data_spans))


def render_chat(
    sample: Mapping[str, Any],
    *,
    shuffle_seed: int | None = None,
    max_turns: int | None = None,
    image_seq_len: int | None = None,
    image_splitting: bool = False,
) -> RenderedChat:
    """Render a sample as chat text with its loss spans and the spans of its own text.

    Without `image_seq_len` each image is one `<image>` placeholder (what `apply_chat_template`
    returns); with it, images are expanded as `Idefics2Processor` expands them before tokenizing.
    """
    num_images = len(sample["images"])
    turns = select_turns(sample["texts"], shuffle_seed=shuffle_seed, max_turns=max_turns)
    out = TextBuilder()
    for position, (user, assistant) in enumerate(turns):
        if position == 0 and num_images:
            out.add("User:")
            if image_seq_len is None:
                out.add(IMAGE_TOKEN * num_images)
            else:
                out.add(image_block(num_images, image_seq_len, image_splitting))
                # the processor keeps a word after the closing boundary token apart from it
                if user and not user[0].isspace() and user[0] != "<":
                    out.add(" ")
        else:
            out.add("User: ")
        out.add(user, data=True)
        out.add(END_OF_UTTERANCE + "\nAssistant:")
        out.add(" ", loss=True)
        out.add(assistant, loss=True, data=True)
        out.add(END_OF_UTTERANCE, loss=True)
        out.add("\n")
    return out.build(num_images)


@dataclass(frozen=True)
class TokenizedChat:
    input_ids: list[int]
    loss_mask: list[bool]

    def labels(self) -> list[int]:
        """Input ids where loss is taken, `IGNORE_INDEX` elsewhere."""
        return [token if keep else IGNORE_INDEX for token, keep in zip(self.input_ids, self.loss_mask, strict=True)]


def tokenize_chat(rendered: RenderedChat, tokenizer: Any, *, add_special_tokens: bool = True, add_eos: bool = False) -> TokenizedChat:
    """Token ids of the rendered text and the per-token loss mask.

    The text is split as the tokenizer itself splits it, except that control-token strings inside the
    data spans are tokenized as plain text. A token carries loss when its characters overlap a loss
    span. Needs a fast tokenizer (offsets). `add_eos` appends the tokenizer's EOS, with loss, to end the
    sample for training. Raises ValueError when sample text would still become a control token.
    """
    controls = control_tokens(tokenizer)
    pattern = _control_pattern(tuple(controls))
    text = rendered.text
    literals = [match.span() for start, end in rendered.data_spans for match in pattern.finditer(text, start, end)]
    ids, offsets = _encode_pieces(tokenizer, text, literals, add_special_tokens)
    _refuse_control_tokens_from_data(rendered, tokenizer, ids, offsets, controls)
    marks = _char_marks(len(text), rendered.loss_spans)
    mask = [end > start and any(marks[start:end]) for start, end in offsets]
    if add_eos:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token")
        ids.append(tokenizer.eos_token_id)
        mask.append(True)
    return TokenizedChat(ids, mask)


def control_tokens(tokenizer: Any) -> dict[str, int]:
    """Strings that only the renderer may turn into tokens, with their ids: the Idefics2 tokens and every
    special added token except whitespace ones (which chat text writes as ordinary text). Non-special
    added tokens are vocabulary, which sample text may use."""
    special = {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
    return {
        content: token_id
        for content, token_id in tokenizer.added_tokens_encoder.items()
        if (content in special or content in SPECIAL_TOKENS) and not content.isspace()
    }


def data_text_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of sample text on its own as `tokenize_chat` encodes it: control-token strings as plain text."""
    literals = [match.span() for match in _control_pattern(tuple(control_tokens(tokenizer))).finditer(text)]
    return _encode_pieces(tokenizer, text, literals, add_special_tokens=False)[0]


@lru_cache(maxsize=16)
def _control_pattern(controls: tuple[str, ...]) -> re.Pattern[str]:
    """A regex for any of `controls`, longest first (a token before the tokens it contains)."""
    return re.compile("|".join(re.escape(token) for token in sorted(controls, key=len, reverse=True)) or "(?!)")


def _char_marks(length: int, spans: Sequence[tuple[int, int]]) -> bytearray:
    marks = bytearray(length)
    for start, end in spans:
        marks[start:end] = b"\x01" * (end - start)
    return marks


def _encode_pieces(
    tokenizer: Any, text: str, literals: Sequence[tuple[int, int]], add_special_tokens: bool
) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and character offsets of `text`, each literal span encoded as plain text.

    Without literals this is one plain call of the tokenizer. With them the text is encoded piece by
    piece, each piece after the first behind a newline that is then dropped (so that SentencePiece does
    not prefix it with a space, as inside the whole text it would not), and the tokens the tokenizer
    adds around a text (BOS) are put around the whole.
    """
    if not literals:
        return _encode(tokenizer, text, add_special_tokens=add_special_tokens, as_text=False)
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    bounds = [0, *(position for span in literals for position in span), len(text)]
    literal_starts = {start for start, _ in literals}
    for start, end in zip(bounds, bounds[1:], strict=False):
        if start == end:
            continue
        piece_ids, piece_offsets = _encode_piece(tokenizer, text[start:end], as_text=start in literal_starts, first=start == 0)
        ids += piece_ids
        offsets += [(start + a, start + b) for a, b in piece_offsets]
    if add_special_tokens:
        prefix, suffix = _added_around_text(tokenizer)
        ids = prefix + ids + suffix
        offsets = [(0, 0)] * len(prefix) + offsets + [(len(text), len(text))] * len(suffix)
    return ids, offsets


def _encode(tokenizer: Any, text: str, *, add_special_tokens: bool, as_text: bool) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and offsets; `as_text` keeps special-token strings plain text."""
    encoding = tokenizer(text, add_special_tokens=add_special_tokens, split_special_tokens=as_text, return_offsets_mapping=True)
    return list(encoding["input_ids"]), [tuple(offset) for offset in encoding["offset_mapping"]]


def _encode_piece(tokenizer: Any, piece: str, *, as_text: bool, first: bool) -> tuple[list[int], list[tuple[int, int]]]:
    """A piece of a longer text, encoded as it would be in place."""
    if first:
        return _encode(tokenizer, piece, add_special_tokens=False, as_text=as_text)
    newline, _ = _encode(tokenizer, "\n", add_special_tokens=False, as_text=False)
    ids, offsets = _encode(tokenizer, "\n" + piece, add_special_tokens=False, as_text=as_text)
    if ids[: len(newline)] != newline:
        return _encode(tokenizer, piece, add_special_tokens=False, as_text=as_text)
    return ids[len(newline) :], [(max(a - 1, 0), max(b - 1, 0)) for a, b in offsets[len(newline) :]]


def _added_around_text(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after a text when asked for special tokens."""
    bare, _ = _encode(tokenizer, "x", add_special_tokens=False, as_text=False)
    full, _ = _encode(tokenizer, "x", add_special_tokens=True, as_text=False)
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise ValueError("cannot find the text among the tokenizer's added special tokens")


def _refuse_control_tokens_from_data(
    rendered: RenderedChat, tokenizer: Any, ids: Sequence[int], offsets: Sequence[tuple[int, int]], controls: Mapping[str, int]
) -> None:
    """Raise ValueError when a control token covers sample text; the unknown token may, as plain text
    yields it for characters outside the vocabulary."""
    forbidden = set(controls.values()) - {tokenizer.unk_token_id}
    data = _char_marks(len(rendered.text), rendered.data_spans)
    for token_id, (start, end) in zip(ids, offsets, strict=True):
        if token_id in forbidden and end > start and any(data[start:end]):
            raise ValueError(f"sample text becomes the control token {rendered.text[start:end]!r}")
