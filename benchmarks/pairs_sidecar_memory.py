"""`curate pairs` score and write phases: memory of one partition's score sidecar, as the partition grows.

The score phase used to collect a dict per row (and every embedding) of its partition before writing the
sidecar, and the write phase loaded the whole sidecar as a dict of dicts keyed by id; they now stream it
a row group / read batch at a time (`curation/pairs/sidecars.py`). Both phases run here, without Ray, on
one parquet partition of N pairs with tiny JPEGs and a `punsafe` column (`--nsfw-source column`, no
model), at 1x, 4x and 16x rows; the Python heap peak of each (tracemalloc) is reported.

    python benchmarks/pairs_sidecar_memory.py                   # 2,000 / 8,000 / 32,000 rows, ~2 min on 2 cores
    python benchmarks/pairs_sidecar_memory.py --rows 200 800
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from heap import heap_peak  # noqa: E402
from PIL import Image  # noqa: E402

from curation.readers import Partition  # noqa: E402
from pipelines.pairs import NsfwActor, PairsConfig, _select, write_pairs_partition  # noqa: E402

THRESHOLD = 0.99  # about 1% of the rows are dropped by the rule, so the ledger stays small


def write_input(path: Path, rows: int) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(buffer, format="JPEG")
    image = buffer.getvalue()
    table = pa.table(
        {
            "image": pa.array([image] * rows, pa.binary()),
            "TEXT": [f"alt text {i}" for i in range(rows)],
            "top_caption": [f"a synthetic caption of pair {i}" for i in range(rows)],
            "punsafe": [(i * 7919 % rows) / rows for i in range(rows)],
        }
    )
    pq.write_table(table, path, row_group_size=1024)


def measure(rows: int, work: Path) -> dict[str, float]:
    folder = work / f"n{rows}"
    (folder / "in").mkdir(parents=True)
    write_input(folder / "in" / "part.parquet", rows)
    partition = Partition("part", folder / "in" / "part.parquet")
    config = PairsConfig(
        inputs=[folder / "in"], output=folder / "out", nsfw_source="column", nsfw_threshold=THRESHOLD, samples_per_shard=100
    )
    actor = NsfwActor(config, threads=1)
    stats, score_mb = heap_peak(lambda: actor.score_partition(partition))
    assert "failed" not in stats and stats["scored"] == rows, stats
    rule = _select(config, [partition]).rule
    manifest, write_mb = heap_peak(lambda: write_pairs_partition(config, rule, "bench", partition, "bench"))
    assert manifest["input"] == rows == manifest["count"] + manifest["dropped"], manifest
    return {"rows": rows, "kept": manifest["count"], "score_mb": score_mb, "write_mb": write_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 8000, 32000])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pairs-sidecar-") as scratch:
        results = [measure(n, Path(scratch)) for n in args.rows]
    first = results[0]
    print(f"{'rows':>8} {'x':>4} {'score phase MB':>15} {'write phase MB':>15}")
    for r in results:
        print(f"{r['rows']:>8} {r['rows'] / first['rows']:>4.0f} {r['score_mb']:>15.2f} {r['write_mb']:>15.2f}")
    if args.json:
        args.json.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
