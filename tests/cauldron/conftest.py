"""Shared fixtures for the Cauldron tests: synthetic photos and tiny offline-trained tokenizers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

ADDED_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]


def make_photo(seed: int, size: tuple[int, int] = (128, 96), shapes_seed: int | None = None) -> Image.Image:
    """A photo-like RGB image: a smooth gradient with a few blurred shapes, different for each seed.

    `shapes_seed` redraws the shapes over the same background (a near miss of the same scene).
    """
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    coefficients = rng.uniform(-0.8, 0.8, size=(3, 3)) + [0, 0, 0.5]
    channels = [np.clip(255 * (a * x + b * y + c), 0, 255) for a, b, c in coefficients]
    image = Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    if shapes_seed is not None:
        rng = np.random.default_rng([seed, shapes_seed])
    for _ in range(6):
        x0, y0 = rng.integers(0, width - 10), rng.integers(0, height - 10)
        box = (int(x0), int(y0), int(x0 + rng.integers(10, width // 2)), int(y0 + rng.integers(10, height // 2)))
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image.filter(ImageFilter.GaussianBlur(1))


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def train_tokenizer(pre_tokenizer: str):
    """A small BPE tokenizer trained on Python's bundled documentation prose, with Idefics2's added tokens."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    if pre_tokenizer == "metaspace":  # sentencepiece-like, as Mistral's tokenizer
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    else:  # GPT-2 style byte-level
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if pre_tokenizer == "bytelevel" else [],
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(topics.values()), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.add_special_tokens(ADDED_TOKENS)
    return tokenizer


@pytest.fixture(scope="session")
def bare_tokenizer():
    return train_tokenizer("metaspace")
