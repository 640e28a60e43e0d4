"""VQA accuracy: the answer normalisation's rules and corner cases, and the leave-one-out average."""

import pytest

from training.evaluation.vqa_accuracy import normalise_answer, strip_punctuation, vqa_accuracy


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Two dogs.", "2 dogs"),  # number word, final period
        ("The cat", "cat"),  # article
        ("an apple a day", "apple day"),
        ("a", ""),
        ("None", "0"),  # `none` is a number word
        ("dont", "don't"),  # contraction gets its apostrophe
        ("whats up", "what's up"),
        ("Im here", "im here"),  # the table's capitalised keys never match after lower-casing
        ("1,000", "1000"),  # a comma between digits: every punctuation mark is deleted
        ("yes, it is", "yes it is"),  # mark next to a space: deleted
        ("black/white", "black white"),  # mark between letters: replaced by a space
        ("hello - world", "hello world"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("U.S.A.", "usa"),
        ("what's", "what's"),  # apostrophes are not punctuation here
        ("  yes\n", "yes"),
        ("left\tright", "left right"),
        ("(10)", "10"),
        ("t-shirt!", "t shirt"),
        ("12:30", "12:30"),  # colons are kept
    ],
)
def test_normalisation_worked_examples(raw, expected):
    assert normalise_answer(raw) == expected


def test_comma_between_digits_switches_every_mark_to_deletion():
    assert strip_punctuation("1,5-2") == "152"
    assert strip_punctuation("a-b") == "a b"


def test_at_most_32_periods_are_removed_as_in_the_reference_script():
    assert strip_punctuation("." * 33) == "."


@pytest.mark.parametrize("matches, accuracy", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_average_of_min_matches_over_three(matches, accuracy):
    answers = ["cat"] * matches + ["dog"] * (10 - matches)
    assert vqa_accuracy("cat", answers) == pytest.approx(accuracy)


def test_prediction_and_answers_are_normalised_before_matching():
    assert vqa_accuracy("Two.", ["2"] * 10) == pytest.approx(1.0)
    assert vqa_accuracy("Yes", ["yes"] * 10) == pytest.approx(1.0)  # the reference script would give 0 here
    assert vqa_accuracy("a red car", ["red car", "car", "red car", "red", "red car", "car", "car", "red", "red", "car"]) == pytest.approx(
        0.9
    )


def test_no_answers_is_an_error():
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])
