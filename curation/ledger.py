"""The ledger: one row per dropped sample with the stage and reason that dropped it.

For every run, input ids = kept ids + ledger ids, each exactly once. Ledger parts are written per
input partition (atomically) and read back together for the report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import pyarrow as pa

from curation.atomic import write_parquet
from curation.errors import Rejection
from curation.storage import StoragePath, read_parquet

LEDGER_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("partition", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)


@dataclass(frozen=True)
class LedgerEntry:
    id: str
    partition: str
    stage: str
    reason: str
    detail: str = ""

    @classmethod
    def of(cls, rejection: Rejection, partition: str, stage: str, sample_id: str | None = None) -> LedgerEntry:
        """The ledger row of a rejection: of `sample_id`, else of the sample the rejection names."""
        sample = sample_id if sample_id is not None else rejection.id
        if sample is None:
            raise ValueError(f"rejection {rejection.reason!r} names no sample")
        return cls(sample, partition, stage, rejection.reason, rejection.detail)


def write_ledger(path: StoragePath, entries: list[LedgerEntry]) -> dict[str, int]:
    """Write one partition's ledger part; returns its reason -> row count (for the partition's manifest)."""
    table = pa.Table.from_pylist([asdict(e) for e in entries], schema=LEDGER_SCHEMA)
    write_parquet(path, table)
    return dict(Counter(e.reason for e in entries))


def read_ledger(paths: list[StoragePath]) -> pa.Table:
    tables = [read_parquet(p, schema=LEDGER_SCHEMA) for p in sorted(paths)]
    return pa.concat_tables(tables) if tables else LEDGER_SCHEMA.empty_table()
