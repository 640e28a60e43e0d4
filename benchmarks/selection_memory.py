"""Driver memory and time of the select phase (OBELICS perplexity, pairs NSFW) as the score count grows.

Synthetic score sidecars (id string + float64 score, the `scores/<partition>.parquet` layout; scores on a
coarse grid so thousands tie at the cutoff, 1% NaN, 1% null) are written with pyarrow into a temporary
folder, 256 partitions per scale. Each measurement runs in a fresh process; a thread samples its resident
memory every 5 ms; the growth over the idle process is divided by the score count, and the marginal
column divides the growth between two scales by the scores added (the fixed part, Arrow's pool and one
sidecar's table, cancels out).

- new: `pipelines.selection.select_scores` (score columns only, one DropRule) plus the per-partition
  write fingerprints `ScoreSelection.jobs` computes on the driver.
- old: what the pipelines did before: every sidecar read whole, ids as Python strings, an id -> partition
  dict, `select_high_scores`, and per-partition drop dicts (run at 1M and 4M only).

Target: new <= 32 bytes a score of marginal growth, time linear in the count.

    python benchmarks/selection_memory.py                        # 1M, 4M, 16M (old at 1M, 4M)
    python benchmarks/selection_memory.py --scores 250000 1000000 --old-up-to 1000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARTITIONS = 256
COLUMN = "perplexity"


def write_sidecars(folder: Path, total: int) -> None:
    """`total` scored rows over PARTITIONS sidecars, written column-wise (no per-row Python objects)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    bounds = np.linspace(0, total, PARTITIONS + 1).astype(np.int64)
    for index in range(PARTITIONS):
        rows = np.arange(bounds[index], bounds[index + 1])
        scores = np.round(rng.lognormal(3.0, 0.6, len(rows)), 1)  # a coarse grid: many ties at any cutoff
        scores[rng.random(len(rows)) < 0.01] = np.nan
        ids = pc.binary_join_element_wise("doc-", pc.cast(pa.array(rows), pa.string()), "")
        values = pa.array(scores, mask=rng.random(len(rows)) < 0.01)  # null: a document that was not scored
        pq.write_table(pa.table({"id": ids, COLUMN: values}), folder / f"part-{index:05d}.parquet")


class PeakRss:
    """Peak resident memory of this process, sampled every 5 ms."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self.running = False

    def _run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def select_new(folder: Path, partitions: list) -> int:
    from pipelines.selection import select_scores

    selection = select_scores(folder, partitions, COLUMN, top_fraction=0.1, max_score=None, fraction_reason="top", threshold_reason="max")
    jobs = selection.jobs(partitions, ("run",))
    assert len(jobs) == len(partitions)
    return selection.rule.dropped


def select_old(folder: Path, partitions: list) -> int:
    """The pipelines' select phase before DropRule, kept here as the baseline being measured."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.selection import select_high_scores

    tables = [pq.read_table(folder / f"{p.name}.parquet") for p in partitions]
    owner = {}
    for part, table in zip(partitions, tables):
        owner.update(dict.fromkeys(table.column("id").to_pylist(), part.name))
    table = pa.concat_tables(tables)
    table = table.filter(table.column(COLUMN).is_valid())
    ids = table.column("id").to_pylist()
    scores = table.column(COLUMN).to_numpy(zero_copy_only=False)
    selection = select_high_scores(ids, scores, top_fraction=0.1, fraction_reason="top", threshold_reason="max")
    score_of = dict(zip(ids, scores.tolist()))
    per_partition: dict[str, dict[str, tuple[str, float]]] = {p.name: {} for p in partitions}
    for doc_id, reason in selection.reasons.items():
        per_partition[owner[doc_id]][doc_id] = (reason, score_of[doc_id])
    return len(selection.drop_ids)


def child(folder: Path, method: str) -> dict:
    """One measurement in this fresh process: peak RSS growth and seconds of one select phase."""
    import pyarrow  # noqa: F401  (imports are part of the idle baseline, not of the growth)

    import pipelines.selection  # noqa: F401
    from curation.readers import Partition

    partitions = [Partition(path.stem, path) for path in sorted(folder.glob("*.parquet"))]
    select = select_new if method == "new" else select_old
    started = time.perf_counter()
    with PeakRss() as rss:
        idle = rss.peak
        dropped = select(folder, partitions)
    return {"method": method, "growth_mb": (rss.peak - idle) / 2**20, "seconds": time.perf_counter() - started, "dropped": dropped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scores", type=int, nargs="+", default=[1_000_000, 4_000_000, 16_000_000])
    parser.add_argument("--old-up-to", type=int, default=4_000_000, help="run the old selection up to this count")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1])))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="selection-memory-") as tmp:
        for total in args.scores:
            folder = Path(tmp) / str(total)
            write_sidecars(folder, total)
            methods = ["new", "old"] if total <= args.old_up_to else ["new"]
            for method in methods:
                out = subprocess.run([sys.executable, __file__, "--child", str(folder), method], check=True, capture_output=True, text=True)
                rows.append({"scores": total, **json.loads(out.stdout.strip().splitlines()[-1])})
    print(f"{'scores':>11} {'method':>6} {'growth MB':>10} {'B/score':>8} {'marginal B':>10} {'seconds':>8} {'ns/score':>9} {'dropped':>9}")
    previous: dict[str, dict] = {}
    for row in rows:
        n = row["scores"]
        last = previous.get(row["method"])
        marginal = f"{(row['growth_mb'] - last['growth_mb']) * 2**20 / (n - last['scores']):>10.1f}" if last else f"{'':>10}"
        print(
            f"{n:>11,} {row['method']:>6} {row['growth_mb']:>10.1f} {row['growth_mb'] * 2**20 / n:>8.1f} {marginal} "
            f"{row['seconds']:>8.2f} {row['seconds'] / n * 1e9:>9.0f} {row['dropped']:>9,}"
        )
        previous[row["method"]] = row


if __name__ == "__main__":
    main()
