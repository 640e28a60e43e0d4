"""Images and text to model inputs, as transformers' `Idefics2Processor` makes them.

Images (`ImageProcessor`): decoded behind a pixel cap, converted to RGB (transparency composited on
white), optionally split into four quadrant crops plus the whole image, each resized on its own
(aspect ratio kept: a side above `longest_edge` is brought down to it, then each side is raised to at
least `shortest_edge`), bilinear with antialiasing. `pad_images` pads a batch to the largest crop and
crop count and returns `pixel_attention_mask`; `normalise_pixels` then rescales to [0, 1] and
normalises with mean = std = 0.5, leaving padding at 0. Crops stay uint8 until that last step, which
runs on the training device: batches cross from DataLoader workers at a quarter of the float32 size.
Together this is `Idefics2ImageProcessor` exactly; note that `Idefics2Processor.__call__` converts
images to RGB by dropping transparency before its image processor sees them, where we composite on white.

Text (`Processor`): every image becomes `<fake_token_around_image>` + `image_seq_len` x `<image>` +
`<fake_token_around_image>` (five such runs with splitting; adjacent runs share their boundary token).

- SFT samples (`{"images", "texts": [{user, assistant, source}]}`) are rendered by `cauldron.chat`:
  `User:<image>...{user}<end_of_utterance>\\nAssistant: {answer}<end_of_utterance>\\n` turns, optionally
  shuffled; loss on each ` {answer}<end_of_utterance>` and on the final EOS. Longer than the source's
  `max_seq_len`: dropped, as in the original training.
- Pre-training samples (interleaved documents, image-text pairs, PDF pages) are a sequence of text and
  image nodes rendered in order: `<s>` + nodes + `</s>`, an image as its token run, a text node as is
  (two adjacent text nodes separated by a blank line; a word right after an image run separated by a
  space, as the processor does). Loss on the text and the final EOS; none on BOS or image runs.
  Longer than `max_seq_len`: truncated, never inside an image run (cut images are dropped).

Control tokens come only from the rendering: a control-token string in a sample's text (`<image>`,
`<end_of_utterance>`, `</s>`, ...) is tokenized as plain text (`cauldron.chat.tokenize_chat`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as tvF

from cauldron.chat import (
    END_OF_UTTERANCE,
    FAKE_IMAGE_TOKEN,
    IGNORE_INDEX,
    IMAGE_CROPS_WITH_SPLITTING,
    IMAGE_TOKEN,
    RenderedChat,
    TextBuilder,
    TokenizedChat,
    image_block,
    render_chat,
    tokenize_chat,
)
from curation.errors import SampleError, UserError
from curation.images import open_image
from training.config import ImageConfig

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
TEXT_NODE_SEPARATOR = "\n\n"


# ---------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on white."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resized_size(height: int, width: int, longest_edge: int, shortest_edge: int) -> tuple[int, int]:
    """Bring the longer side down to `longest_edge` (aspect kept, truncated), then each side up to `shortest_edge`."""
    if width >= height and width > longest_edge:
        height, width = int(longest_edge / (width / height)), longest_edge
    elif height > width and height > longest_edge:
        height, width = longest_edge, int(longest_edge * (width / height))
    return max(height, shortest_edge), max(width, shortest_edge)


class ImageProcessor:
    """One image -> its resized crops as uint8 (3, h, w) tensors (one crop, or five with splitting)."""

    def __init__(self, settings: ImageConfig) -> None:
        self.settings = settings
        self.crops_per_image = IMAGE_CROPS_WITH_SPLITTING if settings.image_splitting else 1

    def decode(self, data: bytes) -> Image.Image:
        """Decoded image; raises SampleError for empty, corrupt or over-cap images."""
        return open_image(data, self.settings.max_pixels)

    def __call__(self, image: Image.Image | bytes) -> list[torch.Tensor]:
        if isinstance(image, (bytes, bytearray)):
            image = self.decode(bytes(image))
        pixels = torch.from_numpy(np.array(to_rgb(image), dtype=np.uint8)).permute(2, 0, 1).contiguous()
        crops = split_image(pixels) if self.settings.image_splitting else [pixels]
        return [self.resize(crop) for crop in crops]

    def resize(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        size = resized_size(height, width, self.settings.longest_edge, self.settings.shortest_edge)
        if tuple(pixels.shape[-2:]) == size:
            return pixels
        return tvF.resize(pixels, list(size), interpolation=tvF.InterpolationMode.BILINEAR, antialias=True)


def split_image(pixels: torch.Tensor) -> list[torch.Tensor]:
    """Four quadrant crops (top-left, top-right, bottom-left, bottom-right) and the whole image."""
    height, width = pixels.shape[-2:]
    mid_h, mid_w = height // 2, width // 2
    return [pixels[:, :mid_h, :mid_w], pixels[:, :mid_h, mid_w:], pixels[:, mid_h:, :mid_w], pixels[:, mid_h:, mid_w:], pixels]


def pad_images(samples: Sequence[Sequence[torch.Tensor]]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """uint8 crops per sample -> `pixel_values` (batch, crops, 3, H, W) uint8, zero-padded bottom/right
    and to the largest crop count, and `pixel_attention_mask` (batch, crops, H, W) with 1 on real pixels.
    (None, None) when no sample has an image."""
    crops = [crop for sample in samples for crop in sample]
    if not crops:
        return None, None
    height = max(crop.shape[-2] for crop in crops)
    width = max(crop.shape[-1] for crop in crops)
    count = max(len(sample) for sample in samples)
    pixel_values = torch.zeros(len(samples), count, 3, height, width, dtype=torch.uint8)
    pixel_mask = torch.zeros(len(samples), count, height, width, dtype=torch.long)
    for i, sample in enumerate(samples):
        for j, crop in enumerate(sample):
            h, w = crop.shape[-2:]
            pixel_values[i, j, :, :h, :w] = crop
            pixel_mask[i, j, :h, :w] = 1
    return pixel_values, pixel_mask


def normalise_pixels(pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor) -> torch.Tensor:
    """Padded uint8 pixels -> float32 `(x / 255 - mean) / std` on real pixels and 0 on padding, which is
    what the model reads (an all-zero crop is a padding image)."""
    mean = torch.tensor(IMAGE_MEAN, device=pixel_values.device).mul(255).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=pixel_values.device).mul(255).view(3, 1, 1)
    values = (pixel_values.float() - mean) / std
    return values.masked_fill_(~pixel_attention_mask.bool().unsqueeze(2), 0.0)


# ---------------------------------------------------------------------------------------------------
# Text and images together
# ---------------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    """One training sample (or several packed): token ids, labels (-100 where no loss), image crops."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    crops: list[torch.Tensor] = field(default_factory=list)
    num_images: int = 0
    source: str = ""
    position_ids: torch.Tensor | None = None  # packed: restarting at 0 for each sample; None: 0, 1, 2, ...
    images_left_out: dict[str, int] = field(default_factory=dict)  # a document's images not used, per reason

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class Processor:
    """Renders and tokenizes samples for a tokenizer that carries Idefics2's three added tokens."""

    def __init__(self, tokenizer: Any, image_seq_len: int, images: ImageConfig) -> None:
        missing = [t for t in (FAKE_IMAGE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE) if t not in tokenizer.get_vocab()]
        if missing:
            raise UserError(f"the tokenizer lacks the Idefics2 tokens {missing}; add them as special tokens")
        if tokenizer.eos_token_id is None:
            raise UserError("the tokenizer has no EOS token")
        self.tokenizer = tokenizer
        self.image_seq_len = image_seq_len
        self.images = images
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.fake_token_id = tokenizer.convert_tokens_to_ids(FAKE_IMAGE_TOKEN)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._image_processors: dict[tuple, ImageProcessor] = {}

    def image_processor(self, settings: ImageConfig | None = None) -> ImageProcessor:
        settings = settings or self.images
        key = dataclasses.astuple(settings)
        if key not in self._image_processors:
            self._image_processors[key] = ImageProcessor(settings)
        return self._image_processors[key]

    def tokens_per_image(self, settings: ImageConfig) -> int:
        return self.image_seq_len * self.image_processor(settings).crops_per_image

    # -- SFT ------------------------------------------------------------------------------------------

    def encode_conversation(
        self,
        sample: Mapping[str, Any],
        *,
        settings: ImageConfig | None = None,
        shuffle_seed: int | None = None,
        max_turns: int | None = None,
        max_seq_len: int | None = None,
        max_images: int | None = None,
    ) -> Encoded:
        """A Cauldron sample (images as bytes or PIL images) with answer-only labels.

        Raises SampleError: `no_text` (no turn), `special_token` (sample text that would still become a
        control token), `too_many_images`, `too_long`, or an image decode reason.
        """
        settings = settings or self.images
        images = list(sample["images"])
        if max_images is not None and len(images) > max_images:
            raise SampleError("too_many_images", f"{len(images)} images, over {max_images}")
        try:
            rendered = render_chat(
                sample,
                shuffle_seed=shuffle_seed,
                max_turns=max_turns,
                image_seq_len=self.image_seq_len,
                image_splitting=settings.image_splitting,
            )
        except ValueError as error:
            raise SampleError("no_text", str(error)) from None
        tokens = self._tokenize(rendered)
        if max_seq_len is not None and len(tokens.input_ids) > max_seq_len:
            raise SampleError("too_long", f"{len(tokens.input_ids)} tokens, over {max_seq_len}")
        processor = self.image_processor(settings)
        crops = [crop for image in images for crop in processor(image)]
        return Encoded(torch.tensor(tokens.input_ids), torch.tensor(tokens.labels()), crops, len(images))

    # -- pre-training ---------------------------------------------------------------------------------

    def encode_document(
        self,
        nodes: Sequence[str | bytes | Image.Image],
        *,
        settings: ImageConfig | None = None,
        max_seq_len: int | None = None,
        max_images: int | None = None,
    ) -> Encoded:
        """Text and image nodes in order, loss on the text and the final EOS.

        Images that fail to decode (counted under their SampleError reason), images past `max_images`
        (`max_images`) and images cut by truncation (`max_seq_len`) are left out and counted in
        `images_left_out`. Raises SampleError: `no_text` when no text remains, `special_token` as
        `encode_conversation`.
        """
        settings = settings or self.images
        kept, left_out = self._document_nodes(nodes, self.image_processor(settings), max_images)
        rendered = self._render_document(kept, settings.image_splitting)
        if not rendered.loss_spans:
            raise SampleError("no_text", "no text node left")
        tokens = self._tokenize(rendered)
        crops = [crop for node in kept if not isinstance(node, str) for crop in node]
        encoded = Encoded(torch.tensor(tokens.input_ids), torch.tensor(tokens.labels()), crops, rendered.num_images)
        if max_seq_len is not None and len(encoded) > max_seq_len:
            encoded = self._truncate(encoded, max_seq_len, settings)
            if not bool((encoded.labels != IGNORE_INDEX).any()):
                raise SampleError("no_text", "no text within max_seq_len")
            left_out["max_seq_len"] += rendered.num_images - encoded.num_images
        encoded.images_left_out = {reason: count for reason, count in left_out.items() if count}
        return encoded

    def _document_nodes(
        self, nodes: Sequence[str | bytes | Image.Image], processor: ImageProcessor, max_images: int | None
    ) -> tuple[list[str | list[torch.Tensor]], Counter[str]]:
        """The nodes that stay, in order: non-empty texts and images as their crops; and the images left
        out, per reason (the decode error's, or `max_images`)."""
        kept: list[str | list[torch.Tensor]] = []
        left_out: Counter[str] = Counter()
        images = 0
        for node in nodes:
            if isinstance(node, str):
                if node:
                    kept.append(node)
                continue
            if max_images is not None and images >= max_images:
                left_out["max_images"] += 1
                continue
            try:
                kept.append(processor(node))
            except SampleError as error:
                left_out[error.reason] += 1
                continue
            images += 1
        return kept, left_out

    def _render_document(self, nodes: list[str | list[torch.Tensor]], image_splitting: bool) -> RenderedChat:
        """The document as text with its loss spans: each run of images as one token block, texts as they
        are, two adjacent texts separated by a blank line (with loss), a text right after images by a space
        unless it starts with one or with a tag."""
        out = TextBuilder()
        num_images = 0
        for is_text, run in groupby(nodes, key=lambda node: isinstance(node, str)):
            if not is_text:
                images = len(list(run))
                out.add(image_block(images, self.image_seq_len, image_splitting))
                num_images += images
                continue
            for index, text in enumerate(cast(Iterator[str], run)):
                if index:
                    out.add(TEXT_NODE_SEPARATOR, loss=True)
                elif out.length and not text[0].isspace() and text[0] != "<":  # a later run of texts follows images
                    out.add(" ")
                out.add(text, loss=True, data=True)
        return out.build(num_images)

    def _tokenize(self, rendered: RenderedChat) -> TokenizedChat:
        """Tokens with BOS and a final EOS; sample text that would become a control token raises SampleError."""
        try:
            return tokenize_chat(rendered, self.tokenizer, add_eos=True)
        except ValueError as error:
            raise SampleError("special_token", str(error)) from None

    def _truncate(self, encoded: Encoded, max_len: int, settings: ImageConfig) -> Encoded:
        """Cut to `max_len` tokens, moving the cut before an image run it would split or leave unclosed;
        the crops of cut images go too."""
        input_ids, tokens_per_image = encoded.input_ids, self.tokens_per_image(settings)
        cut = max_len
        is_image = input_ids[:cut] == self.image_token_id
        image_tokens = int(is_image.sum())
        kept, partial = divmod(image_tokens, tokens_per_image)
        if not partial and kept and int(input_ids[cut - 1]) == self.image_token_id:
            kept, partial = kept - 1, tokens_per_image  # complete but for its closing boundary token
        if partial:
            first_partial = int(torch.nonzero(is_image)[kept * tokens_per_image])
            # drop the partial image's opening boundary token unless it closes the previous image
            opening = first_partial - 1
            shared = opening > 0 and int(input_ids[opening - 1]) == self.image_token_id
            cut = first_partial if shared else opening
        crops = encoded.crops[: kept * self.image_processor(settings).crops_per_image]
        return Encoded(input_ids[:cut], encoded.labels[:cut], crops, kept)
