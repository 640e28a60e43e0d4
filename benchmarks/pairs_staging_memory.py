"""`curate pairs` download phase: memory of staging one URL-list partition, as the partition grows.

Staging turns a LAION COCO parquet file into `urls.parquet` (one row group per img2dataset shard) and
`rejected.parquet` before anything is requested. It used to read every column of the input as Python
rows and build both tables whole in Python lists; it now reads only the configured columns and writes
a shard's row group at a time. The download itself is left out (no network): `download_staging` is
replaced by a no-op, so the partition's task runs to the end of its staging. Rows carry LAION COCO's
columns, `all_captions` (5 captions) and `all_similarities` included; every 50th URL is refused.
Python heap peak (tracemalloc) at 1x, 4x and 16x rows.

    python benchmarks/pairs_staging_memory.py                   # 5,000 / 20,000 / 80,000 rows, ~1 min on 2 cores
    python benchmarks/pairs_staging_memory.py --rows 500 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from heap import heap_peak  # noqa: E402

import curation.pairs.download as download  # noqa: E402
from curation.pairs.download import DownloadOptions  # noqa: E402
from curation.readers import Partition  # noqa: E402
from pipelines.pairs import PairsConfig, download_partition  # noqa: E402

SAMPLES_PER_SHARD = 1000


def write_input(path: Path, rows: int) -> None:
    urls = [f"https://images.example.com/{i % 977}/photo-{i}.jpg" if i % 50 else f"ftp://example.com/{i}" for i in range(rows)]
    captions = [[f"a photo of thing {i}, caption {k}" for k in range(5)] for i in range(rows)]
    table = pa.table(
        {
            "URL": urls,
            "TEXT": [f"alt text of image {i} from a web page" for i in range(rows)],
            "top_caption": [c[0] for c in captions],
            "all_captions": captions,
            "all_similarities": [[0.3, 0.29, 0.28, 0.27, 0.26]] * rows,
            "WIDTH": [640] * rows,
            "HEIGHT": [480] * rows,
            "similarity": [0.31] * rows,
            "punsafe": [(i % 100) / 100 for i in range(rows)],
            "pwatermark": [0.1] * rows,
        }
    )
    pq.write_table(table, path, row_group_size=8192)


def measure(rows: int, work: Path) -> dict[str, float]:
    folder = work / f"n{rows}"
    (folder / "in").mkdir(parents=True)
    write_input(folder / "in" / "part.parquet", rows)
    config = PairsConfig(
        inputs=[folder / "in"], output=folder / "out", nsfw_source="column", download=DownloadOptions(samples_per_shard=SAMPLES_PER_SHARD)
    )
    summary, mb = heap_peak(lambda: download_partition(config, Partition("part", folder / "in" / "part.parquet")))
    assert summary["rows"] == rows and summary["rejected"] == (rows + 49) // 50, summary
    return {"rows": rows, "queued": summary["queued"], "staging_mb": mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[5000, 20000, 80000])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    download.download_staging = lambda staging, options=None, on_shard=None: 0  # no network: staging only
    with tempfile.TemporaryDirectory(prefix="pairs-staging-") as scratch:
        results = [measure(n, Path(scratch)) for n in args.rows]
    first = results[0]
    print(f"{'rows':>8} {'x':>4} {'staging MB':>11}")
    for r in results:
        print(f"{r['rows']:>8} {r['rows'] / first['rows']:>4.0f} {r['staging_mb']:>11.2f}")
    if args.json:
        args.json.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
