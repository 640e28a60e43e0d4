"""The URL normal form and the 64-bit hash sets that every opt-out lookup goes through.

`url_key` is the one form a URL is compared, cached and sent to the Spawning API in: surrounding
spaces and controls stripped, tabs and line breaks removed (as browsers do), any other control
character and lone surrogate percent-encoded, scheme and host lower-cased. So a URL holding a newline
cannot split a newline-joined request, and every string can be written as UTF-8.

A `HashSet` holds URLs (or domains) as a sorted array of unique uint64 hashes of their keys: 8 bytes
each, looked up with a binary search, and shared through Ray's object store without a copy per worker
(NumPy arrays are deserialised zero-copy, read-only). Two different keys share a hash with probability
about n / 2^64 per lookup; for opt-out that can only remove an image that was not opted out.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterable
from urllib.parse import quote, urlsplit

import numpy as np

_EDGES = "".join(chr(c) for c in range(0x21))  # C0 controls and space
_REMOVED = str.maketrans("", "", "\t\n\r")
_ESCAPED = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_ODD = re.compile("[\x00-\x20\x7f\ud800-\udfff]")  # anything url_key has to remove or escape
_SCHEME = re.compile("[A-Za-z][A-Za-z0-9+.-]*")
_HOST_END = re.compile("[/?#]")
_CHUNK = 1 << 20


def _percent(match: re.Match[str]) -> str:
    return quote(match.group().encode("utf-8", "surrogatepass"), safe="")


def url_key(url: str) -> str:
    """The normal form of `url` (see the module docstring); everything after the host keeps its case.

    Plain string operations (no parsing into parts and back), since every image URL of a run goes
    through here.
    """
    text = url.strip(_EDGES)
    if _ODD.search(text):
        text = _ESCAPED.sub(_percent, text.translate(_REMOVED))
    scheme, separator, rest = text.partition("://")
    if not separator or not _SCHEME.fullmatch(scheme):
        return text
    found = _HOST_END.search(rest)
    end = found.start() if found else len(rest)
    return f"{scheme.lower()}://{rest[:end].lower()}{rest[end:]}"


def key_host(key: str) -> str:
    """The host of a URL already in its normal form (lower case, no trailing dot), or ""."""
    try:
        return (urlsplit(key).hostname or "").rstrip(".")
    except ValueError:
        return ""


def text_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def hash_texts(texts: Iterable[str]) -> np.ndarray:
    """uint64 hashes of `texts` (already in their normal form), in order."""
    return np.fromiter((text_hash(t) for t in texts), dtype=np.uint64)


class HashSet:
    """A set of strings as sorted unique uint64 hashes.

    Lookups bisect a memoryview of the array (Python ints, no NumPy call per lookup); pickling carries
    the array alone, so Ray ships it as an out-of-band buffer and workers map it without a copy.
    """

    def __init__(self, hashes: np.ndarray | None = None) -> None:
        self.hashes = np.empty(0, dtype=np.uint64) if hashes is None else np.ascontiguousarray(hashes, dtype=np.uint64)
        self._view = self.hashes.data  # a memoryview of the array

    def __reduce__(self) -> tuple:
        return (HashSet, (self.hashes,))

    @classmethod
    def of(cls, texts: Iterable[str]) -> HashSet:
        """The set of `texts` (in their normal form), hashed in chunks so no Python set of them is built."""
        chunks, batch = [], []
        for text in texts:
            batch.append(text)
            if len(batch) >= _CHUNK:
                chunks.append(hash_texts(batch))
                batch = []
        chunks.append(hash_texts(batch))
        return cls.union(*(cls(c) for c in chunks))

    @classmethod
    def union(cls, *sets: HashSet) -> HashSet:
        arrays = [s.hashes for s in sets if len(s.hashes)]
        return cls(np.unique(np.concatenate(arrays)) if arrays else None)

    def __len__(self) -> int:
        return len(self.hashes)

    def index(self, value: int) -> int | None:
        """Where hash `value` is in the sorted array, or None."""
        position = bisect.bisect_left(self._view, value)
        return position if position < len(self._view) and self._view[position] == value else None

    def __contains__(self, text: str) -> bool:
        return bool(len(self._view)) and self.index(text_hash(text)) is not None

    def digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.hashes).data).hexdigest()[:16]  # no copy of the array
