"""ANLS, ChartQA's relaxed accuracy and the open-answer rule, on worked examples."""

import pytest

from training.evaluation.answer_match import anls, levenshtein, open_answer_match, relaxed_accuracy


@pytest.mark.parametrize("a, b, distance", [("kitten", "sitting", 3), ("", "abc", 3), ("flaw", "lawn", 2), ("same", "same", 0)])
def test_levenshtein(a, b, distance):
    assert levenshtein(a, b) == distance == levenshtein(b, a)


def test_anls_worked_examples():
    assert anls("Report", ["report"]) == 1.0  # case and surrounding space do not count
    assert anls("  J.  Smith ", ["j. smith"]) == 1.0  # inner whitespace collapsed
    assert anls("reprt", ["report"]) == pytest.approx(1 - 1 / 6)
    assert anls("abcx", ["abcd"]) == pytest.approx(0.75)
    assert anls("abxy", ["abcd"]) == 0.0  # normalised distance 0.5 is not below the threshold
    assert anls("xyz", ["report"]) == 0.0
    assert anls("12.50", ["$12.50", "12.50"]) == 1.0  # best of the answers


@pytest.mark.parametrize(
    "prediction, target, correct",
    [
        ("12", "12.5", True),  # 4% off
        ("11.8", "12.5", False),  # 5.6% off
        ("50%", "0.5", True),  # percentages read as fractions
        ("0", "0", True),  # a zero target falls back to string equality ...
        ("0.0", "0", False),  # ... as in the definition
        ("Yes", "yes", True),
        ("1,000", "1000", False),  # not a number for float(): compared as strings
    ],
)
def test_relaxed_accuracy(prediction, target, correct):
    assert relaxed_accuracy(prediction, [target]) == float(correct)


@pytest.mark.parametrize(
    "prediction, answer, precision, correct",
    [
        ("The answer is 42.", "42", None, True),
        ("3.14159", "3.14", None, True),  # rounded to the answer's decimals
        ("2.26", "2.3", 1, True),
        ("2.2", "2.3", 1, False),
        ("1,000 people", "1000", None, True),
        ("about 7 or 8", "8", None, False),  # the first number counts
        ("Paris", "paris.", None, True),
        ("Paris, France", "Paris", None, False),
        ("no number", "5", None, False),
    ],
)
def test_open_answer_rule(prediction, answer, precision, correct):
    assert open_answer_match(prediction, answer, precision) is correct
