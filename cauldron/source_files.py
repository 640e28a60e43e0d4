"""Which files of a source `cauldron build` reads, and the guard against training on evaluation splits.

A source is a file or a folder. Data files are parquet, Arrow (a `save_to_disk` folder), JSON, JSON
lines (also gzipped), and zip / tar archives of those (as the text-only sets and the original releases ship). Hidden
files and folders (`.cache/`, `.gitattributes`) and the metadata files of `save_to_disk` are not data.
An adapter may narrow the files it reads (`include` globs): the release of AI2D keeps its questions in
`questions/*.json` next to unrelated annotation JSON.

Evaluation guard. The Cauldron trains on train splits only. A file is refused when its path under the
source, an archive member's name, the source folder's own name (when it is a split's name, `test/`), or the split recorded by
`datasets` (`state.json`) names an evaluation split: a word such as test, testdev, val, validation,
dev or testmini, with or without digits (`val2014`, `test1`). Refused files are not read; the report
lists them per subset with the reason. `allow_eval_splits` turns the guard off.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from curation.errors import UserError
from curation.storage import ObjectPath, StoragePath
from curation.storage import relative as relative_path

KINDS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "jsonl", ".zip": "zip", ".tar": "tar"}
TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")
DATASET_METADATA_FILES = frozenset({"dataset_info.json", "state.json", "dataset_dict.json"})
EVAL_SPLIT_WORDS = frozenset(
    {"test", "testdev", "testmini", "val", "valid", "validation", "minival", "dev", "eval", "evaluation", "heldout"}
)
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


class SourceError(UserError):
    """A source (or one of its files) that cannot be used at all; the message names the file and why."""


@dataclass(frozen=True)
class SourceFile:
    name: str  # names the file in row ids and work files: its path under the source root, made safe
    path: StoragePath
    kind: str  # parquet | arrow | json | jsonl | zip | tar
    relative: str  # its path under the source root, as reports show it


@dataclass(frozen=True)
class Refused:
    file: str
    reason: str


@dataclass
class SourceListing:
    root: StoragePath  # the folder relative image paths are resolved against
    files: list[SourceFile] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


def printable(name: str) -> str:
    """A file or member name as text that can be written anywhere: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def eval_split_word(name: str) -> str | None:
    """The word of `name` that names an evaluation split (`val2014` in `..._val2014_questions.json`), or None."""
    for token in re.split(r"[^A-Za-z0-9]+", name):
        if re.sub(r"\d+$", "", token.lower()) in EVAL_SPLIT_WORDS:
            return token
    return None


def _is_split_name(name: str) -> bool:
    """The whole name is a split word (`test`, `val2014`), as a split's own folder is named."""
    return re.sub(r"\d+$", "", name.lower()) in EVAL_SPLIT_WORDS


def file_kind(path: StoragePath) -> str | None:
    """parquet | arrow | json | jsonl | zip | tar, or None for a file that is not data (`x.jsonl.gz` is jsonl)."""
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith((".json.gz", ".jsonl.gz")):
        name = name[: -len(".gz")]
    return KINDS.get(Path(name).suffix)


def _recorded_split(path: StoragePath) -> str | None:
    """The split `datasets` recorded for an Arrow file of a `save_to_disk` folder (state.json `_split`)."""
    state = path.parent / "state.json"
    try:
        split = json.loads(state.read_text(encoding="utf-8")).get("_split") if state.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return str(split) if split else None


def _eval_reason(relative: str, path: StoragePath, kind: str) -> str | None:
    word = eval_split_word(relative)
    if word:
        return f"evaluation split in the file name ({word!r})"
    split = _recorded_split(path) if kind == "arrow" else None
    if split and eval_split_word(split):
        return f"evaluation split recorded by datasets ({split!r})"
    return None


def _safe_name(relative: str) -> str:
    """A file's name in row ids and work files: its path under the root, without the suffix unless needed."""
    return _NAME_UNSAFE.sub("_", relative).strip("_") or "part"


def _matches(relative: str, include: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch("/" + relative, "*/" + pattern) for pattern in include)


def list_source(path: StoragePath, include: Sequence[str] = (), allow_eval_splits: bool = False) -> SourceListing:
    """The data files of one source, sorted, with those refused by the evaluation guard set apart.

    Raises SourceError when the path does not exist or holds no data file the adapter reads.
    """
    if not path.exists():
        raise SourceError(f"not found: {path}")
    root = path.parent if path.is_file() else path
    # object listings hold files only: no request per file to ask
    candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if isinstance(p, ObjectPath) or p.is_file())
    listing = SourceListing(root)
    own_word = path.name if path.is_dir() and _is_split_name(path.name) else None
    for candidate in candidates:
        relative = printable(relative_path(candidate, root).as_posix())
        kind = file_kind(candidate)
        if kind is None or candidate.name in DATASET_METADATA_FILES or any(p.startswith(".") for p in relative.split("/")):
            continue
        if include and not _matches(relative, include):
            continue
        reason = _eval_reason(relative, candidate, kind)
        if reason is None and own_word:
            reason = f"evaluation split in the source folder's name ({own_word!r})"
        if reason and not allow_eval_splits:
            listing.refused.append(Refused(relative, reason))
            continue
        listing.files.append(SourceFile(_safe_name(relative.rsplit(".", 1)[0]), candidate, kind, relative))
    names = [f.name for f in listing.files]
    listing.files = [f if names.count(f.name) == 1 else replace(f, name=_safe_name(f.relative)) for f in listing.files]
    if not listing.files:
        if listing.refused:
            shown = ", ".join(f"{r.file} ({r.reason})" for r in listing.refused[:3])
            raise SourceError(
                f"every data file of {path} is an evaluation split: {shown}; point at the train "
                "files, or pass --allow-eval-splits if you mean it"
            )
        wanted = f" matching {', '.join(include)}" if include else ""
        raise SourceError(f"no data files{wanted} in {path} (parquet, arrow, json, jsonl, or zip/tar of those)")
    return listing
