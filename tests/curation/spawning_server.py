"""A loopback stand-in for the Spawning API that enforces its rules and injects failures on demand.

It serves the official client's endpoint form (`/api/v2/query/urls/`) and, like the framework behind the
real API, redirects the form without the trailing slash there (307 by default; `redirect_status` picks
another code). Requests must carry `Authorization: API <token>`.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

PATH = "/api/v2/query/urls/"


class MockSpawning:
    def __init__(self, token: str = "secret", max_batch: int = 10_000, opted_out: str = "optout"):
        self.token = token
        self.opted_out = opted_out  # URLs containing this are opted out
        self.max_batch = max_batch
        self.failures: list[int | str] = []  # consumed one per request: an HTTP status, "slow", "short", "reorder"
        self.refuse: str | None = None  # a batch holding a URL with this substring gets 400 Bad Request
        self.percent_encode_echo = False  # echo URLs percent-encoded, as a normalising server might
        self.redirect_status = 307
        self.requests: list[list[str]] = []
        self.statuses: list[int] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self.slow_seconds = 1.0
        self._lock = threading.Lock()
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: dict | None = None, headers: dict | None = None):
                with mock._lock:
                    mock.statuses.append(status)
                payload = json.dumps(body or {}).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if self.path == PATH.rstrip("/"):
                    return self._reply(mock.redirect_status, headers={"Location": PATH})
                with mock._lock:
                    mock.concurrent += 1
                    mock.max_concurrent = max(mock.max_concurrent, mock.concurrent)
                    failure = mock.failures.pop(0) if mock.failures and self.path == PATH else None
                try:
                    self._handle(body, failure)
                finally:
                    with mock._lock:
                        mock.concurrent -= 1

            def _handle(self, body: str, failure):
                if self.path != PATH:
                    return self._reply(404)
                if self.headers.get("Authorization") != f"API {mock.token}":
                    return self._reply(401, {"error": "bad token"})
                urls = body.split("\n")
                if len(urls) < 2 or len(urls) > mock.max_batch:
                    return self._reply(400, {"error": "between 2 and max URLs"})
                with mock._lock:
                    mock.requests.append(urls)
                if mock.refuse is not None and any(mock.refuse in u for u in urls):
                    return self._reply(400, {"error": "invalid URL"})
                if isinstance(failure, int):
                    return self._reply(failure, {"error": "injected"}, {"Retry-After": "0"} if failure == 429 else None)
                if failure == "slow":
                    time.sleep(mock.slow_seconds)
                echo = (lambda u: quote(u, safe=":/")) if mock.percent_encode_echo else (lambda u: u)
                answer = [{"url": echo(u), "optOut": mock.opted_out in u, "optIn": False} for u in urls]
                if failure == "short":
                    answer = answer[:-1]
                if failure == "reorder":
                    answer = answer[::-1]
                return self._reply(200, {"urls": answer})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.endpoint = f"{self.base}{PATH}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> MockSpawning:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
