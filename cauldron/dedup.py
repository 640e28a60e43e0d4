"""Eval-set deduplication: drop training rows that show an evaluation image or quote an eval text.

Three matchers, tried in this order for each training row:

1. exact: the decoded, mode-normalised pixels of a training image equal an eval image's
   (`cauldron.images.pixel_hash`), whatever the file encoding;
2. perceptual: a training image's DCT pHash is within `phash_threshold` bits of an eval image's,
   which catches re-encoded and resized copies (`cauldron.phash`); flat images (blank, one colour)
   have no reliable pHash and match by exact pixels only;
3. n-gram: for text-only rows, a word n-gram of the row's text also occurs in an eval text.

Every removal comes back as an `EvalMatch` naming the eval set and item it matched, ready for the
ledger. Matching costs one decode per training image plus a per-image index lookup whose cost
depends only on the eval side and levels off as it grows (`cauldron.phash`), so dedup time grows
linearly with the training set; n-gram lookups are hash-table probes, linear in the text length.
Match rows in batches (`match_rows`, or `match_fingerprinted` when the images were already hashed, as
`cauldron build` does): the pHash index answers a batch in one pass. `EvalIndex.digest` names what was
indexed (settings, every image's hashes, every text, every skipped item, with their sets and items), so a
build keys its reruns by the eval sets' content, not their location.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from cauldron.evalsets import iter_eval_items
from cauldron.images import DEFAULT_MAX_PIXELS, decode_image, pixel_hash_of
from cauldron.phash import HammingIndex, phash_unless_flat
from cauldron.schema import CauldronRow
from curation.errors import Rejection, SampleError, UserError
from curation.storage import ObjectPath

DEFAULT_PHASH_THRESHOLD = 8
DEFAULT_NGRAM_SIZE = 13
DEFAULT_MIN_NGRAM_WORDS = 8

_WORD = re.compile(r"\w+")

Fingerprint = tuple[str, int | None]  # (exact pixel hash, pHash or None for a flat image)


@dataclass(frozen=True)
class EvalMatch:
    """Why a training row was removed. `distance` is the pHash distance (0 for exact pixels)."""

    kind: str  # "exact_pixels" | "phash" | "ngram"
    eval_set: str
    eval_item: str
    distance: int | None = None
    train_image: int | None = None  # which image of the row matched
    detail: str = ""  # the shared n-gram, for text matches

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def image_fingerprint(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Fingerprint:
    """(exact pixel hash, pHash or None when flat) of one encoded image, decoding it once."""
    image = decode_image(data, max_pixels)
    return pixel_hash_of(image), phash_unless_flat(image)


class FingerprintCache:
    """The last `size` fingerprints by the digest of the encoded bytes: rows that repeat an image (several
    questions about one picture) decode it once. Bounded, so memory does not grow with the input."""

    def __init__(self, size: int = 65_536) -> None:
        self.size = size
        self.entries: OrderedDict[bytes, Fingerprint | SampleError] = OrderedDict()

    def fingerprint(self, data: bytes, max_pixels: int) -> Fingerprint:
        key = hashlib.blake2b(data, digest_size=16).digest()
        found = self.entries.get(key)
        if found is None:
            try:
                found = image_fingerprint(data, max_pixels)
            except SampleError as error:
                found = error
            self.entries[key] = found
            if len(self.entries) > self.size:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        if isinstance(found, SampleError):
            raise SampleError(found.reason, found.detail)
        return found


def fingerprint_rows(
    rows: Sequence[CauldronRow], max_pixels: int = DEFAULT_MAX_PIXELS, cache: FingerprintCache | None = None
) -> list[list[Fingerprint] | Rejection]:
    """Each row's image fingerprints (one decode per image), or a `decode_error` Rejection for a row with a bad one."""
    fingerprint = cache.fingerprint if cache is not None else image_fingerprint
    prints: list[list[Fingerprint] | Rejection] = []
    for row in rows:
        try:
            prints.append([fingerprint(data, max_pixels) for data in row["images"]])
        except SampleError as error:
            prints.append(Rejection("decode_error", str(error)))
    return prints


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _gram_key(tokens: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(tokens).encode(), digest_size=8).digest(), "big")


