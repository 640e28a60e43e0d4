"""A guarded urllib opener for the img2dataset download workers.

img2dataset fetches with `urllib.request.urlopen(url, timeout)` and reads the whole body. Installed as the
process-wide opener of a download worker (see `init_download_worker`), this opener:
- speaks http and https only (no file:, ftp:, data: handlers), and refuses redirects to other schemes;
- refuses hosts that resolve to loopback, private, link-local or reserved addresses (URLs in web data
  must not reach the machine's own network), on every hop of a redirect chain, unless allowed;
- rejects bodies over `max_bytes` (from Content-Length when sent, else while reading), empty bodies,
  and content types that are not images (`image/*`, or the generic octet-stream types, or none at all);
- reads header dimensions before any decoder runs and rejects images over `max_pixels`;
- enforces a total time limit per image (connection, headers, redirects and body together) on top of
  img2dataset's per-socket-operation timeout, while reading: a watchdog thread shuts the socket of a
  request that runs past its deadline, so a server dripping one byte at a time cannot hold a download
  thread (a per-operation timeout never fires while bytes keep coming).

Rejections raise `DownloadRejected` (a `SampleError`), whose message starts with `[reason]`: img2dataset stores that
message as the sample's `error_message`, and `download_reasons.reason_for` turns it into the ledger reason.
"""

from __future__ import annotations

import heapq
import http.client
import io
import ipaddress
import itertools
import os
import socket
import threading
import time
import urllib.request
import warnings
import weakref
from dataclasses import dataclass
from functools import partial
from typing import IO, Any
from urllib.parse import urlsplit

from PIL import Image

from curation.errors import SampleError

ALLOWED_SCHEMES = ("http", "https")
GENERIC_CONTENT_TYPES = ("application/octet-stream", "binary/octet-stream")
_CHUNK = 64 * 1024
# A request's total-time deadline (a time.monotonic value) rides on the request, on the requests of its
# redirects and on its response as this attribute, through urllib's layers in between.
_DEADLINE_ATTRIBUTE = "potion_deadline"


def _deadline_of(carrier: object) -> float | None:
    return getattr(carrier, _DEADLINE_ATTRIBUTE, None)


def _stamp_deadline(carrier: object, deadline: float) -> None:
    setattr(carrier, _DEADLINE_ATTRIBUTE, deadline)


class DownloadRejected(SampleError):
    """A refused download; its message is `[reason] detail`, the form img2dataset keeps as `error_message`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.args = (f"[{reason}] {detail}",)


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
        host_address = info[4][0]
        if not isinstance(host_address, str):  # not an IP socket address
            raise DownloadRejected("private_address", f"{host} resolves to a non-IP address {host_address!r}")
        address = ipaddress.ip_address(host_address.split("%")[0])
        if not address.is_global:
            raise DownloadRejected("private_address", f"{host} resolves to {address}")


class _NetworkGuard(urllib.request.BaseHandler):
    """Checks the host of every request the opener makes, redirects included."""

    handler_order = 100  # before the request goes out

    def http_request(self, request: Any) -> Any:
        _public_only(request.host.rsplit(":", 1)[0].strip("[]") if request.host else "")
        return request

    https_request = http_request


class _Watchdog:
    """One thread per process that shuts down sockets whose deadline has passed.

    It holds weak references only, so a socket closed and dropped before its deadline is simply gone
    when its turn comes; nothing needs cancelling.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref]] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, sock: socket.socket) -> None:
        with self._wakeup:
            heapq.heappush(self._heap, (deadline, next(self._order), weakref.ref(sock)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="download-deadlines", daemon=True)
                self._thread.start()
            self._wakeup.notify()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wakeup.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, ref = heapq.heappop(self._heap)
            sock = ref()
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once
                except OSError:
                    pass  # already closed


_WATCHDOG = _Watchdog()


def _timed_out(total: float) -> DownloadRejected:
    return DownloadRejected("timeout", f"not done within {total}s (connection, headers and body)")


class _DeadlineConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket the watchdog shuts at the image's deadline."""

    def __init__(self, *args: Any, deadline: float, total: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline, self.total = deadline, total

    def _open_socket(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(self.total)
        if isinstance(self.timeout, (int, float)):
            self.timeout = min(self.timeout, remaining)
        http.client.HTTPConnection.connect(self)
        _WATCHDOG.watch(self.deadline, self.sock)

    def connect(self) -> None:
        self._open_socket()

    def getresponse(self) -> http.client.HTTPResponse:
        try:
            response = super().getresponse()
        except (OSError, http.client.HTTPException):
            if time.monotonic() >= self.deadline:
                raise _timed_out(self.total) from None
            raise
        _stamp_deadline(response, self.deadline)
        return response


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    def connect(self) -> None:
        self._open_socket()
        # as http.client's HTTPSConnection.connect; typeshed does not declare its private attributes
        server_hostname = self._tunnel_host or self.host  # type: ignore[attr-defined]
        context = self._context  # type: ignore[attr-defined]
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname, do_handshake_on_connect=False)
        _WATCHDOG.watch(self.deadline, self.sock)  # the raw socket is detached now: watch the TLS one
        self.sock.do_handshake()


class _DeadlineStamp(urllib.request.BaseHandler):
    """Gives each new request its deadline; redirected requests inherit it (see the redirect handler)."""

    handler_order = 50

    def __init__(self, total: float) -> None:
        self.total = total

    def http_request(self, request: Any) -> Any:
        if _deadline_of(request) is None:
            _stamp_deadline(request, time.monotonic() + self.total)
        return request

    https_request = http_request


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, total: float) -> None:
        super().__init__()
        self.total = total

    def http_open(self, req: Any) -> Any:
        return self.do_open(partial(_DeadlineConnection, deadline=req.potion_deadline, total=self.total), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, total: float) -> None:
        super().__init__()
        self.total = total

    def https_open(self, req: Any) -> Any:
        connection = partial(_DeadlineHTTPSConnection, deadline=req.potion_deadline, total=self.total)
        # HTTPSHandler's own SSL context; typeshed does not declare this private attribute
        return self.do_open(connection, req, context=self._context)  # type: ignore[attr-defined]


class _SchemeCheckingRedirectHandler(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise DownloadRejected("redirect_not_allowed", f"redirect to a {scheme or 'schemeless'} URL")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        deadline = _deadline_of(req)
        if new is not None and deadline is not None:
            _stamp_deadline(new, deadline)  # one budget for the whole chain
        return new


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
        deadline = _deadline_of(response)
        self._deadline = deadline if deadline is not None else time.monotonic() + guard.total_timeout_s
        self.headers = response.headers

    def _chunk(self, size: int) -> bytes:
        """One read; past the deadline (the watchdog has shut the socket) it is a timeout, not an end."""
        try:
            chunk = self._response.read(size)
        except (OSError, http.client.HTTPException):
            if time.monotonic() >= self._deadline:
                raise _timed_out(self._guard.total_timeout_s) from None
            raise
        if time.monotonic() >= self._deadline:
            raise _timed_out(self._guard.total_timeout_s)
        return chunk

    def read(self, amt: int | None = None) -> bytes:
        chunks, total = [], 0
        while amt is None or total < amt:
            chunk = self._chunk(_CHUNK if amt is None else min(_CHUNK, amt - total))
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
        _DeadlineStamp(guard.total_timeout_s),
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        _DeadlineHTTPHandler(guard.total_timeout_s),
        _DeadlineHTTPSHandler(guard.total_timeout_s),
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
