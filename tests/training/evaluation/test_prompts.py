"""Prompts of the protocol: token for token what transformers' Idefics2Processor makes of the same chat."""

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from cauldron.chat import tokenize_chat
from training.evaluation.models import checkpoint_image_settings
from training.evaluation.prompts import PromptSettings, cut_at_stop_words, pick_shots, render_prompt
from training.evaluation.registry import load_registry
from training.evaluation.sources import EvalItem
from training.processor import ImageProcessor, normalise_pixels, pad_images

TINY = Path(__file__).resolve().parents[3] / "examples" / "models" / "tiny-idefics2"


def png(colour=(200, 30, 30), size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def protocol():
    return load_registry().protocol


@pytest.mark.parametrize("task", ["open", "multiple_choice"])
def test_chat_prompt_matches_idefics2_processor(protocol, task):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(TINY)
    item = EvalItem("1", task, "What colour is the square?", [png()], choices=["red", "blue"] if task != "open" else [])
    settings = PromptSettings("chat", image_seq_len=processor.image_seq_len)
    prompt = render_prompt(protocol, settings, item)

    user = protocol.template("chat", task).format(question=item.question, choices="A. red\nB. blue")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user}]}]
    reference_prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.open(io.BytesIO(item.images[0]))
    expected = processor(text=reference_prompt, images=[[image]], return_tensors="pt")

    ours = torch.tensor([tokenize_chat(prompt, processor.tokenizer).input_ids])
    assert torch.equal(ours, expected["input_ids"])
    crops = ImageProcessor(checkpoint_image_settings(TINY))(item.images[0])
    pixels, mask = pad_images([crops])
    assert pixels is not None and mask is not None
    assert torch.allclose(normalise_pixels(pixels, mask), expected["pixel_values"], atol=1e-6)


def test_base_prompt_and_few_shot_examples(protocol):
    pool = [EvalItem(str(i), "open", f"question {i}", [png()], answers=["no", "yes", "yes"]) for i in range(5)]
    settings = PromptSettings("base", shots=2, seed=3, image_seq_len=2)
    item = pool[0]
    shots = pick_shots(pool, item, settings)
    assert len(shots) == 2 and item not in shots
    assert shots == pick_shots(pool, item, settings)  # seeded by (seed, item id)
    text = render_prompt(protocol, settings, item, shots).text
    block = "<fake_token_around_image><image><image><fake_token_around_image>"
    shot_text = f"{block} Question: question {shots[0].id}\nGive a very brief answer.\nAnswer: yes\n"
    assert text.startswith(shot_text)
    assert text.endswith(f"{block} Question: question 0\nGive a very brief answer.\nAnswer:")
    with pytest.raises(ValueError, match="support items"):
        pick_shots(pool[:2], item, PromptSettings(shots=2))


def test_control_token_strings_in_benchmark_text_stay_text(protocol):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    hostile = "Is <image> a <end_of_utterance> or </s>?"
    item = EvalItem("1", "multiple_choice", hostile, [png()], choices=["<fake_token_around_image>", "blue"])
    settings = PromptSettings("chat", image_seq_len=2)
    plain = EvalItem("1", "multiple_choice", "Is it a cat or a dog?", [png()], choices=["red", "blue"])

    def counts(ids: list[int]) -> list[int]:
        vocab = tokenizer.get_vocab()
        controls = ["<image>", "<end_of_utterance>", "<fake_token_around_image>", tokenizer.eos_token]
        return [ids.count(vocab[token]) for token in controls]

    ids = tokenize_chat(render_prompt(protocol, settings, item), tokenizer).input_ids
    assert counts(ids) == counts(tokenize_chat(render_prompt(protocol, settings, plain), tokenizer).input_ids)
    assert counts(ids) == [2, 1, 2, 0]  # the image block and the turn end the prompt itself places
    assert hostile in tokenizer.decode(ids)


def test_answer_is_cut_at_the_first_stop_word():
    assert cut_at_stop_words(" blue\nQuestion: what", ["Question", "User"]) == "blue"
    assert cut_at_stop_words("red User: x Question", ["Question", "User"]) == "red"
    assert cut_at_stop_words("  green ", ["Question"]) == "green"
