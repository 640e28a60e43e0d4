"""Finding `curate pdfs` inputs on S3: the requests the driver makes for a glob, against one listing.

`curate pdfs --input 's3://bucket/pdfa/*.tar'` (shards) or `'s3://bucket/docs/*.pdf'` (loose PDFs) first
finds its inputs on the driver (`curation.pdf.sources.discover_partitions`). A glob is answered by a
listing; anything asked per match on top of it is one more request per shard or per PDF, made one after
the other. This counts the S3 requests (s3fs `_call_s3`) and times discovery at 1x/4x/16x `--files`
objects, against the plain way, one `find` of the prefix, in the same run. S3 is moto's server in a
subprocess on 127.0.0.1 (as benchmarks/storage_overhead.py); on a real store each request is ~10-50 ms.

    python benchmarks/pdfs_discovery.py                 # ~1 minute on 2 cores
    python benchmarks/pdfs_discovery.py --files 10 --scales 1 2 --json rows.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from storage_overhead import RequestCounter, moto_server  # noqa: E402

from curation.pdf.sources import discover_partitions  # noqa: E402
from curation.storage import ObjectPath  # noqa: E402


@dataclass
class Row:
    inputs: str
    objects: int
    partitions: int
    ours_requests: int
    plain_requests: int
    ours_s: float
    plain_s: float


def measure(counter: RequestCounter, bucket: ObjectPath, kind: str, count: int) -> Row:
    folder = bucket / f"{kind}-{count}"
    suffix = ".tar" if kind == "shards" else ".pdf"
    fs = folder.fs
    for i in range(count):
        fs.pipe_file(f"{folder.path}/doc-{i:06d}{suffix}", b"x")
    fs.pipe_file(f"{folder.path}/notes.txt", b"not an input")  # a listing holds other files too
    pattern = f"{folder}/*{suffix}"

    fs.invalidate_cache()
    before, started = counter.calls, time.perf_counter()
    partitions = discover_partitions([pattern])
    ours_s, ours_requests = time.perf_counter() - started, counter.calls - before

    fs.invalidate_cache()
    before, started = counter.calls, time.perf_counter()
    found = [name for name in fs.find(folder.path) if name.endswith(suffix)]
    plain_s, plain_requests = time.perf_counter() - started, counter.calls - before
    assert len(found) == count
    expected = count if kind == "shards" else -(-count // 256)
    assert len(partitions) == expected, (len(partitions), expected)
    return Row(kind, count, len(partitions), ours_requests, plain_requests, ours_s, plain_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=50, help="objects at scale 1")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    counter = RequestCounter()
    rows = []
    with moto_server(), counter.installed():
        bucket = ObjectPath(f"s3://pdfs-discovery-{uuid.uuid4().hex[:8]}")
        bucket.fs.mkdir(bucket.path)
        for kind in ("shards", "pdfs"):
            for scale in args.scales:
                rows.append(measure(counter, bucket, kind, args.files * scale))
    print("| inputs | objects | partitions | S3 requests ours | one listing | ours | one listing |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.inputs} | {r.objects:,} | {r.partitions:,} | {r.ours_requests:,} | {r.plain_requests:,} "
            f"| {r.ours_s * 1000:,.0f} ms | {r.plain_s * 1000:,.0f} ms |"
        )
    largest = max(rows, key=lambda r: r.objects)
    per_object = (largest.ours_requests - largest.plain_requests) / largest.objects
    print(f"\nrequests beyond the listing, per object found: {per_object:.2f}", end="")
    print(f" (a million loose PDFs: {per_object * 1e6:,.0f} requests, one after the other)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
