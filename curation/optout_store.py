"""The merged Spawning answers of a run, kept under its output so that a rerun skips the opt-out phase.

Collecting every image URL of the input (all of OBELICS: ~350M) is work of its own, which the SQLite
URL cache does not save: it saves only the requests. So once every partition's URLs are checked, the
merged answers (opted-out URL hashes; 8 bytes each) are written to `<output>/optout_answers.parquet`,
stamped with a key, and a rerun whose key matches takes them instead of collecting and asking again.

The key is a digest of what the answers depend on:
- the input partitions: each one's name, location and file identity (`curation.storage.stat_keys`: size
  and modification time locally, size and ETag on object stores, one listing per folder), so a
  partition added, removed or replaced changes it;
- the do-not-train lists (URLs on them are never asked about);
- the Spawning endpoint (another service gives other answers).
The token and the request pacing settings are not in it: they change how the answers are fetched, not
what they are. Answers with unchecked URLs are never kept, so a rerun asks about those again; with
`--recheck-after-days`, kept answers older than that are not used.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pyarrow as pa

from curation.atomic import write_parquet
from curation.optout import SpawningAnswers
from curation.readers import Partition
from curation.storage import ObjectPath, StoragePath, read_parquet, stat_keys
from curation.url_hashes import HashSet

FORMAT_VERSION = 1
METADATA_KEY = b"potion.optout_answers"
SCHEMA = pa.schema([("hash", pa.uint64())])


def _located(path: StoragePath) -> str:
    return str(path if isinstance(path, ObjectPath) else path.resolve())


def answers_key(partitions: list[Partition], lists_fingerprint: str, endpoint: str) -> str:
    """The digest the kept answers must carry to be reused (see the module docstring)."""
    identities = stat_keys([p.path for p in partitions])
    files = [[p.name, _located(p.path), identity] for p, identity in zip(partitions, identities, strict=True)]
    parts = [FORMAT_VERSION, files, lists_fingerprint, endpoint]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def save_answers(path: StoragePath, key: str, answers: SpawningAnswers, now: float | None = None) -> bool:
    """Keep `answers` under `key`; answers with unchecked URLs are not kept (returns False)."""
    if len(answers.unchecked):
        return False
    stamp = {"key": key, "created": time.time() if now is None else now}
    table = pa.table({"hash": answers.opted_out.hashes}, schema=SCHEMA.with_metadata({METADATA_KEY: json.dumps(stamp).encode()}))
    write_parquet(path, table)
    return True


def load_answers(path: StoragePath, key: str, max_age_s: float | None = None, now: float | None = None) -> SpawningAnswers | None:
    """The kept answers when they carry `key` (and are younger than `max_age_s`), else None."""
    if not path.exists():
        return None
    table = read_parquet(path)
    stamp = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    if stamp.get("key") != key:
        return None
    age = (time.time() if now is None else now) - float(stamp["created"])
    if max_age_s is not None and age > max_age_s:
        return None
    hashes = table.column("hash").to_numpy()
    return SpawningAnswers(HashSet(np.asarray(hashes, dtype=np.uint64)))
