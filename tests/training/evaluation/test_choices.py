"""Multiple-choice letters are read deterministically; anything else is unparsed (and wrong)."""

import pytest

from training.evaluation.choices import format_choices, parse_choice

CHOICES = ["cat", "dog", "a red bird", "fish"]


@pytest.mark.parametrize(
    "response, letter",
    [
        ("B", "B"),
        ("B.", "B"),
        (" (C) ", "C"),
        ("D: fish", "D"),
        ("Answer: A", "A"),
        ("The answer is C.", "C"),
        ("answer: b", "B"),
        ("b", "B"),
        ("dog", "B"),
        ("A red bird.", "C"),
        ("A cat", None),  # an article, not a letter
        ("E", None),  # not one of the four
        ("Bird", None),
        ("", None),
        ("I think B", None),
        ("Answer:", None),
    ],
)
def test_parse_choice(response, letter):
    assert parse_choice(response, CHOICES) == letter


def test_text_matching_two_choices_is_unparsed():
    assert parse_choice("same", ["same", "same"]) is None


def test_format_choices():
    assert format_choices(["x", "y"]) == "A. x\nB. y"
    with pytest.raises(ValueError):
        format_choices([])
