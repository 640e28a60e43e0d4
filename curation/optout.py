"""Opt-out removal for interleaved documents: do-not-train lists, the Spawning API and its URL cache.

`query_spawning` asks the Spawning API (through the persistent cache) about image URLs that no list
already covers, one chunk of URLs at a time; `merge_answers` combines the chunks. `OptOutVerdicts`
combines lists and API answers as hash sets (`curation.url_hashes`), 8 bytes per opted-out or unchecked
URL, so the verdicts for a whole dataset go to every worker through Ray's object store without a copy
each. The cleaning step `curation.obelics_steps.OptOut` applies them to documents. A URL the API could
not answer is never treated as allowed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

from curation.optout_lists import DoNotTrainList
from curation.spawning import SpawningClient
from curation.url_cache import UrlVerdictCache
from curation.url_hashes import HashSet, hash_texts, text_hash, url_key

OnUnchecked = Literal["fail", "drop"]
MAX_REASONS = 1000  # distinct reasons kept for unchecked URLs; more share one catch-all
OTHER_REASON = "could not be checked (one of many reasons; see the run's log)"


@dataclass(frozen=True)
class UncheckedUrls:
    """URLs the API could not answer, as hashes, each with an index into a short list of reasons."""

    urls: HashSet = field(default_factory=HashSet)
    reason_codes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint16))
    reasons: tuple[str, ...] = ()

    @classmethod
    def of(cls, unchecked: dict[str, str]) -> UncheckedUrls:
        """From {URL key: why}."""
        return cls.merge([(hash_texts(unchecked), list(unchecked.values()))])

    @classmethod
    def merge(cls, parts: Iterable[tuple[np.ndarray, list[str]]]) -> UncheckedUrls:
        hashes: list[np.ndarray] = []
        codes: list[np.ndarray] = []
        reasons: dict[str, int] = {}
        for part_hashes, part_reasons in parts:
            hashes.append(part_hashes)
            codes.append(np.fromiter((_code(reasons, r) for r in part_reasons), dtype=np.uint16, count=len(part_reasons)))
        if not hashes:
            return cls()
        all_hashes, all_codes = np.concatenate(hashes), np.concatenate(codes)
        unique, first = np.unique(all_hashes, return_index=True)
        return cls(HashSet(unique), all_codes[first], tuple(reasons))

    def parts(self) -> tuple[np.ndarray, list[str]]:
        return self.urls.hashes, [self.reasons[c] for c in self.reason_codes]

    def __len__(self) -> int:
        return len(self.urls)

    def reason(self, key: str) -> str | None:
        """Why the URL (in its normal form) was not checked, or None if it was."""
        position = self.urls.index(text_hash(key)) if len(self.urls) else None
        return None if position is None else self.reasons[int(self.reason_codes[position])]


def _code(reasons: dict[str, int], reason: str) -> int:
    if reason not in reasons and len(reasons) >= MAX_REASONS - 1:
        reason = OTHER_REASON  # the last code is kept for it
    reasons.setdefault(reason, len(reasons))
    return reasons[reason]


@dataclass(frozen=True)
class OptOutVerdicts:
    lists: DoNotTrainList = field(default_factory=DoNotTrainList)
    spawning_opted_out: HashSet = field(default_factory=HashSet)
    unchecked: UncheckedUrls = field(default_factory=UncheckedUrls)

    def source(self, url: str) -> str | None:
        """Why `url` is opted out (`list:url`, `list:domain:<d>`, `spawning`), or None."""
        key = url_key(url)
        listed = self.lists.match_key(key)
        if listed:
            return f"list:{listed}"
        return "spawning" if key in self.spawning_opted_out else None

    def unchecked_reason(self, url: str) -> str | None:
        return self.unchecked.reason(url_key(url))

    def fingerprint(self) -> str:
        """A digest of every verdict. Computed once per object and pickled with it, so the write tasks that
        receive the verdicts from the driver do not hash the arrays again."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        parts = [self.lists.fingerprint(), self.spawning_opted_out.digest(), self.unchecked.urls.digest()]
        return hashlib.sha256("".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SpawningAnswers:
    """What one or more chunks of URLs got from the API (through the cache)."""

    opted_out: HashSet = field(default_factory=HashSet)
    unchecked: UncheckedUrls = field(default_factory=UncheckedUrls)


def merge_answers(answers: list[SpawningAnswers]) -> SpawningAnswers:
    return SpawningAnswers(HashSet.union(*(a.opted_out for a in answers)), UncheckedUrls.merge(a.unchecked.parts() for a in answers))


def query_spawning(
    urls: Iterable[str],
    lists: DoNotTrainList,
    client: SpawningClient,
    cache: UrlVerdictCache | None = None,
    recheck_after_s: float | None = None,
    progress: Callable[[int], None] | None = None,
    fail_fast: bool = False,
) -> tuple[SpawningAnswers, dict[str, int]]:
    """Answers for `urls`: listed ones need no request, cached ones (younger than `recheck_after_s`) none either.

    Raises what `SpawningClient.query` raises (a refused token; with `fail_fast`, the first unchecked batch).
    """
    to_query = [k for k in dict.fromkeys(url_key(u) for u in urls) if k and not lists.match_key(k)]
    known = cache.lookup(to_query, recheck_after_s) if cache is not None else {}
    missing = [k for k in to_query if k not in known]
    result = client.query(missing, progress=progress, fail_fast=fail_fast)
    if cache is not None and result.opted_out:
        cache.store(result.opted_out)
    known.update(result.opted_out)
    answers = SpawningAnswers(HashSet.of(k for k, out in known.items() if out), UncheckedUrls.of(result.unchecked))
    stats = {
        "urls_checked_by_api": len(to_query),
        "from_cache": len(to_query) - len(missing),
        "queried": len(missing),
        "requests": result.requests,
        "retries": result.retries,
    }
    return answers, stats
