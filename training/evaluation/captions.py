"""CIDEr for captions: pycocoevalcap's CIDEr-D scorer on PTB-tokenised text, without Java.

pycocoevalcap tokenises captions with Stanford's Java PTBTokenizer (lower-cased, one line per
caption) and then deletes the punctuation tokens in its list. `ptb_tokenize` does the same in Python
for the constructions captions contain: sentence punctuation split off and deleted; clitics split
(``cat's`` -> ``cat 's``, ``didn't`` -> ``did n't``, ``cannot`` -> ``can not``); quotes deleted;
brackets written as PTB does (``-lrb-`` ... which, lower-cased, are not in pycocoevalcap's deletion
list and so stay, as with the Java tool); ``$``, ``%`` and ``#`` split from numbers; periods kept
inside numbers, e-mails and abbreviations (``u.s.``, ``a.m.``, ``mr.``); hyphenated words, ``1,000``,
``10:30`` and ``e/f`` kept whole. Tests check it against the Java tokenizer where Java is installed.

CIDEr-D itself (n-grams 1-4, TF-IDF over the evaluated set's references, Gaussian length penalty
sigma 6, clipping, x10) is pycocoevalcap's own `CiderScorer`. Its document frequencies come from the
references of the items scored together, so a score depends on the evaluated set: compare runs on the
same items.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS, which it deletes after tokenising
DELETED_TOKENS = frozenset({"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"})
# PTB's written forms (double quotes become `` or '', deleted either way)
PTB_FORMS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-", '"': "''"}
ABBREVIATIONS = frozenset(
    {
        "mr.",
        "mrs.",
        "ms.",
        "dr.",
        "st.",
        "jr.",
        "sr.",
        "vs.",
        "etc.",
        "inc.",
        "co.",
        "ltd.",
        "no.",
        "mt.",
        "ft.",
        "ave.",
        "jan.",
        "feb.",
        "aug.",
        "sept.",
        "oct.",
        "nov.",
        "dec.",
    }
)
SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "wanna": ("wan", "na"), "gotta": ("got", "ta")}
CLITIC = re.compile(r"^(.+?)(n't|'s|'m|'d|'re|'ve|'ll)$")
INITIALISM = re.compile(r"^(?:[a-z]\.){2,}$")
LEADING = "\"'`([{$#"
TRAILING = "\"'`)]}.,;:!?%"


def _peel(word: str) -> list[str]:
    """One whitespace-separated word -> PTB tokens (before the deletion of punctuation tokens)."""
    head: list[str] = []
    tail: list[str] = []
    while word and word[0] in LEADING:
        step = 2 if word.startswith(("``", "''")) else 1
        head.append(word[:step])
        word = word[step:]
    while word:
        if word.endswith(("...", "--")):
            tail.insert(0, word[-3:] if word.endswith("...") else "--")
            word = word.removesuffix(tail[0])
        elif word[-1] == "." and (word in ABBREVIATIONS or INITIALISM.match(word)):
            break
        elif word[-1] in TRAILING:
            tail.insert(0, word[-1])
            word = word[:-1]
        else:
            break
    middle: list[str] = []
    if word in SPLIT_WORDS:
        middle = list(SPLIT_WORDS[word])
    elif word:
        clitic = CLITIC.match(word)
        middle = [clitic.group(1), clitic.group(2)] if clitic else [word]
    return [PTB_FORMS.get(token, token) for token in head + middle + tail]


def ptb_tokenize(caption: str) -> str:
    """Lower-cased PTB tokens of one caption, punctuation tokens deleted, joined by spaces."""
    tokens = [token for word in caption.lower().split() for token in _peel(word)]
    return " ".join(token for token in tokens if token not in DELETED_TOKENS)


def cider(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> tuple[float, dict[str, float]]:
    """Corpus CIDEr-D and the per-item scores, over the items of `predictions` (each needs references)."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    if not predictions:
        return 0.0, {}
    scorer = CiderScorer(n=4, sigma=6.0)
    ids = list(predictions)
    for item in ids:
        refs = references[item]
        if not refs:
            raise ValueError(f"caption item {item!r} has no reference caption")
        scorer += (ptb_tokenize(predictions[item]), [ptb_tokenize(ref) for ref in refs])
    score, scores = scorer.compute_score()
    return float(score), {item: float(value) for item, value in zip(ids, scores, strict=True)}
