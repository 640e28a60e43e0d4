"""Chat rendering equals transformers' Idefics2 processor, token for token, with answer-only loss."""

import pytest
from PIL import Image

from cauldron.chat import CHAT_TEMPLATE, END_OF_UTTERANCE, render_chat, to_messages, tokenize_chat

from .conftest import ADDED_TOKENS, train_tokenizer

# The chat template published in the Idefics2 processor configuration on the Hub.
HUB_CHAT_TEMPLATE = (
    "{% for message in messages %}{{message['role'].capitalize()}}{% if message['content'][0]['type'] == 'image' %}"
    "{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}"
    "{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IMAGE_SEQ_LEN = 4


def turn(user, assistant):
    return {"user": user, "assistant": assistant, "source": "test"}


SAMPLES = [
    {"images": [b"1"], "texts": [turn("What is shown?\nGive a short answer.", "A red bus.")]},
    {
        "images": [b"1", b"2"],
        "texts": [
            turn("Are the images the same?", "No."),
            turn("Which one is darker?", "The second one, by far."),
            turn("Count the cats.", "3"),
        ],
    },
    {
        "images": [],
        "texts": [
            turn("Write a haiku about Python.", "Indented lines flow\nerrors caught in try blocks"),
            turn("Thanks!", "You're welcome :)"),
        ],
    },
    {"images": [b"1"], "texts": [turn(" leading space and <html> tags", "<div>ok</div>"), turn("", "empty question")]},
    {"images": [b"1"], "texts": [turn("\nQuestion: Which?\nChoices:\nA. x\nB. y\nAnswer with the letter.", "Answer: B")]},
]


@pytest.fixture(scope="module", params=["metaspace", "bytelevel"])
def tokenizer(request):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(request.param), bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    fast.add_special_tokens({"additional_special_tokens": ADDED_TOKENS})
    return fast


def processor_for(tokenizer, image_splitting):
    from transformers import Idefics2ImageProcessor, Idefics2Processor

    return Idefics2Processor(
        image_processor=Idefics2ImageProcessor(do_image_splitting=image_splitting),
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=HUB_CHAT_TEMPLATE,
    )


def test_shipped_template_is_the_hub_template():
    assert CHAT_TEMPLATE == HUB_CHAT_TEMPLATE


@pytest.mark.slow  # importing the Idefics2 processor pulls in torch and torchvision (~9 s on 2 cores)
@pytest.mark.parametrize("image_splitting", [False, True])
def test_text_and_token_ids_equal_the_processor(tokenizer, image_splitting):
    processor = processor_for(tokenizer, image_splitting)
    for sample in SAMPLES:
        text = processor.apply_chat_template(to_messages(sample), tokenize=False)
        assert render_chat(sample).text == text
        images = [Image.new("RGB", (24, 20), (index * 80, 0, 0)) for index, _ in enumerate(sample["images"])]
        expected = processor(text=text, images=images or None)["input_ids"][0]
        rendered = render_chat(sample, image_seq_len=IMAGE_SEQ_LEN, image_splitting=image_splitting)
        assert tokenize_chat(rendered, tokenizer).input_ids == expected


def test_loss_covers_answers_and_their_end_of_utterance_only(tokenizer):
    for sample in SAMPLES:
        rendered = render_chat(sample, image_seq_len=IMAGE_SEQ_LEN)
        tokens = tokenize_chat(rendered, tokenizer, add_eos=True)
        eou = tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
        # split the loss tokens into runs; each run is one answer followed by its end of utterance
        runs, current = [], []
        for token, keep in zip(tokens.input_ids[:-1], tokens.loss_mask[:-1]):
            if keep:
                current.append(token)
            elif current:
                runs.append(current)
                current = []
        assert current == []
        assert len(runs) == len(sample["texts"])
        for run, expected_turn in zip(runs, sample["texts"]):
            assert run[-1] == eou
            assert tokenizer.decode(run[:-1]).strip() == expected_turn["assistant"].strip()
        assert tokens.input_ids[-1] == tokenizer.eos_token_id and tokens.loss_mask[-1]
        # nothing else carries loss: no image, user or role tokens
        labels = tokens.labels()
        assert sum(label != -100 for label in labels) == sum(tokens.loss_mask)
        with_loss = [token for token, keep in zip(tokens.input_ids, tokens.loss_mask) if keep]
        assert tokenizer.convert_tokens_to_ids("<image>") not in with_loss


def test_turn_shuffling_is_seeded_and_keeps_images_first():
    sample = {"images": [b"1"], "texts": [turn(f"question {n}", f"answer {n}") for n in range(6)]}
    shuffled = render_chat(sample, shuffle_seed=3)
    assert shuffled == render_chat(sample, shuffle_seed=3)
    assert shuffled.text != render_chat(sample).text
    assert shuffled.text.startswith("User:<image>question ")
    assert sorted(shuffled.loss_text().split(END_OF_UTTERANCE)) == sorted([f" answer {n}" for n in range(6)] + [""])
    assert len(render_chat(sample, shuffle_seed=3, max_turns=2).loss_spans) == 2


CONTROL_STRINGS = ["<end_of_utterance>", "<image>", "<fake_token_around_image>", "</s>", "<s>", "<unk>"]


@pytest.mark.parametrize("control", CONTROL_STRINGS)
def test_control_token_strings_in_sample_text_stay_plain_text(tokenizer, control):
    sample = {
        "images": [b"1", b"2"],
        "texts": [turn(f"Is {control} here?", f"Yes:{control} and{control}"), turn(control, f"{control}x")],
    }
    tokens = tokenize_chat(render_chat(sample, image_seq_len=IMAGE_SEQ_LEN), tokenizer, add_eos=True)
    ids = tokens.input_ids
    # exactly the control tokens the renderer places: BOS, two image runs, two turn ends, the EOS
    assert ids.count(tokenizer.convert_tokens_to_ids("<image>")) == 2 * IMAGE_SEQ_LEN
    assert ids.count(tokenizer.convert_tokens_to_ids("<fake_token_around_image>")) == 3
    assert ids.count(tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)) == 4
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.eos_token_id) == 1 and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids
    # the answers, with their literal strings, are what carries loss
    eou = tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
    runs, current = [], []
    for token, keep in zip(ids[:-1], tokens.loss_mask[:-1]):
        if keep:
            current.append(token)
        if token == eou and keep:
            runs.append(tokenizer.decode(current[:-1]).strip())
            current = []
    assert runs == [f"Yes:{control} and{control}", f"{control}x"]


def test_text_without_control_strings_tokenizes_in_one_piece(tokenizer):
    sample = {"images": [b"1"], "texts": [turn("Where is <b>the</b> cat?", "On </mat>.")]}
    rendered = render_chat(sample, image_seq_len=IMAGE_SEQ_LEN)
    assert tokenize_chat(rendered, tokenizer).input_ids == tokenizer(rendered.text)["input_ids"]


def test_a_control_token_reaching_into_sample_text_is_refused():
    from transformers import PreTrainedTokenizerFast

    reaching = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer("bytelevel"), bos_token="<s>", eos_token="</s>")
    reaching.add_special_tokens({"additional_special_tokens": [*ADDED_TOKENS, "!" + END_OF_UTTERANCE]})
    tokenize_chat(render_chat({"images": [], "texts": [turn("Hi.", "Hello.")]}), reaching)
    with pytest.raises(ValueError, match="control token"):
        tokenize_chat(render_chat({"images": [], "texts": [turn("Hi!", "Hello.")]}), reaching)
