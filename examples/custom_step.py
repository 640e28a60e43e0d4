"""Your own cleaning step: two filters for `curate obelics` (documents), `curate pairs` and `curate pdfs` (pages).

A filter is a small class: a `name`, the ledger `stage` its drops are filed under, and `reject(sample)`
returning why the sample must go (a `Rejection(reason, detail)`) or None to keep it. The pipeline does
the rest: the drop becomes a ledger row, and the filter's settings (its public attributes) enter the
run's fingerprint, so changing one re-runs the partitions and an unchanged rerun resumes.

From the command line (the module must be importable, here from the repository root):

    curate obelics --input data/ --output out/ --step 'examples.custom_step:MinWords:{"min_words": 50}'

or with a YAML file (`--steps-file steps.yaml`):

    - step: examples.custom_step:MinWords
      args: {min_words: 50}
    - step: examples.custom_step:BlockedWords
      args: {words: [casino, lottery]}

From Python: `ObelicsConfig(..., steps=(MinWords(50),))`, `PairsConfig(..., steps=(BlockedWords(["casino"]),))`.
A step that edits what it keeps (rather than only filtering) subclasses `curation.steps.Step` and
returns the edited sample from `apply(sample)`.
"""

from __future__ import annotations

import re
from typing import TypeVar

from curation.documents import InterleavedDocument
from curation.errors import Rejection
from curation.pairs.pair import Pair
from curation.pdf.pages import PageSample
from curation.steps import Filter

Sample = InterleavedDocument | Pair | PageSample
T = TypeVar("T", InterleavedDocument, Pair, PageSample)  # each filter is a step for any of the three


def sample_text(sample: Sample) -> str:
    """A document's or page's text, or a pair's caption."""
    return sample.caption if isinstance(sample, Pair) else sample.text


class MinWords(Filter[T]):
    """Drop samples with fewer than `min_words` words (`too_few_words`)."""

    name = "min_words"
    stage = "custom"

    def __init__(self, min_words: int) -> None:
        self.min_words = min_words

    def reject(self, sample: T) -> Rejection | None:
        words = len(sample_text(sample).split())
        if words < self.min_words:
            return Rejection("too_few_words", f"{words} words < {self.min_words}")
        return None


class BlockedWords(Filter[T]):
    """Drop samples that contain one of `words` as a whole word, case-insensitively (`blocked_word`)."""

    name = "blocked_words"
    stage = "custom"

    def __init__(self, words: list[str]) -> None:
        self.words = sorted({word.lower() for word in words})
        self._pattern = re.compile(r"\b(" + "|".join(map(re.escape, self.words)) + r")\b", re.IGNORECASE)

    def reject(self, sample: T) -> Rejection | None:
        found = self._pattern.search(sample_text(sample)) if self.words else None
        return Rejection("blocked_word", found.group(1).lower()) if found else None
