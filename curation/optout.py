"""Opt-out removal for interleaved documents: do-not-train lists, the Spawning API and its URL cache.

`check_urls` decides, for a set of image URLs, which are opted out and which could not be checked.
`remove_opted_out` then removes each opted-out image node (image, slot and metadata together), merges the
text around it, and says whether the document is left empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal

from curation.documents import InterleavedDocument
from curation.optout_lists import DoNotTrainList
from curation.spawning import SpawningClient
from curation.url_cache import UrlVerdictCache

OnUnchecked = Literal["fail", "drop"]


@dataclass
class OptOutVerdicts:
    """Only the URLs that matter downstream: opted-out ones (with their source) and unchecked ones."""

    opted_out: dict[str, str] = field(default_factory=dict)  # url -> "list:url" | "list:domain:<d>" | "spawning"
    unchecked: dict[str, str] = field(default_factory=dict)  # url -> why it could not be checked
    listed_pages: DoNotTrainList = field(default_factory=DoNotTrainList)
    stats: dict[str, int] = field(default_factory=dict)


def check_urls(
    urls: Iterable[str],
    lists: DoNotTrainList,
    client: SpawningClient | None = None,
    cache: UrlVerdictCache | None = None,
    recheck_after_s: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> OptOutVerdicts:
    unique = list(dict.fromkeys(u for u in urls if u))
    verdicts = OptOutVerdicts(listed_pages=lists)
    to_query = []
    for url in unique:
        listed = lists.match(url)
        if listed:
            verdicts.opted_out[url] = f"list:{listed}"
        else:
            to_query.append(url)
    stats = {"urls": len(unique), "listed": len(verdicts.opted_out), "cached": 0, "queried": 0, "requests": 0, "retries": 0}
    if client is not None:
        known = cache.lookup(to_query, recheck_after_s) if cache is not None else {}
        stats["cached"] = len(known)
        missing = [u for u in to_query if u not in known]
        result = client.query(missing, progress=progress)
        if cache is not None and result.opted_out:
            cache.store(result.opted_out)
        known.update(result.opted_out)
        verdicts.opted_out.update((u, "spawning") for u, out in known.items() if out)
        verdicts.unchecked.update(result.unchecked)
        stats.update(queried=len(missing), requests=result.requests, retries=result.retries)
    stats["opted_out"] = len(verdicts.opted_out)
    stats["unchecked"] = len(verdicts.unchecked)
    verdicts.stats = stats
    return verdicts


@dataclass(frozen=True)
class OptOutOutcome:
    document: InterleavedDocument
    removed: list[tuple[str, str]]  # (url, source) of each removed image node
    drop_reason: str | None  # set when the whole document must go
    drop_detail: str = ""


def remove_opted_out(doc: InterleavedDocument, verdicts: OptOutVerdicts, on_unchecked: OnUnchecked) -> OptOutOutcome:
    page_url = doc.general_metadata.get("url")
    if isinstance(page_url, str) and (listed := verdicts.listed_pages.match(page_url)):
        return OptOutOutcome(doc, [], "opt_out", f"page {page_url} is listed ({listed})")
    unchecked = [u for u in doc.image_urls() if u in verdicts.unchecked]
    if unchecked and on_unchecked == "drop":
        return OptOutOutcome(doc, [], "opt_out_unchecked", f"{unchecked[0]}: {verdicts.unchecked[unchecked[0]]}")
    removed: list[tuple[str, str]] = []

    def opted_out(position: int) -> bool:
        url = doc.image_url(position)
        if url is not None and url in verdicts.opted_out:
            removed.append((url, verdicts.opted_out[url]))
            return True
        return False

    cleaned = doc.without_images(opted_out)
    reason = cleaned.emptiness_reason() if removed else None
    if reason:
        return OptOutOutcome(cleaned, removed, "opt_out", f"{len(removed)} opted-out image(s) removed, {reason}")
    return OptOutOutcome(cleaned, removed, None)
