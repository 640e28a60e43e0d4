"""Client for the Spawning opt-out API (`POST /api/v2/query/urls/`), built for hundreds of millions of URLs.

The API takes newline-joined URLs (at least two per request) and answers `{"urls": [{"url", "optOut"}]}`
in request order; the official client (datadiligence) posts to `.../api/v2/query/urls/` with the token
from `SPAWNING_OPTS_KEY` as `Authorization: API <token>`. This client:
- sends every URL in its normal form (`curation.url_hashes.url_key`: no raw control characters, so a URL
  holding a newline cannot split a request); takes answers by position, and checks each echoed URL
  against the one sent after normalising both (percent-encoding, case of scheme and host);
- batches, runs a bounded number of requests at once under a requests/second limit, and backs off
  exponentially on 429, 5xx, timeouts and connection errors (honouring Retry-After);
- splits a batch the API refuses as a bad request (400, 413, 422) in halves until the offending URL is
  alone, so one strange URL never leaves its whole batch unchecked;
- follows redirects (301, 302, 307, 308) with the same POST body, keeping the token only on the same host;
- stops at once on 401, 403 and 404 (`SpawningAuthError`: a wrong token or endpoint fails every batch),
  and, when asked to fail fast, at the first batch that leaves a URL unchecked after its retries
  (`SpawningUnavailable`).
URLs whose batch still fails are returned as unchecked, never as allowed.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from http.client import HTTPMessage
from typing import IO
from urllib.parse import unquote, urljoin, urlsplit

from curation.errors import UserError
from curation.url_hashes import url_key

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://opts-api.spawningaiapi.com/api/v2/query/urls/"
TOKEN_VARIABLES = ("SPAWNING_TOKEN", "SPAWNING_OPTS_KEY")  # ours, then the official client's
MAX_BATCH_SIZE = 10_000
RETRYABLE_STATUS = {429, 500, 502, 503, 504}
FATAL_STATUS = {401, 403, 404}
SPLIT_STATUS = {400, 413, 422}
REDIRECT_STATUS = {301, 302, 307, 308}
MAX_REDIRECTS = 5


class SpawningError(RuntimeError):
    pass


class SpawningAuthError(SpawningError):
    """The API refuses every request (wrong token or endpoint): the whole check stops."""


class SpawningUnavailable(SpawningError):
    """A batch could not be checked after all its retries, and the caller asked to fail fast."""


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
            raise UserError(f"Spawning batch size must be between 2 and {MAX_BATCH_SIZE}, got {self.batch_size}")
        if not self.endpoint.startswith(("http://", "https://")):
            raise UserError(f"Spawning endpoint must be http(s), got {self.endpoint!r}")
        if self.max_concurrency < 1 or self.requests_per_second <= 0:
            raise UserError("Spawning concurrency and requests/second must be positive")


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
    opted_out: dict[str, bool] = field(default_factory=dict)  # every checked URL key -> its verdict
    unchecked: dict[str, str] = field(default_factory=dict)  # URL key -> why it could not be checked
    requests: int = 0
    retries: int = 0


@dataclass
class _BatchOutcome:
    verdicts: dict[str, bool] = field(default_factory=dict)
    unchecked: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Refused(SpawningError):
    """The API refused this batch as a bad request: split it."""


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _comparable(url: str) -> str:
    return unquote(url_key(url)).rstrip("/")


def parse_response(body: bytes, sent: Sequence[str]) -> list[bool]:
    """The verdicts for `sent`, by position; raises SpawningError on a malformed, short or reordered answer."""
    try:
        entries = json.loads(body)["urls"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SpawningError(f"malformed response: {exc}") from None
    if not isinstance(entries, list) or len(entries) != len(sent):
        got = len(entries) if isinstance(entries, list) else type(entries).__name__
        raise SpawningError(f"response has {got} entries for {len(sent)} URLs")
    verdicts = []
    for url, entry in zip(sent, entries, strict=True):
        if not isinstance(entry, dict) or not isinstance(entry.get("optOut"), bool):
            raise SpawningError(f"response entry for {url!r} has no boolean optOut")
        echo = entry.get("url")
        if isinstance(echo, str) and _comparable(echo) != _comparable(url):
            raise SpawningError(f"response out of order: sent {url!r}, got {echo!r}")
        verdicts.append(entry["optOut"])
    return verdicts


class SpawningClient:
    def __init__(self, config: SpawningConfig, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self._limiter = RateLimiter(config.requests_per_second)
        self._sleep = sleep
        self._opener = urllib.request.build_opener(_NoRedirects)

    def _post(self, urls: Sequence[str]) -> bytes:
        """POST the batch, following redirects with the same body; the response body."""
        body = "\n".join(urls).encode("utf-8")
        endpoint = self.config.endpoint
        host = urlsplit(endpoint).netloc
        for _ in range(MAX_REDIRECTS + 1):
            headers = {"Content-Type": "text/plain"}
            if self.config.token and urlsplit(endpoint).netloc == host:
                headers["Authorization"] = f"API {self.config.token}"
            request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
            self._limiter.acquire()
            try:
                with self._opener.open(request, timeout=self.config.timeout_s) as response:
                    return response.read()
            except urllib.error.HTTPError as exc:
                location = exc.headers.get("Location") if exc.headers else None
                if exc.code in REDIRECT_STATUS and location:
                    endpoint = urljoin(endpoint, location)
                    if urlsplit(endpoint).scheme not in ("http", "https"):
                        raise SpawningAuthError(f"redirected to a non-http(s) URL: {endpoint}") from None
                    continue
                raise _status_error(exc) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        raise SpawningError(f"more than {MAX_REDIRECTS} redirects from {self.config.endpoint}")

    def _attempts(self, sent: list[str]) -> tuple[list[bool] | str, int]:
        """(verdicts for `sent`, or why it gave up after its retries; the requests made)."""
        delay = self.config.backoff_initial_s
        for attempt in range(self.config.max_retries + 1):
            try:
                return parse_response(self._post(sent), sent), attempt + 1
            except _Retryable as exc:
                if attempt == self.config.max_retries:
                    return f"gave up after {attempt + 1} attempts: {exc}", attempt + 1
                wait_s = exc.retry_after if exc.retry_after is not None else delay * (1 + random.random() * 0.25)
                log.warning("Spawning request failed (%s); retrying in %.1fs", exc, wait_s)
                self._sleep(min(wait_s, self.config.backoff_max_s))
                delay = min(delay * 2, self.config.backoff_max_s)
        raise AssertionError("unreachable")

    def _query_batch(self, batch: list[str]) -> _BatchOutcome:
        outcome = _BatchOutcome()
        pending = [batch]
        while pending:
            part = pending.pop()
            sent = part if len(part) >= 2 else part + [""]  # the API refuses a single URL
            try:
                verdicts, requests = self._attempts(sent)
            except _Refused as exc:
                outcome.requests += 1
                if len(part) == 1:
                    outcome.unchecked[part[0]] = f"refused by the API: {exc}"
                else:
                    pending += [part[: len(part) // 2], part[len(part) // 2 :]]
                continue
            except SpawningAuthError:
                raise
            except SpawningError as exc:
                outcome.requests += 1
                outcome.unchecked.update(dict.fromkeys(part, str(exc)))
                continue
            outcome.requests += requests
            outcome.retries += requests - 1
            if isinstance(verdicts, str):  # why it gave up
                outcome.unchecked.update(dict.fromkeys(part, verdicts))
            else:
                outcome.verdicts.update(zip(part, verdicts[: len(part)], strict=True))  # a lone URL went with a padding one
        return outcome

    def query(self, urls: Sequence[str], progress: Callable[[int], None] | None = None, fail_fast: bool = False) -> SpawningResult:
        """Verdicts for the distinct URL keys of `urls`; batches that fail for good leave their URLs unchecked.

        Raises SpawningAuthError on 401/403/404, and with `fail_fast` SpawningUnavailable as soon as a batch
        leaves a URL unchecked (after its retries); requests not yet sent are cancelled.
        """
        unique = list(dict.fromkeys(key for key in map(url_key, urls) if key))
        size = self.config.batch_size
        result = SpawningResult()
        with ThreadPoolExecutor(max_workers=self.config.max_concurrency) as pool:
            futures: set[Future[_BatchOutcome]] = {
                pool.submit(self._query_batch, unique[i : i + size]) for i in range(0, len(unique), size)
            }
            try:
                while futures:
                    done, futures = wait(futures, return_when=FIRST_COMPLETED)
                    for future in done:
                        outcome = future.result()
                        result.opted_out.update(outcome.verdicts)
                        result.unchecked.update(outcome.unchecked)
                        result.requests += outcome.requests
                        result.retries += outcome.retries
                        if fail_fast and outcome.unchecked:
                            url, why = next(iter(outcome.unchecked.items()))
                            raise SpawningUnavailable(f"{url}: {why}")
                        if progress:
                            progress(len(outcome.verdicts) + len(outcome.unchecked))
            except SpawningError:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return result


def _status_error(exc: urllib.error.HTTPError) -> Exception:
    if exc.code in RETRYABLE_STATUS:
        return _Retryable(f"HTTP {exc.code}", _retry_after(exc.headers))
    if exc.code in FATAL_STATUS:
        return SpawningAuthError(f"HTTP {exc.code} {exc.reason} from {exc.url} (check the token and --spawning-endpoint)")
    if exc.code in SPLIT_STATUS:
        return _Refused(f"HTTP {exc.code}: {exc.reason}")
    return SpawningError(f"HTTP {exc.code}: {exc.reason}")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects come back as HTTPError: the client re-sends the POST body itself (urllib would drop it)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        return None
