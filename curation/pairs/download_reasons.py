"""Ledger reasons for img2dataset's per-sample `status` / `error_message` (from its per-shard parquet)."""

from __future__ import annotations

import re

_TAGGED = re.compile(r"\[([a-z_]+)\]")  # DownloadRejected messages start with `[reason]`
_HTTP_STATUS = re.compile(r"HTTP Error (\d{3})")
_MESSAGE_REASONS = (
    ("timed out", "timeout"),
    ("x-robots-tag", "opt_out_header"),
    ("hash mismatch", "hash_mismatch"),
    ("image decoding error", "decode_error"),
    ("image area too large", "too_many_pixels"),
    ("cv_io_max_image_pixels", "too_many_pixels"),  # OpenCV's decoder cap, set by the download worker
    ("image too small", "image_too_small"),
    ("aspect ratio too large", "aspect_ratio_too_large"),
    ("name or service not known", "dns_error"),
    ("nodename nor servname", "dns_error"),
    ("temporary failure in name resolution", "dns_error"),
    ("connection refused", "connection_error"),
    ("connection reset", "connection_error"),
    ("remote end closed connection", "connection_error"),
    ("certificate verify failed", "ssl_error"),
    ("unknown url type", "bad_url_scheme"),
)


def reason_for(status: str | None, error_message: str | None) -> str:
    """A short ledger code for a failed download or resize; `download_error` / `decode_error` otherwise."""
    message = error_message or ""
    if tagged := _TAGGED.search(message):
        return tagged.group(1)
    lowered = message.lower()
    if "redirection to url" in lowered:  # urllib's own refusal (e.g. to file:), reported as an HTTP error
        return "redirect_not_allowed"
    if http := _HTTP_STATUS.search(message):
        return f"http_{http.group(1)}"
    for needle, reason in _MESSAGE_REASONS:
        if needle in lowered:
            return reason
    return "decode_error" if status == "failed_to_resize" else "download_error"
