"""Offline do-not-train lists: exact URLs and whole domains, from text or parquet files.

Text files hold one entry per line (`#` comments allowed): an entry with a scheme (`https://...`) is an
exact URL, anything else a domain, which also covers its subdomains. Parquet files may have a `url` and/or
a `domain` column. Lists may be local files or object-store URLs (`curation.storage`). Entries are
kept as hash sets (`curation.url_hashes`): lists of hundreds of millions of URLs fit in 8 bytes per
entry and are shared with every worker without a copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from curation.errors import UserError
from curation.storage import StoragePath, parquet_file, read_parquet_schema
from curation.url_hashes import HashSet, key_host, url_key


def domain_key(entry: str) -> str:
    return entry.strip().lower().lstrip("*.").rstrip(".")


@dataclass(frozen=True)
class DoNotTrainList:
    urls: HashSet = field(default_factory=HashSet)
    domains: HashSet = field(default_factory=HashSet)

    def __len__(self) -> int:
        return len(self.urls) + len(self.domains)

    def match(self, url: str) -> str | None:
        """Why `url` is listed (`url` or `domain:<d>`), or None."""
        return self.match_key(url_key(url))

    def match_key(self, key: str) -> str | None:
        """`match` for a URL already in its normal form (`url_key`)."""
        if key in self.urls:
            return "url"
        if not len(self.domains):
            return None
        host = key_host(key)
        while host:
            if host in self.domains:
                return f"domain:{host}"
            _, _, host = host.partition(".")
        return None

    def fingerprint(self) -> str:
        return f"{self.urls.digest()}{self.domains.digest()}"

    @classmethod
    def of(cls, entries: Iterable[str]) -> DoNotTrainList:
        """A list from text entries: a URL when it has a scheme, else a domain."""
        urls: list[str] = []
        domains: list[str] = []
        for entry in entries:
            entry = entry.strip()
            if not entry or entry.startswith("#"):
                continue
            if "://" in entry:
                urls.append(url_key(entry))
            else:
                domains.append(domain_key(entry))
        return cls(HashSet.of(urls), HashSet.of(domains))

    @classmethod
    def from_files(cls, paths: list[StoragePath]) -> DoNotTrainList:
        lists = [cls._from_file(path) for path in paths]
        return cls(HashSet.union(*(part.urls for part in lists)), HashSet.union(*(part.domains for part in lists)))

    @classmethod
    def _from_file(cls, path: StoragePath) -> DoNotTrainList:
        if path.suffix != ".parquet":
            with path.open(encoding="utf-8") as handle:
                return cls.of(handle)
        names = read_parquet_schema(path).names
        if not {"url", "domain"} & set(names):
            raise UserError(f"{path}: a do-not-train parquet needs a 'url' or 'domain' column")
        urls = HashSet.of(url_key(u) for u in _column(path, "url")) if "url" in names else HashSet()
        domains = HashSet.of(domain_key(d) for d in _column(path, "domain")) if "domain" in names else HashSet()
        return cls(urls, domains)


def _column(path: StoragePath, name: str) -> Iterator[str]:
    """The non-empty strings of one column, streamed batch by batch."""
    for batch in parquet_file(path).iter_batches(columns=[name]):
        yield from (value for value in batch.column(0).to_pylist() if value)
