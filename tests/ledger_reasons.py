"""Ledger reasons the code names, and whether `docs/formats.md` explains them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ROOT / "docs" / "formats.md"
# a rejection built with a literal reason: SampleError("reason", ...), RowRejected("reason"), ...
_REJECTION = re.compile(
    r'\b(?:SampleError|RowRejected|DownloadRejected|Rejected|PageFailure|Unread|DecodeFailure)\(\s*(?:[^,()"]+,\s*)?"([a-z][a-z0-9_]+)"'
)


def reasons_in_code(packages: Iterable[str] = ("curation", "cauldron", "pipelines")) -> dict[str, set[str]]:
    """reason -> the files that raise it with a literal reason."""
    found: dict[str, set[str]] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            for match in _REJECTION.finditer(path.read_text()):
                found.setdefault(match.group(1), set()).add(str(path.relative_to(ROOT)))
    return found


def undocumented(reasons: Iterable[str]) -> set[str]:
    text = FORMATS.read_text()
    return {reason for reason in reasons if f"`{reason}`" not in text}
