"""A persistent URL -> (opted_out, checked_at) cache, so reruns and later re-checks query only new URLs.

URLs are stored in their normal form (`curation.url_hashes.url_key`), which is always valid UTF-8 text.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 900  # below SQLite's host-parameter limit


class UrlVerdictCache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (url TEXT PRIMARY KEY, opted_out INTEGER NOT NULL, checked_at REAL NOT NULL)")

    def lookup(self, urls: Iterable[str], max_age_s: float | None = None) -> dict[str, bool]:
        """Cached verdicts for `urls`, ignoring those checked more than `max_age_s` seconds ago."""
        urls = list(dict.fromkeys(urls))
        oldest = time.time() - max_age_s if max_age_s is not None else float("-inf")
        found: dict[str, bool] = {}
        for i in range(0, len(urls), _CHUNK):
            chunk = urls[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT url, opted_out FROM verdicts WHERE url IN ({marks}) AND checked_at >= ?", (*chunk, oldest))
            found.update((url, bool(flag)) for url, flag in rows)
        return found

    def store(self, verdicts: dict[str, bool], checked_at: float | None = None) -> None:
        stamp = time.time() if checked_at is None else checked_at
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)",
                [(url, int(flag), stamp) for url, flag in verdicts.items()],
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def close(self) -> None:
        self._db.close()
