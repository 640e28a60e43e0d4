"""Offline do-not-train lists: exact URLs and whole domains, from text or parquet files.

Text files hold one entry per line (`#` comments allowed): an entry with a scheme (`https://...`) is an
exact URL, anything else a domain, which also covers its subdomains. Parquet files may have a `url` and/or
a `domain` column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq


def normalise_url(url: str) -> str:
    """Lower-case scheme and host, strip surrounding whitespace; path and query stay as they are."""
    url = url.strip()
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower()).geturl()


def url_host(url: str) -> str:
    try:
        return (urlsplit(url.strip()).hostname or "").lower().rstrip(".")
    except ValueError:
        return ""


@dataclass
class DoNotTrainList:
    urls: set[str] = field(default_factory=set)
    domains: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.urls) + len(self.domains)

    def add(self, entry: str) -> None:
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            return
        if "://" in entry:
            self.urls.add(normalise_url(entry))
        else:
            self.domains.add(entry.lower().lstrip("*.").rstrip("."))

    def match(self, url: str) -> str | None:
        """Why `url` is listed (`url` or `domain:<d>`), or None."""
        if normalise_url(url) in self.urls:
            return "url"
        host = url_host(url)
        while host:
            if host in self.domains:
                return f"domain:{host}"
            _, _, host = host.partition(".")
        return None

    @classmethod
    def from_files(cls, paths: list[Path]) -> DoNotTrainList:
        listed = cls()
        for path in paths:
            if path.suffix == ".parquet":
                table = pq.read_table(path)
                if not {"url", "domain"} & set(table.column_names):
                    raise ValueError(f"{path}: a do-not-train parquet needs a 'url' or 'domain' column")
                if "url" in table.column_names:
                    listed.urls.update(normalise_url(u) for u in table.column("url").to_pylist() if u)
                if "domain" in table.column_names:
                    listed.domains.update(d.lower().strip(".") for d in table.column("domain").to_pylist() if d)
            else:
                for line in path.read_text(encoding="utf-8").splitlines():
                    listed.add(line)
        return listed
