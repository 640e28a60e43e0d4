"""CIDEr without Java: our PTB tokenisation against pycocoevalcap's Java tokenizer, and the scores."""

import shutil

import pytest

from training.evaluation.captions import cider, ptb_tokenize

CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs' toys, and a cat's bowl!",
    'He said "hello" (loudly) - didn\'t he?',
    "A black-and-white photo of U.S. soldiers in 1,000 B.C.",
    "It's 3.5 feet tall; wow... ok",
    "The girl's can't won't I'm you're they'll we've I'd",
    "a & b @ c # d $5 50% e/f [x] {y} <z> `q' 'quoted' ``dq''",
    "Mr. Smith's café costs $3.50.",
    "e-mail: x@y.com",
    "  multiple   spaces\there ",
    "cannot gonna wanna",
    "5pm 10:30 a.m.",
    "A kitchen with a stove, a sink, and a refrigerator.",
    "Two giraffes standing next to each other in a field .",
    "A plate of food: rice, beans & salad.",
    "a dog-- running",
    '"Stop" sign at a 4-way intersection.',
]


@pytest.mark.skipif(shutil.which("java") is None, reason="the reference tokenizer needs Java")
def test_tokenisation_matches_the_java_ptb_tokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    reference = PTBTokenizer().tokenize({i: [{"caption": caption}] for i, caption in enumerate(CAPTIONS)})
    assert [ptb_tokenize(caption) for caption in CAPTIONS] == [reference[i][0] for i in range(len(CAPTIONS))]


def test_tokenisation_worked_examples():
    assert ptb_tokenize("A dog's ball, isn't it?") == "a dog 's ball is n't it"
    assert ptb_tokenize("(left) side") == "-lrb- left -rrb- side"


def test_cider_equals_pycocoevalcap_on_tokenised_captions():
    from pycocoevalcap.cider.cider import Cider

    references = {
        "1": ["A red square on a white background.", "A red box.", "Red square."],
        "2": ["A blue circle.", "A round blue shape.", "A blue disc on white."],
        "3": ["A green square and the word go.", "The word GO beside a green box."],
    }
    predictions = {"1": "A red square.", "2": "A blue square.", "3": "Some text."}
    score, per_item = cider(predictions, references)
    expected, expected_items = Cider().compute_score(
        {k: [ptb_tokenize(r) for r in v] for k, v in references.items()}, {k: [ptb_tokenize(v)] for k, v in predictions.items()}
    )
    assert score == pytest.approx(expected)
    assert [per_item[k] for k in predictions] == pytest.approx(list(expected_items))
    assert per_item["1"] > per_item["2"] > per_item["3"] == 0.0


def test_cider_needs_references():
    with pytest.raises(ValueError):
        cider({"1": "x"}, {"1": []})
