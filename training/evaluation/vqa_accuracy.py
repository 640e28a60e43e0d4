"""VQA accuracy, as the VQA benchmark defines it (VQAv2, OK-VQA, TextVQA).

Answers are normalised before comparison, following the rules the VQA evaluation states and its
reference script implements:

1. newlines and tabs become spaces, surrounding whitespace goes;
2. punctuation: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when the answer has it
   next to a space, or has a comma between digits anywhere (``1,000``), and is replaced by a space
   otherwise; then a period not followed by a digit is deleted (at most 32 of them, as the reference
   script passes `re.UNICODE` where `re.sub` expects a count), so ``3.5`` keeps its decimal point;
3. lower case; number words ``none``/``zero``..``ten`` become digits; the articles ``a``, ``an``,
   ``the`` are dropped; contractions missing their apostrophe get it back (``dont`` -> ``don't``;
   the table's capitalised keys such as ``Im`` never match after lower-casing, as in the reference).

A prediction's accuracy against the 10 human answers is min(#matches / 3, 1) computed for each of the
10 subsets of 9 answers (leave one out) and averaged: 0, 0.3, 0.6, 0.9 and 1 when the prediction
matches 0, 1, 2, 3 and 4 or more of the ten answers.

One deliberate difference from the reference script: it normalises only when the ten human answers
disagree (so ``Yes`` against ten ``yes`` scores 0 there); we always normalise the prediction and the
answers, as the benchmark's written rules say and as lmms-eval does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
MAX_PERIODS_REMOVED = 32  # re.UNICODE's value, passed as `count` by the reference script
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}


def strip_punctuation(text: str) -> str:
    """Step 2 above: punctuation deleted or turned into spaces, then periods that end no decimal deleted."""
    delete = COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if delete or f"{mark} " in text or f" {mark}" in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=MAX_PERIODS_REMOVED)


def normalise_words(text: str) -> str:
    """Step 3 above: lower case, number words as digits, no articles, contractions with apostrophes."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalise_answer(text: str) -> str:
    return normalise_words(strip_punctuation(text.replace("\n", " ").replace("\t", " ").strip()))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Mean over the leave-one-out subsets of the human answers of min(#matches / 3, 1)."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    predicted = normalise_answer(prediction)
    normalised = [normalise_answer(answer) for answer in answers]
    matches = sum(answer == predicted for answer in normalised)
    total = 0.0
    for answer in normalised:
        others = matches - (answer == predicted)
        total += min(others / 3, 1.0)
    return total / len(normalised)
