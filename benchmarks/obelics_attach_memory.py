"""OBELICS write phase with `--images download`: memory of attaching the staged images to the documents.

The write task used to hold every kept document of its partition with its image bytes before writing
any (`download_document_images` returns them as a list); it now attaches each document's images from
the on-disk staging as it is written (`with_staged_images`), reading the staging about one shard ahead.
Both read the same completed staging here (downloaded once from a loopback server, see
`obelics_download.py`); the Python heap peak of each pass (tracemalloc) is reported, at 1x and 4x
documents, with staging shards of `--samples-per-shard`.

    python benchmarks/obelics_attach_memory.py                  # 250 / 1000 documents, ~2 min on 2 cores
    python benchmarks/obelics_attach_memory.py --docs 100 200
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from heap import heap_peak  # noqa: E402
from obelics_download import LoopbackImages, make_documents, make_urls, photo_jpegs  # noqa: E402

from curation.obelics_images import ImageTally, download_document_images, stage_document_images, with_staged_images  # noqa: E402
from curation.pairs.download import DownloadOptions  # noqa: E402

IMAGES_PER_DOC = 2


def measure(server: LoopbackImages, docs_count: int, options: DownloadOptions, work: Path) -> dict[str, float]:
    docs = make_documents(make_urls(server, docs_count * IMAGES_PER_DOC, failing_every=20), IMAGES_PER_DOC)
    staging = work / f"staging-{docs_count}"
    requested = stage_document_images(docs, staging, options)

    def all_at_once() -> int:
        return len(download_document_images(docs, staging, options).documents)  # the staging is complete: no request

    def streamed() -> int:
        tally = ImageTally(requested=requested)
        return sum(1 for _ in with_staged_images(iter(docs), staging, tally))

    kept_list, list_mb = heap_peak(all_at_once)
    kept_stream, stream_mb = heap_peak(streamed)
    assert kept_list == kept_stream
    return {"docs": docs_count, "images": requested, "list_mb": list_mb, "streamed_mb": stream_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--samples-per-shard", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    options = DownloadOptions(max_side=980, threads=16, samples_per_shard=args.samples_per_shard, allow_private_networks=True)
    with LoopbackImages(photo_jpegs(8, 1280, 960)) as server, tempfile.TemporaryDirectory() as tmp:
        rows = [measure(server, n, options, Path(tmp)) for n in args.docs]
    print(f"{'docs':>6} {'images':>7} {'all at once MB':>15} {'streamed MB':>12}")
    for r in rows:
        print(f"{r['docs']:>6,} {r['images']:>7,} {r['list_mb']:>15.1f} {r['streamed_mb']:>12.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
