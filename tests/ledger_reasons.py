"""Ledger reasons the code names, and the one table of them (stage, reason, meaning) in `docs/formats.md`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ROOT / "docs" / "formats.md"
PACKAGES = ("curation", "cauldron", "pipelines")
# a rejection built with a literal reason: Rejection("reason", ...), SampleError("reason"), Damaged(i, rest, "reason")
_REJECTION = re.compile(r'\b(?:SampleError|Rejection|DownloadRejected|Damaged)\(\s*(?:[^,()"]+,\s*){0,2}"([a-z][a-z0-9_]+)"')
# a ledger row written with a literal stage and reason: LedgerEntry(id, partition, "stage", "reason", ...), drop(id, "stage", "reason")
_LITERAL_ROW = re.compile(r'\b(?:LedgerEntry|drop)\((?:[^,()]+,\s*){1,2}"([a-z_]+)",\s*"([a-z][a-z0-9_]+)"')
_STEP_STAGE = re.compile(r'^\s+stage = "([a-z_]+)"', re.MULTILINE)
_TABLE_HEADER = "| command | stage | reason | meaning |"
_CODE = re.compile(r"`([^`]+)`")


def _sources(packages: Iterable[str] = PACKAGES) -> Iterable[Path]:
    for package in packages:
        yield from sorted((ROOT / package).rglob("*.py"))


def reasons_in_code(packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """reason -> the files that build a rejection with it as a literal."""
    found: dict[str, set[str]] = {}
    for path in _sources(packages):
        for match in _REJECTION.finditer(path.read_text()):
            found.setdefault(match.group(1), set()).add(str(path.relative_to(ROOT)))
    return found


def stage_reasons_in_code(packages: Iterable[str] = PACKAGES) -> dict[tuple[str, str], set[str]]:
    """(stage, reason) -> files: ledger rows written with literal stage and reason, and each cleaning step's
    stage with the reasons its class rejects with."""
    found: dict[tuple[str, str], set[str]] = {}
    for path in _sources(packages):
        text = path.read_text()
        pairs = {(m.group(1), m.group(2)) for m in _LITERAL_ROW.finditer(text)}
        for block in re.split(r"^class ", text, flags=re.MULTILINE)[1:]:
            if stage := _STEP_STAGE.search(block):
                pairs |= {(stage.group(1), m.group(1)) for m in _REJECTION.finditer(block)}
        for pair in pairs:
            found.setdefault(pair, set()).add(str(path.relative_to(ROOT)))
    return found


@cache
def reason_table() -> frozenset[tuple[str, str]]:
    """(stage, reason) of every row of the ledger table; a cell may name several stages."""
    lines = FORMATS.read_text().splitlines()
    start = lines.index(_TABLE_HEADER)
    rows = set()
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        _, stages, reasons, _ = (cell.strip() for cell in line.strip("|").split("|", 3))
        rows |= {(stage, reason) for stage in _CODE.findall(stages) for reason in _CODE.findall(reasons)}
    return frozenset(rows)


def _pattern(reason: str) -> re.Pattern[str]:
    """A documented reason as a pattern: `http_<status>` stands for http_404, http_500, ..."""
    return re.compile("".join("[a-z0-9_]+" if part.startswith("<") else re.escape(part) for part in re.split(r"(<[^>]+>)", reason)))


def _documented(stage: str | None, reason: str) -> bool:
    return any(
        (stage is None or stage == documented_stage) and _pattern(documented).fullmatch(reason)
        for documented_stage, documented in reason_table()
    )


def undocumented(reasons: Iterable[str]) -> set[str]:
    """The reasons no row of the ledger table names."""
    return {reason for reason in reasons if not _documented(None, reason)}


def undocumented_pairs(pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (stage, reason) pairs no row of the ledger table names."""
    return {(stage, reason) for stage, reason in pairs if not _documented(stage, reason)}


def documented_but_absent(packages: Iterable[str] = (*PACKAGES, "examples")) -> set[str]:
    """Table reasons that no source file spells (a stale row): as a string, or as an f-string prefix and a string
    rest (f"eval_{kind}" with "phash"); patterns such as http_<status> excepted."""
    text = "\n".join(path.read_text() for path in _sources(packages))

    def spelled(reason: str) -> bool:
        splits = [i + 1 for i, char in enumerate(reason) if char == "_"]
        return f'"{reason}"' in text or any(f'"{reason[:i]}{{' in text and f'"{reason[i:]}"' in text for i in splits)

    return {reason for _, reason in reason_table() if "<" not in reason and not spelled(reason)}
