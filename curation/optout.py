"""Opt-out removal for interleaved documents: do-not-train lists, the Spawning API and its URL cache.

`query_spawning` asks the Spawning API (through the persistent cache) about image URLs that no list
already covers. `OptOutVerdicts` combines lists and API answers; `remove_opted_out` removes each opted-out
image node (image, slot and metadata together), merges the text around it, and says whether the document
is left empty. A URL the API could not answer is never treated as allowed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal

from curation.documents import InterleavedDocument
from curation.optout_lists import DoNotTrainList
from curation.spawning import SpawningClient
from curation.url_cache import UrlVerdictCache

OnUnchecked = Literal["fail", "drop"]


@dataclass
class OptOutVerdicts:
    lists: DoNotTrainList = field(default_factory=DoNotTrainList)
    spawning_opted_out: set[str] = field(default_factory=set)
    unchecked: dict[str, str] = field(default_factory=dict)  # url -> why it could not be checked

    def source(self, url: str) -> str | None:
        """Why `url` is opted out (`list:url`, `list:domain:<d>`, `spawning`), or None."""
        listed = self.lists.match(url)
        if listed:
            return f"list:{listed}"
        return "spawning" if url in self.spawning_opted_out else None

    def fingerprint(self) -> str:
        payload = [sorted(self.lists.urls), sorted(self.lists.domains), sorted(self.spawning_opted_out), sorted(self.unchecked)]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def query_spawning(
    urls: Iterable[str],
    lists: DoNotTrainList,
    client: SpawningClient,
    cache: UrlVerdictCache | None = None,
    recheck_after_s: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[OptOutVerdicts, dict[str, int]]:
    """Verdicts for `urls`: listed ones need no request, cached ones (younger than `recheck_after_s`) none either."""
    to_query = [u for u in dict.fromkeys(u for u in urls if u) if not lists.match(u)]
    known = cache.lookup(to_query, recheck_after_s) if cache is not None else {}
    missing = [u for u in to_query if u not in known]
    result = client.query(missing, progress=progress)
    if cache is not None and result.opted_out:
        cache.store(result.opted_out)
    known.update(result.opted_out)
    verdicts = OptOutVerdicts(lists, {u for u, out in known.items() if out}, dict(result.unchecked))
    stats = {
        "urls_checked_by_api": len(to_query),
        "from_cache": len(to_query) - len(missing),
        "queried": len(missing),
        "requests": result.requests,
        "retries": result.retries,
        "opted_out_by_api": len(verdicts.spawning_opted_out),
        "unchecked": len(verdicts.unchecked),
    }
    return verdicts, stats


@dataclass(frozen=True)
class OptOutOutcome:
    document: InterleavedDocument
    removed: list[tuple[str, str]]  # (url, source) of each removed image node
    drop_reason: str | None  # set when the whole document must go
    drop_detail: str = ""


def remove_opted_out(doc: InterleavedDocument, verdicts: OptOutVerdicts, on_unchecked: OnUnchecked) -> OptOutOutcome:
    page_url = doc.general_metadata.get("url")
    if isinstance(page_url, str) and (listed := verdicts.lists.match(page_url)):
        return OptOutOutcome(doc, [], "opt_out", f"page {page_url} is listed ({listed})")
    unchecked = [u for u in doc.image_urls() if u in verdicts.unchecked]
    if unchecked and on_unchecked == "drop":
        return OptOutOutcome(doc, [], "opt_out_unchecked", f"{unchecked[0]}: {verdicts.unchecked[unchecked[0]]}")
    removed: list[tuple[str, str]] = []

    def opted_out(position: int) -> bool:
        url = doc.image_url(position)
        source = verdicts.source(url) if url is not None else None
        if source:
            removed.append((url, source))
        return source is not None

    cleaned = doc.without_images(opted_out)
    reason = cleaned.emptiness_reason() if removed else None
    if reason:
        return OptOutOutcome(cleaned, removed, "opt_out", f"{len(removed)} opted-out image(s) removed, {reason}")
    return OptOutOutcome(cleaned, removed, None)
