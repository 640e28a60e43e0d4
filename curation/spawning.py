"""Client for the Spawning opt-out API (`POST /api/v2/query/urls`), built for hundreds of millions of URLs.

The API takes newline-joined URLs (at least two per request) and answers `{"urls": [{"url", "optOut"}]}`
in request order. The client batches, runs a bounded number of requests at once under a requests/second
limit, backs off exponentially on 429, 5xx, timeouts and connection errors (honouring Retry-After), and
checks every response for length and order. URLs whose batch still fails are returned as unchecked, never
as allowed.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://opts-api.spawningaiapi.com/api/v2/query/urls"
MAX_BATCH_SIZE = 10_000
RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class SpawningError(RuntimeError):
    pass


@dataclass(frozen=True)
class SpawningConfig:
    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = None
    batch_size: int = 1000
    max_concurrency: int = 10
    requests_per_second: float = 20.0
    timeout_s: float = 60.0
    max_retries: int = 8
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 600.0

    def __post_init__(self) -> None:
        if not 2 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"Spawning batch size must be between 2 and {MAX_BATCH_SIZE}, got {self.batch_size}")
        if not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"Spawning endpoint must be http(s), got {self.endpoint!r}")
        if self.max_concurrency < 1 or self.requests_per_second <= 0:
            raise ValueError("Spawning concurrency and requests/second must be positive")


class RateLimiter:
    """At most `rate` acquisitions per second across threads (evenly spaced start times)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        self._interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock = clock

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            time.sleep(start - now)


@dataclass
class SpawningResult:
    opted_out: dict[str, bool] = field(default_factory=dict)  # every checked URL -> its verdict
    unchecked: dict[str, str] = field(default_factory=dict)  # URL -> why it could not be checked
    requests: int = 0
    retries: int = 0


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def parse_response(body: bytes, sent: Sequence[str]) -> list[bool]:
    """The verdicts for `sent`, in order; raises SpawningError on a malformed, short or reordered answer."""
    try:
        entries = json.loads(body)["urls"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SpawningError(f"malformed response: {exc}") from None
    if not isinstance(entries, list) or len(entries) != len(sent):
        got = len(entries) if isinstance(entries, list) else type(entries).__name__
        raise SpawningError(f"response has {got} entries for {len(sent)} URLs")
    verdicts = []
    for url, entry in zip(sent, entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("optOut"), bool):
            raise SpawningError(f"response entry for {url!r} has no boolean optOut")
        if "url" in entry and entry["url"] != url:
            raise SpawningError(f"response out of order: sent {url!r}, got {entry['url']!r}")
        verdicts.append(entry["optOut"])
    return verdicts


class SpawningClient:
    def __init__(self, config: SpawningConfig, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self._limiter = RateLimiter(config.requests_per_second)
        self._sleep = sleep

    def _post(self, urls: Sequence[str]) -> bytes:
        headers = {"Content-Type": "text/plain"}
        if self.config.token:
            headers["Authorization"] = f"API {self.config.token}"
        request = urllib.request.Request(
            self.config.endpoint, data="\n".join(urls).encode("utf-8"), headers=headers, method="POST"
        )
        self._limiter.acquire()
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in RETRYABLE_STATUS:
                raise _Retryable(f"HTTP {exc.code}", _retry_after(exc.headers)) from None
            raise SpawningError(f"HTTP {exc.code}: {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None

    def _query_batch(self, batch: list[str]) -> tuple[dict[str, bool], str | None, int, int]:
        sent = batch if len(batch) >= 2 else batch + [""]  # the API refuses a single URL
        delay = self.config.backoff_initial_s
        requests = 0
        for attempt in range(self.config.max_retries + 1):
            requests += 1
            try:
                verdicts = parse_response(self._post(sent), sent)
                return dict(zip(batch, verdicts)), None, requests, attempt
            except _Retryable as exc:
                if attempt == self.config.max_retries:
                    return {}, f"gave up after {attempt + 1} attempts: {exc}", requests, attempt
                wait = exc.retry_after if exc.retry_after is not None else delay * (1 + random.random() * 0.25)
                log.warning("Spawning request failed (%s); retrying in %.1fs", exc, wait)
                self._sleep(min(wait, self.config.backoff_max_s))
                delay = min(delay * 2, self.config.backoff_max_s)
            except SpawningError as exc:
                return {}, str(exc), requests, attempt
        raise AssertionError("unreachable")

    def query(self, urls: Sequence[str], progress: Callable[[int], None] | None = None) -> SpawningResult:
        """Verdicts for the distinct `urls`; batches that fail for good leave their URLs unchecked."""
        unique = list(dict.fromkeys(u for u in urls if u))
        size = self.config.batch_size
        batches = [unique[i : i + size] for i in range(0, len(unique), size)]
        result = SpawningResult()
        with ThreadPoolExecutor(max_workers=self.config.max_concurrency) as pool:
            for batch, (verdicts, error, requests, retries) in zip(batches, pool.map(self._query_batch, batches)):
                result.opted_out.update(verdicts)
                result.requests += requests
                result.retries += retries
                if error:
                    result.unchecked.update(dict.fromkeys(batch, error))
                if progress:
                    progress(len(batch))
        return result