class EvalIndex:
    """Exact-pixel, pHash and n-gram indexes over evaluation items."""

    def __init__(
        self,
        phash_threshold: int = DEFAULT_PHASH_THRESHOLD,
        ngram_size: int = DEFAULT_NGRAM_SIZE,
        min_ngram_words: int = DEFAULT_MIN_NGRAM_WORDS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if not 0 < min_ngram_words <= ngram_size:
            raise UserError("need 0 < min_ngram_words <= ngram_size")
        self.phash_threshold = phash_threshold
        self.ngram_size = ngram_size
        self.min_ngram_words = min_ngram_words
        self.max_pixels = max_pixels
        self._refs: list[tuple[str, str]] = []  # image position -> (eval set, item)
        self._exact: dict[str, int] = {}
        self._phashes: list[int] = []
        self._phash_refs: list[int] = []  # pHash slot -> image position (flat images have none)
        self._hamming: HammingIndex | None = None
        self._grams: dict[int, tuple[str, str]] = {}
        # Eval texts shorter than `ngram_size` are indexed whole; these are their lengths.
        self._gram_lengths: set[int] = set()
        self.skipped: list[tuple[str, str, str]] = []  # (eval set, item, reason)
        self._content = b""  # a hash chain over what was added (picklable, unlike a running hasher)
        self._note("settings", phash_threshold, ngram_size, min_ngram_words, max_pixels)

    def _note(self, *parts: object) -> None:
        self._content = hashlib.blake2b(self._content + repr(parts).encode(), digest_size=16).digest()

    def digest(self) -> str:
        """Hex digest of the settings and of everything added, in order: equal digests match alike."""
        return self._content.hex()

    def skip(self, eval_set: str, item: str, reason: str) -> None:
        self._note("skip", eval_set, item)  # not the reason, which may name where the set lies
        self.skipped.append((eval_set, item, reason))

    @property
    def image_count(self) -> int:
        return len(self._refs)

    @property
    def gram_count(self) -> int:
        return len(self._grams)

    def add_image(self, eval_set: str, item: str, data: bytes) -> bool:
        try:
            exact, perceptual = image_fingerprint(data, self.max_pixels)
        except SampleError as error:
            self.skip(eval_set, item, str(error))
            return False
        self.add_fingerprint(eval_set, item, exact, perceptual)
        return True

    def add_fingerprint(self, eval_set: str, item: str, exact: str, perceptual: int | None) -> None:
        """Add an image already hashed with `image_fingerprint` (e.g. in parallel workers)."""
        self._note("image", eval_set, item, exact, perceptual)
        position = len(self._refs)
        self._refs.append((eval_set, item))
        self._exact.setdefault(exact, position)
        if perceptual is not None:
            self._phashes.append(perceptual)
            self._phash_refs.append(position)
            self._hamming = None

    def add_text(self, eval_set: str, item: str, text: str) -> bool:
        tokens = words(text)
        if len(tokens) < self.min_ngram_words:
            return False
        self._note("text", eval_set, item, text)
        size = min(self.ngram_size, len(tokens))
        if size < self.ngram_size:
            self._gram_lengths.add(size)
        for start in range(len(tokens) - size + 1):
            self._grams.setdefault(_gram_key(tokens[start : start + size]), (eval_set, item))
        return True

    def add_eval_set(self, name: str, path: str | os.PathLike[str] | ObjectPath) -> None:
        """Index every image and text of one eval source (see `cauldron.evalsets`)."""
        for item in iter_eval_items(path):
            if item.problem:
                self.skip(name, item.item_id, item.problem)
            elif item.image is not None:
                self.add_image(name, item.item_id, item.image)
            elif item.text is not None:
                self.add_text(name, item.item_id, item.text)

    def _phash_index(self) -> HammingIndex:
        if self._hamming is None:
            self._hamming = HammingIndex(self._phashes, self.phash_threshold)
        return self._hamming

    def match_fingerprints(self, prints: Sequence[Fingerprint]) -> list[EvalMatch | None]:
        """Match many fingerprints at once: exact pixels first, then the pHash index (not for flat images)."""
        matches: list[EvalMatch | None] = [None] * len(prints)
        pending: list[int] = []
        queries: list[int] = []
        for slot, (exact, perceptual) in enumerate(prints):
            position = self._exact.get(exact)
            if position is not None:
                eval_set, item = self._refs[position]
                matches[slot] = EvalMatch("exact_pixels", eval_set, item, distance=0)
            elif perceptual is not None:
                pending.append(slot)
                queries.append(perceptual)
        if pending and self._phashes:
            hits, distances = self._phash_index().nearest_many(queries)
            for slot, hit, distance in zip(pending, hits.tolist(), distances.tolist(), strict=True):
                if hit >= 0:
                    eval_set, item = self._refs[self._phash_refs[hit]]
                    matches[slot] = EvalMatch("phash", eval_set, item, distance=distance)
        return matches

    def match_text(self, text: str) -> EvalMatch | None:
        if not self._grams:
            return None
        tokens = words(text)
        for size in sorted({self.ngram_size, *self._gram_lengths}, reverse=True):
            for start in range(len(tokens) - size + 1):
                gram = tokens[start : start + size]
                ref = self._grams.get(_gram_key(gram))
                if ref is not None:
                    return EvalMatch("ngram", *ref, detail=" ".join(gram))
        return None

    def _match_turns(self, row: CauldronRow) -> EvalMatch | None:
        for turn in row["texts"]:
            match = self.match_text(turn["user"]) or self.match_text(turn["assistant"])
            if match is not None:
                return match
        return None

    def match_rows(self, rows: Sequence[CauldronRow], *, text_for_image_rows: bool = False) -> list[EvalMatch | Rejection | None]:
        """Why each row must go (or None), for a batch of rows; images are matched in one index pass.

        Image rows are matched on their images (and on their text when `text_for_image_rows`);
        text-only rows on n-grams. A row with an undecodable image gets a `decode_error` Rejection.
        """
        prints = fingerprint_rows(rows, self.max_pixels)
        return self.match_fingerprinted(rows, prints, text_for_image_rows=text_for_image_rows)

    def match_fingerprinted(
        self,
        rows: Sequence[CauldronRow],
        prints: Sequence[list[Fingerprint] | Rejection],
        *,
        text_for_image_rows: bool = False,
    ) -> list[EvalMatch | Rejection | None]:
        """`match_rows` for rows whose images were already fingerprinted (`fingerprint_rows`)."""
        outcomes: list[EvalMatch | Rejection | None] = [None] * len(rows)
        all_prints: list[Fingerprint] = []
        owners: list[tuple[int, int]] = []  # (row, image index) for each fingerprint
        for number, row_prints in enumerate(prints):
            if isinstance(row_prints, Rejection):
                outcomes[number] = row_prints
                continue
            all_prints.extend(row_prints)
            owners.extend((number, image) for image in range(len(row_prints)))
        for (number, image), match in zip(owners, self.match_fingerprints(all_prints), strict=True):
            if match is not None and outcomes[number] is None:  # the row's first matching image
                outcomes[number] = replace(match, train_image=image)
        for number, row in enumerate(rows):
            if outcomes[number] is None and (not row["images"] or text_for_image_rows):
                outcomes[number] = self._match_turns(row)
        return outcomes

    def match_row(self, row: CauldronRow, *, text_for_image_rows: bool = False) -> EvalMatch | None:
        """Why `row` must go, or None. Raises SampleError for an undecodable image."""
        outcome = self.match_rows([row], text_for_image_rows=text_for_image_rows)[0]
        if isinstance(outcome, Rejection):
            raise SampleError(outcome.reason, outcome.detail)
        return outcome


def build_eval_index(sources: Mapping[str, str | os.PathLike[str] | ObjectPath], **options: Any) -> EvalIndex:
    """An `EvalIndex` over named eval sources, e.g. `{"mmmu": "evals/mmmu/"}`."""
    index = EvalIndex(**options)
    for name, path in sources.items():
        index.add_eval_set(name, path)
    return index
