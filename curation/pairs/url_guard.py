"""A guarded urllib opener for the img2dataset download workers.

img2dataset fetches with `urllib.request.urlopen(url, timeout)` and reads the whole body. Installed as the
process-wide opener of a download worker (see `init_download_worker`), this opener:
- speaks http and https only (no file:, ftp:, data: handlers), and refuses redirects to other schemes;
- refuses hosts that resolve to loopback, private, link-local or reserved addresses (URLs in web data
  must not reach the machine's own network), on every hop of a redirect chain, unless allowed;
- rejects bodies over `max_bytes` (from Content-Length when sent, else while reading), empty bodies,
  and content types that are not images (`image/*`, or the generic octet-stream types, or none at all);
- reads header dimensions before any decoder runs and rejects images over `max_pixels`;
- enforces a total time limit per body on top of img2dataset's per-socket-operation timeout.

Rejections raise `DownloadRejected`, whose message starts with `[reason]`: img2dataset stores that
message as the sample's `error_message`, and `download_reasons.reason_for` turns it into the ledger reason.
"""

from __future__ import annotations

import io
import ipaddress
import os
import socket
import time
import urllib.request
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

ALLOWED_SCHEMES = ("http", "https")
GENERIC_CONTENT_TYPES = ("application/octet-stream", "binary/octet-stream")
_CHUNK = 64 * 1024


class DownloadRejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"[{reason}] {detail}")
        self.reason = reason


@dataclass(frozen=True)
class DownloadGuard:
    max_bytes: int
    max_pixels: int
    total_timeout_s: float
    allow_private_networks: bool = False


def _public_only(host: str) -> None:
    """Raise DownloadRejected if `host` resolves to any non-public address."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise DownloadRejected("dns_error", f"{host}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            raise DownloadRejected("private_address", f"{host} resolves to {address}")


class _NetworkGuard(urllib.request.BaseHandler):
    """Checks the host of every request the opener makes, redirects included."""

    handler_order = 100  # before the request goes out

    def http_request(self, request: Any) -> Any:
        _public_only(request.host.rsplit(":", 1)[0].strip("[]") if request.host else "")
        return request

    https_request = http_request


class _SchemeCheckingRedirectHandler(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise DownloadRejected("redirect_not_allowed", f"redirect to a {scheme or 'schemeless'} URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _check_dimensions(data: bytes, max_pixels: int) -> None:
    """Reject from the header alone; undecodable data is left to the decoder, which reports it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data)).size
    except Image.DecompressionBombError as exc:
        raise DownloadRejected("too_many_pixels", str(exc)) from None
    except Exception:
        return
    if width * height > max_pixels:
        raise DownloadRejected("too_many_pixels", f"{width}x{height} exceeds the {max_pixels} pixel cap")


class _GuardedBody:
    """The response as img2dataset uses it (`headers`, `read()`, a context manager), with the checks."""

    def __init__(self, response: Any, guard: DownloadGuard) -> None:
        self._response = response
        self._guard = guard
        self._deadline = time.monotonic() + guard.total_timeout_s
        self.headers = response.headers

    def read(self, amt: int | None = None) -> bytes:
        chunks, total = [], 0
        while amt is None or total < amt:
            if time.monotonic() > self._deadline:
                raise DownloadRejected("timeout", f"body not read within {self._guard.total_timeout_s}s")
            chunk = self._response.read(_CHUNK if amt is None else min(_CHUNK, amt - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > self._guard.max_bytes:
                raise DownloadRejected("too_large", f"body over the {self._guard.max_bytes} byte cap")
        data = b"".join(chunks)
        if amt is None:
            if not data:
                raise DownloadRejected("empty_image", "zero-byte body")
            _check_dimensions(data, self._guard.max_pixels)
        return data

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> _GuardedBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)


class _ResponseGuard(urllib.request.BaseHandler):
    handler_order = 1001  # after HTTPErrorProcessor: only successful final responses get here

    def __init__(self, guard: DownloadGuard) -> None:
        self.guard = guard

    def http_response(self, request: Any, response: Any) -> Any:
        if isinstance(response, _GuardedBody):  # the final response of a redirect chain comes by twice
            return response
        content_type = (response.headers.get_content_type() if response.headers.get("Content-Type") else "").lower()
        if content_type and not content_type.startswith("image/") and content_type not in GENERIC_CONTENT_TYPES:
            response.close()
            raise DownloadRejected("non_image_content_type", content_type)
        length = response.headers.get("Content-Length")
        if length is not None and length.strip().isdigit():
            if int(length) > self.guard.max_bytes:
                response.close()
                raise DownloadRejected("too_large", f"Content-Length {length} > the {self.guard.max_bytes} byte cap")
            if int(length) == 0:
                response.close()
                raise DownloadRejected("empty_image", "zero-byte body")
        return _GuardedBody(response, self.guard)

    https_response = http_response


def build_guarded_opener(guard: DownloadGuard) -> urllib.request.OpenerDirector:
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _SchemeCheckingRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
        _ResponseGuard(guard),
    ):
        opener.add_handler(handler)
    if not guard.allow_private_networks:
        opener.add_handler(_NetworkGuard())
    return opener


def init_download_worker(guard: DownloadGuard) -> None:
    """Pool initializer of a download process: cap OpenCV's decoder, then install the guarded opener.

    Runs before the worker imports OpenCV (img2dataset's resizer), which reads its pixel limit once.
    """
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(guard.max_pixels)
    urllib.request.install_opener(build_guarded_opener(guard))
