"""Size of the select phase's DropRule, and the bytes shipped to the write tasks, when many scores tie.

Synthetic score sidecars (id string + float64 score, the `scores/<partition>.parquet` layout) over 256
partitions: 5% of the scores lie above a value T, 10% equal T exactly (a coarse score, such as a rounded
NSFW probability), the rest below. Dropping the top 10% then keeps the cutoff at T and drops half of the
ties, the worst case for a rule that lists the dropped tied ids.

- old: the rule before the hash tie-break: the ids of every score equal to the cutoff, read, sorted, and
  the first (k - above) kept as a frozenset in the rule; the rule went in each write job's arguments.
- new: `pipelines.selection.select_scores` (ties broken by a 64-bit id hash; the rule keeps the boundary
  hash and id); the rule goes to the write tasks once (`write_partitions(shared=...)`).

Rule size is the length of its fields as JSON (the tie ids as a list), and the deep in-memory size of
its fields (`sys.getsizeof` of each field and of every tie id); bytes shipped = JSON bytes x the copies
sent (one per partition for old, one for new).

    python benchmarks/selection_ties.py                    # 16M scores
    python benchmarks/selection_ties.py --scores 1000000 4000000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARTITIONS = 256
COLUMN = "nsfw"
TIE = 0.5
FRACTION = 0.1


def write_sidecars(folder: Path, total: int, partitions: int) -> None:
    """`total` scored rows over `partitions` sidecars: 5% above TIE, 10% exactly TIE, the rest below."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    bounds = np.linspace(0, total, partitions + 1).astype(np.int64)
    for index in range(partitions):
        rows = np.arange(bounds[index], bounds[index + 1])
        draw = rng.random(len(rows))
        scores = np.where(draw < 0.05, TIE + 0.01 + draw, np.where(draw < 0.15, TIE, draw * TIE * 0.9))
        ids = pc.binary_join_element_wise("laion-", pc.cast(pa.array(rows), pa.string()), "")
        pq.write_table(pa.table({"id": ids, COLUMN: scores}), folder / f"part-{index:05d}.parquet")


def old_tie_ids(folder: Path, partitions: list) -> frozenset[str]:
    """The tie ids the rule carried before the hash tie-break (the baseline being measured)."""
    from curation.selection import read_score_columns, read_scored_ids

    columns = read_score_columns([folder / f"{p.name}.parquet" for p in partitions], COLUMN)
    k = int(round(FRACTION * len(columns.scores)))
    cutoff = float(-np.partition(-columns.scores, k - 1)[k - 1])
    above = int(np.count_nonzero(columns.scores > cutoff))
    found: list[str] = []
    for p in partitions:
        ids, scores = read_scored_ids(folder / f"{p.name}.parquet", COLUMN)
        found.extend(ids[i] for i in np.flatnonzero(scores == cutoff))
    return frozenset(sorted(found)[: k - above])


def rule_bytes(fields: dict) -> tuple[int, int]:
    """(JSON bytes, deep in-memory bytes) of a rule's fields; a set of ids counts each id."""
    as_json = {k: sorted(v) if isinstance(v, frozenset) else v for k, v in fields.items()}
    deep = sum(sys.getsizeof(v) + (sum(sys.getsizeof(i) for i in v) if isinstance(v, frozenset) else 0) for v in fields.values())
    return len(json.dumps(as_json)), deep


def measure(folder: Path, partitions: list) -> list[dict]:
    from pipelines.selection import select_scores

    started = time.perf_counter()
    rule = select_scores(
        folder, partitions, COLUMN, top_fraction=FRACTION, max_score=None, fraction_reason="top", threshold_reason="max"
    ).rule
    new_seconds = time.perf_counter() - started
    new_fields = dataclasses.asdict(rule)
    started = time.perf_counter()
    ties = old_tie_ids(folder, partitions)
    old_seconds = time.perf_counter() - started
    old_fields = {k: v for k, v in new_fields.items() if k not in ("tie_hash", "tie_id")} | {"tie_ids": ties}
    rows = []
    for method, fields, copies, seconds in (("old", old_fields, len(partitions), old_seconds), ("new", new_fields, 1, new_seconds)):
        as_json, deep = rule_bytes(fields)
        rows.append(
            {"method": method, "ties_in_rule": len(ties) if method == "old" else 0, "rule_json_bytes": as_json,
             "rule_memory_bytes": deep, "copies": copies, "shipped_bytes": as_json * copies, "seconds": seconds, "dropped": rule.dropped}
        )  # fmt: skip
    return rows


def main() -> None:
    from curation.readers import Partition

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scores", type=int, nargs="+", default=[16_000_000])
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="selection-ties-") as tmp:
        for total in args.scores:
            folder = Path(tmp) / str(total)
            write_sidecars(folder, total, args.partitions)
            partitions = [Partition(path.stem, path) for path in sorted(folder.glob("*.parquet"))]
            rows += [{"scores": total, **row} for row in measure(folder, partitions)]
    header = f"{'scores':>11} {'method':>6} {'tie ids':>9} {'rule JSON B':>12} {'rule mem B':>12} {'copies':>6} {'shipped B':>14}"
    print(f"{header} {'seconds':>8}")
    for row in rows:
        print(
            f"{row['scores']:>11,} {row['method']:>6} {row['ties_in_rule']:>9,} {row['rule_json_bytes']:>12,} "
            f"{row['rule_memory_bytes']:>12,} {row['copies']:>6} {row['shipped_bytes']:>14,} {row['seconds']:>8.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
