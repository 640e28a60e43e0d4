"""Our processor against transformers' Idefics2Processor: pixels, masks and token ids; and our labels."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from cauldron.chat import CHAT_TEMPLATE, to_messages
from curation.errors import SampleError
from training.config import ImageConfig
from training.processor import ImageProcessor, Processor, normalise_pixels, pad_images

IGNORE = -100


def image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    return Image.fromarray(pixels, "RGBA").convert(mode)


def encoded(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


# square, wide, tall grayscale, tiny with transparency, large palette image
BATCH = [[image(64, 64), image(200, 50, seed=1)], [image(30, 120, "L", seed=2), image(5, 5, "RGBA", seed=3), image(1200, 700, "P", seed=4)]]


def hf_processor(tokenizer, longest: int, shortest: int, splitting: bool, image_seq_len: int):
    from transformers import Idefics2ImageProcessor, Idefics2Processor

    image_processor = Idefics2ImageProcessor(size={"longest_edge": longest, "shortest_edge": shortest}, do_image_splitting=splitting)
    return Idefics2Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_seq_len, chat_template=CHAT_TEMPLATE)


@pytest.mark.parametrize("longest, shortest, splitting", [(56, 28, False), (56, 28, True), (112, 14, True), (980, 378, False)])
def test_pixels_and_masks_equal_transformers(longest, shortest, splitting):
    from transformers import Idefics2ImageProcessor

    # transformers' annotation omits the nested per-sample lists that Idefics2ImageProcessor accepts
    reference = Idefics2ImageProcessor(size={"longest_edge": longest, "shortest_edge": shortest}, do_image_splitting=splitting)(
        BATCH,  # type: ignore[arg-type]
        return_tensors="pt",
    )
    ours = ImageProcessor(ImageConfig(longest_edge=longest, shortest_edge=shortest, image_splitting=splitting))
    pixel_values, pixel_mask = pad_images([[crop for picture in sample for crop in ours(picture)] for sample in BATCH])
    assert pixel_values is not None and pixel_mask is not None
    assert pixel_values.dtype == torch.uint8  # crops travel as bytes; normalised on the training device
    pixel_values = normalise_pixels(pixel_values, pixel_mask)
    assert pixel_values.shape == reference["pixel_values"].shape
    assert torch.equal(pixel_mask, reference["pixel_attention_mask"])
    assert torch.allclose(pixel_values, reference["pixel_values"], atol=1e-6, rtol=0)


def test_aspect_ratio_is_kept_when_shrinking():
    ours = ImageProcessor(ImageConfig(longest_edge=100, shortest_edge=10))
    (crop,) = ours(image(400, 100))
    assert crop.shape == (3, 25, 100)
    assert len(ImageProcessor(ImageConfig(image_splitting=True))(image(40, 40))) == 5


def turn(user: str, assistant: str) -> dict[str, str]:
    return {"user": user, "assistant": assistant, "source": "test"}


CONVERSATIONS: list[dict[str, Any]] = [
    {"images": [encoded(image(64, 48))], "texts": [turn("What is shown?\nGive a very brief answer.", "Noise.")]},
    {
        "images": [encoded(image(40, 90, seed=1)), encoded(image(120, 30, seed=2))],
        "texts": [
            turn("Are the two images the same?", "No."),
            turn("Which one is taller?", "The first one."),
            turn("Describe both.", "Two random pictures of noise."),
        ],
    },
    {"images": [], "texts": [turn("Write a sentence about Python.", "Python is a programming language.")]},
    {"images": [encoded(image(30, 30, "L", seed=5))], "texts": [turn(" <b>bold</b> question", "Answer: B")]},
]
# No transparent image here: Idefics2Processor flattens images with `load_image` (alpha dropped) before
# its image processor, which would composite them on white; ours composites (tested above).


@pytest.mark.parametrize("splitting", [False, True])
@pytest.mark.parametrize("image_seq_len", [8, 64])
def test_conversation_tokens_and_pixels_equal_transformers(tokenizer, splitting, image_seq_len):
    settings = ImageConfig(longest_edge=56, shortest_edge=28, image_splitting=splitting)
    reference = hf_processor(tokenizer, 56, 28, splitting, image_seq_len)
    ours = Processor(tokenizer, image_seq_len, settings)
    for sample in CONVERSATIONS:
        text = reference.apply_chat_template(to_messages(sample), tokenize=False)
        pictures = [Image.open(io.BytesIO(data)) for data in sample["images"]]
        expected = reference(text=text, images=pictures or None, return_tensors="pt")
        got = ours.encode_conversation(sample)
        # ours ends the sample with EOS for training; the processor (inference) does not
        assert got.input_ids[:-1].tolist() == expected["input_ids"][0].tolist()
        assert int(got.input_ids[-1]) == tokenizer.eos_token_id
        if pictures:
            pixel_values, pixel_mask = pad_images([got.crops])
            assert pixel_values is not None and pixel_mask is not None
            pixel_values = normalise_pixels(pixel_values, pixel_mask)
            assert torch.equal(pixel_values, expected["pixel_values"])
            assert torch.equal(pixel_mask, expected["pixel_attention_mask"])
        assert got.num_images == len(pictures)


def test_pair_rendering_is_the_processor_prompt_plus_eos(tokenizer):
    reference = hf_processor(tokenizer, 56, 28, False, 8)
    ours = Processor(tokenizer, 8, ImageConfig(longest_edge=56, shortest_edge=28))
    picture = encoded(image(50, 40))
    got = ours.encode_document([picture, "A photo of noise."])
    expected = reference(text="<image>A photo of noise.", images=[Image.open(io.BytesIO(picture))])
    assert got.input_ids[:-1].tolist() == expected["input_ids"][0]
    loss_tokens = [int(t) for t, label in zip(got.input_ids, got.labels) if label != IGNORE]
    assert tokenizer.decode(loss_tokens) == "A photo of noise.</s>"


def answer_runs(tokens, labels) -> list[list[int]]:
    runs, current = [], []
    for token, label in zip(tokens.tolist(), labels.tolist()):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def test_multi_turn_labels_cover_answers_only(tokenizer):
    ours = Processor(tokenizer, 8, ImageConfig(longest_edge=56, shortest_edge=28))
    sample = CONVERSATIONS[1]
    got = ours.encode_conversation(sample)
    runs = answer_runs(got.input_ids, got.labels)
    answers = [tokenizer.decode(r).strip() for r in runs]
    # each answer with its end of utterance; the final EOS follows the last turn's unlabelled newline
    assert answers == [
        "No.<end_of_utterance>",
        "The first one.<end_of_utterance>",
        "Two random pictures of noise.<end_of_utterance>",
        "</s>",
    ]
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    labelled = got.labels != IGNORE
    assert not labelled[got.input_ids == image_token].any()
    assert not labelled[0]  # BOS
    user_text = tokenizer.decode(got.input_ids[~labelled])
    assert "Are the two images the same?" in user_text and "Which one is taller?" in user_text


def test_turn_shuffling_is_seeded_and_moves_labels(tokenizer):
    ours = Processor(tokenizer, 8, ImageConfig(longest_edge=56, shortest_edge=28))
    sample = CONVERSATIONS[1]
    orders = set()
    for seed in range(6):
        first = ours.encode_conversation(sample, shuffle_seed=seed)
        again = ours.encode_conversation(sample, shuffle_seed=seed)
        assert torch.equal(first.input_ids, again.input_ids)
        answers = tuple(tokenizer.decode(r).strip() for r in answer_runs(first.input_ids, first.labels))[:-1]
        assert sorted(answers) == sorted(
            ["No.<end_of_utterance>", "The first one.<end_of_utterance>", "Two random pictures of noise.<end_of_utterance>"]
        )
        orders.add(answers)
    assert len(orders) > 1


def test_sft_limits_raise_sample_errors(tokenizer):
    ours = Processor(tokenizer, 8, ImageConfig(longest_edge=56, shortest_edge=28))
    with pytest.raises(SampleError) as error:
        ours.encode_conversation(CONVERSATIONS[1], max_seq_len=20)
    assert error.value.reason == "too_long"
    with pytest.raises(SampleError) as error:
        ours.encode_conversation(CONVERSATIONS[1], max_images=1)
    assert error.value.reason == "too_many_images"
    with pytest.raises(SampleError) as error:
        ours.encode_conversation({"images": [], "texts": []})
    assert error.value.reason == "no_text"


def test_control_strings_in_conversations_and_documents_stay_text(tokenizer):
    ours = Processor(tokenizer, 8, ImageConfig(longest_edge=56, shortest_edge=28))
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    text = "an <image> and <fake_token_around_image> with </s><s><end_of_utterance> inside"
    got = ours.encode_conversation({"images": [encoded(image(20, 20))], "texts": [turn(text, text)]})
    assert got.num_images == 1 and len(got.crops) == 1
    assert int((got.input_ids == image_token).sum()) == 8
    assert int((got.input_ids == tokenizer.eos_token_id).sum()) == 1
    assert int((got.input_ids == tokenizer.bos_token_id).sum()) == 1
    document = ours.encode_document([text, encoded(image(20, 20)), "<ima<image>ge>"])
    assert document.num_images == 1
    assert int((document.input_ids == image_token).sum()) == 8
    assert tokenizer.decode(document.input_ids[document.labels != IGNORE]).endswith("<ima<image>ge></s>")


def test_documents_truncate_between_image_runs(tokenizer):
    ours = Processor(tokenizer, 8, ImageConfig(longest_edge=56, shortest_edge=28))
    picture = encoded(image(40, 40))
    nodes: list[str | bytes] = ["An opening paragraph.", picture, picture, "Text between images.", picture, "The end."]
    full = ours.encode_document(nodes)
    image_token, fake = tokenizer.convert_tokens_to_ids(["<image>", "<fake_token_around_image>"])
    assert full.num_images == 3 and int((full.input_ids == image_token).sum()) == 24
    for limit in range(8, len(full) + 1):
        cut = ours.encode_document(nodes, max_seq_len=limit)
        assert len(cut) <= limit
        assert torch.equal(cut.input_ids, full.input_ids[: len(cut)])
        assert int((cut.input_ids == image_token).sum()) == 8 * cut.num_images
        assert len(cut.crops) == cut.num_images
        assert cut.images_left_out == ({"max_seq_len": 3 - cut.num_images} if cut.num_images < 3 else {})
        if cut.num_images:  # every kept image run is closed
            last_image = int(torch.nonzero(cut.input_ids == image_token)[-1])
            assert int(cut.input_ids[last_image + 1]) == fake


def test_documents_drop_broken_images(tokenizer):
    ours = Processor(tokenizer, 8, ImageConfig(longest_edge=56, shortest_edge=28))
    got = ours.encode_document(["Text with <image> and </s> inside.", b"not an image", encoded(image(20, 20))])
    assert got.num_images == 1 and got.images_left_out == {"decode_error": 1}
    limited = ours.encode_document(["Three pictures.", *[encoded(image(20, 20))] * 3, b"not an image"], max_images=1)
    assert limited.num_images == 1 and limited.images_left_out == {"max_images": 3}  # past the limit: not even decoded
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    assert int((got.input_ids == image_token).sum()) == 8
    assert int((got.input_ids == tokenizer.eos_token_id).sum()) == 1
    with pytest.raises(SampleError):
        ours.encode_document([encoded(image(20, 20))])
