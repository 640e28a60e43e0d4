"""The OBELICS cleaning steps, in the order `curation.obelics` runs them.

- `ImageCheck` (stage `images`): image bytes that do not decode under the pixel cap are removed, the text
  around them merged; a document left without images is dropped with the first removed image's reason.
- `Interleaved` (stage `parse`): a document without an image or without text is not interleaved
  (`no_image` / `no_text`).
- `LanguageFilter` (stage `lang`): fastText's probability of the target language below `min_prob`.
- `OptOut` (stage `opt_out`): a listed page drops the document; with `on_unchecked="drop"` a URL the API
  could not answer drops it (`opt_out_unchecked`); each opted-out image node is removed (image, slot and
  metadata), the text around it merged, and a document left without image or text is dropped.

None of them changes a document's text (`InterleavedDocument.text` joins text nodes as the merge does),
so perplexity scores survive a change of these steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation.documents import InterleavedDocument
from curation.errors import Rejection, SampleError
from curation.images import open_image
from curation.langid import LanguageIdentifier, load_identifier
from curation.optout import OnUnchecked, OptOutVerdicts
from curation.steps import Filter, Removed, Step, Trimmed

Document = InterleavedDocument


class ImageCheck(Step[Document]):
    name = "image_check"
    stage = "images"
    changes_text = False

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels

    def apply(self, doc: Document) -> Document | Trimmed[Document]:
        removed: list[Removed] = []

        def bad(position: int) -> bool:
            image = doc.images[position]
            if not isinstance(image, bytes):
                return False
            try:
                open_image(image, self.max_pixels)
            except SampleError as exc:
                removed.append(Removed(doc.image_url(position), exc.reason, exc.detail))
                return True
            return False

        cleaned = doc.without_images(bad)
        if not removed:
            return cleaned
        empty = cleaned.emptiness_reason()
        rejection = Rejection(removed[0].reason, f"all images unusable, {empty}") if empty else None
        return Trimmed(cleaned, tuple(removed), rejection)


class Interleaved(Filter[Document]):
    name = "interleaved"
    stage = "parse"

    def reject(self, doc: Document) -> Rejection | None:
        reason = doc.emptiness_reason()
        return Rejection(reason) if reason else None


class LanguageFilter(Filter[Document]):
    """Documents whose probability of the target language is below `min_prob`. The identifier is loaded
    on first use (once per process) when the step is given the model's path."""

    name = "language"
    stage = "lang"

    def __init__(self, identifier: LanguageIdentifier | Path, min_prob: float) -> None:
        self._identifier = identifier if isinstance(identifier, LanguageIdentifier) else None
        self.model = str(identifier.model_path if isinstance(identifier, LanguageIdentifier) else identifier)
        self.language = identifier.language if isinstance(identifier, LanguageIdentifier) else "en"
        self.min_prob = min_prob

    def reject(self, doc: Document) -> Rejection | None:
        if self._identifier is None:
            self._identifier = load_identifier(Path(self.model), self.language)
        prob = self._identifier.probability(doc.text)
        return Rejection("lang", f"p(lang)={prob:.3f} < {self.min_prob}") if prob < self.min_prob else None


class OptOut(Step[Document]):
    name = "opt_out"
    stage = "opt_out"
    changes_text = False

    def __init__(self, verdicts: OptOutVerdicts, on_unchecked: OnUnchecked) -> None:
        self.verdicts = verdicts
        self.on_unchecked = on_unchecked

    def settings(self) -> dict[str, Any]:
        return {"verdicts": self.verdicts.fingerprint(), "on_unchecked": self.on_unchecked}

    def apply(self, doc: Document) -> Document | Rejection | Trimmed[Document]:
        verdicts = self.verdicts
        page_url = doc.general_metadata.get("url")
        if isinstance(page_url, str) and (listed := verdicts.lists.match(page_url)):
            return Rejection("opt_out", f"page {page_url} is listed ({listed})")
        if len(verdicts.unchecked) and self.on_unchecked == "drop":
            for url in doc.image_urls():
                if (why := verdicts.unchecked_reason(url)) is not None:
                    return Rejection("opt_out_unchecked", f"{url}: {why}")
        removed: list[Removed] = []

        def opted_out(position: int) -> bool:
            url = doc.image_url(position)
            source = verdicts.source(url) if url is not None else None
            if source:
                removed.append(Removed(url, "opt_out", source))
            return source is not None

        cleaned = doc.without_images(opted_out)
        if not removed:
            return cleaned
        empty = cleaned.emptiness_reason()
        rejection = Rejection("opt_out", f"{len(removed)} opted-out image(s) removed, {empty}") if empty else None
        return Trimmed(cleaned, tuple(removed), rejection)
