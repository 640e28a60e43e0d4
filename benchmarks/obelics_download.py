"""OBELICS download phase: ours against plain `img2dataset.download` on the same URL list, same run.

A loopback HTTP server (started here, threads, 127.0.0.1) serves generated photo-like JPEGs for a list
of image URLs spread over interleaved documents; a few URLs answer 404 and a few garbage bytes, so both
sides also pay for failures. Both sides download the same URLs with the same processes, threads, resize
(longest side <= --max-side, only if bigger) and X-Robots-Tag directives:

    ours      `curation.obelics_images.download_document_images`: stage the URL list, drive img2dataset's
              reader/downloader/resizer in our own process pool behind the URL guard (size, pixel and
              time caps), then put the bytes into the documents and list the failed images
    baseline  `img2dataset.download(...)` on a parquet of the same URLs, webdataset output

The two alternate for `--rounds` rounds (fresh output folders each time) and the median images/s of
each is reported with their ratio (target: ours >= 0.9x). Images/s counts every requested URL.

    python benchmarks/obelics_download.py                                   # ~1 minute on 2 cores
    python benchmarks/obelics_download.py --images 8000 --processes 4 --threads 32
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.documents import InterleavedDocument  # noqa: E402
from curation.obelics_images import download_document_images  # noqa: E402
from curation.pairs.download import DownloadOptions  # noqa: E402


def photo_jpegs(unique: int, width: int, height: int) -> list[bytes]:
    """Smooth gradients plus noise: JPEGs that compress and resize like photographs."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for _ in range(unique):
        phase = rng.uniform(0, 6.28, 3)
        channels = [127 + 100 * np.sin(x / (40 + 20 * k) + y / (55 + 10 * k) + phase[k]) for k in range(3)]
        pixels = np.stack(channels, -1) + rng.normal(0, 12, (height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


class LoopbackImages:
    """Serves `/img/<i>.jpg` (image i mod unique), `/missing/<i>` as 404 and `/garbage/<i>` as a broken JPEG."""

    def __init__(self, images: list[bytes]) -> None:
        bodies = images

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                kind, _, name = self.path.strip("/").partition("/")
                if kind == "img":
                    status, body = 200, bodies[int(name.split(".")[0]) % len(bodies)]
                elif kind == "garbage":
                    status, body = 200, b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
                else:
                    status, body = 404, b"not found"
                self.send_response(status)
                self.send_header("Content-Type", "image/jpeg" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 1024
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> LoopbackImages:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def make_urls(server: LoopbackImages, count: int, failing_every: int) -> list[str]:
    """`count` distinct URLs; every `failing_every`-th is a 404 or a garbage body, alternately."""
    urls = []
    for i in range(count):
        if failing_every and i % failing_every == failing_every - 1:
            urls.append(server.url(f"/{'missing' if (i // failing_every) % 2 else 'garbage'}/{i}"))
        else:
            urls.append(server.url(f"/img/{i}.jpg"))
    return urls


def make_documents(urls: list[str], images_per_doc: int) -> list[InterleavedDocument]:
    """Interleaved documents (text, image, text, image, ...) holding the URLs in order."""
    docs = []
    for start in range(0, len(urls), images_per_doc):
        texts: list[str | None] = []
        images: list[str | bytes | None] = []
        metadata: list[dict | None] = []
        for url in urls[start : start + images_per_doc]:
            texts += [f"paragraph before image {len(images)}", None]
            images += [None, url]
            metadata += [None, {"src": url}]
        docs.append(InterleavedDocument(f"doc{start // images_per_doc}", texts, images, metadata, {"url": "http://x"}))
    return docs


def run_ours(docs: list[InterleavedDocument], work: Path, options: DownloadOptions) -> tuple[float, int]:
    started = time.perf_counter()
    fetched = download_document_images(docs, work / "staging", options, min_images=1)
    return time.perf_counter() - started, fetched.downloaded


def run_img2dataset(urls: list[str], work: Path, options: DownloadOptions) -> tuple[float, int]:
    import img2dataset

    url_list = work / "urls.parquet"
    pq.write_table(pa.table({"url": urls}), url_list)
    started = time.perf_counter()
    img2dataset.download(
        url_list=str(url_list),
        input_format="parquet",
        url_col="url",
        output_format="webdataset",
        output_folder=str(work / "out"),
        processes_count=options.processes,
        thread_count=options.threads,
        image_size=options.max_side,
        resize_mode="keep_ratio_largest",
        resize_only_if_bigger=True,
        skip_reencode=True,
        encode_format=options.encode_format,
        encode_quality=options.encode_quality,
        number_sample_per_shard=options.samples_per_shard,
        timeout=options.timeout_s,
        retries=options.retries,
        extract_exif=False,
        compute_hash="sha256",
        disallowed_header_directives=list(options.disallowed_header_directives),
        distributor="multiprocessing",
        enable_wandb=False,
    )
    seconds = time.perf_counter() - started
    ok = sum(json.loads(p.read_text())["successes"] for p in (work / "out").glob("*_stats.json"))
    return seconds, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="image URLs (default 2000)")
    parser.add_argument("--images-per-doc", type=int, default=4)
    parser.add_argument("--failing-every", type=int, default=20, help="every n-th URL fails (404 or garbage); 0: none")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=960)
    parser.add_argument("--unique", type=int, default=8, help="distinct images served")
    parser.add_argument("--max-side", type=int, default=980)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--samples-per-shard", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    options = DownloadOptions(
        max_side=args.max_side, processes=args.processes, threads=args.threads,
        samples_per_shard=args.samples_per_shard, allow_private_networks=True,  # the server is on loopback
    )  # fmt: skip
    times: dict[str, list[float]] = {"ours": [], "img2dataset": []}
    successes: dict[str, int] = {}
    with LoopbackImages(photo_jpegs(args.unique, args.width, args.height)) as server:
        urls = make_urls(server, args.images, args.failing_every)
        docs = make_documents(urls, args.images_per_doc)
        for round_ in range(args.rounds):
            order: list[tuple[str, Callable[[Path], tuple[float, int]]]] = [
                ("ours", lambda work: run_ours(docs, work, options)),
                ("img2dataset", lambda work: run_img2dataset(urls, work, options)),
            ]
            for name, run in order if round_ % 2 == 0 else order[::-1]:
                work = Path(tempfile.mkdtemp(prefix=f"obelics-download-{name}-"))
                try:
                    seconds, ok = run(work)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                times[name].append(seconds)
                successes[name] = ok
                print(f"round {round_ + 1} {name:12s} {seconds:6.2f} s  {ok} images  {len(urls) / seconds:7.1f} img/s", flush=True)
    rates = {name: len(urls) / statistics.median(t) for name, t in times.items()}
    ratio = rates["ours"] / rates["img2dataset"]
    print(f"\n{len(urls)} URLs ({len(docs)} documents), {args.processes} process(es) x {args.threads} threads, "
          f"{args.width}x{args.height} JPEGs resized to <= {args.max_side}, median of {args.rounds} rounds")  # fmt: skip
    print("| | ours (download phase) | img2dataset.download | ratio |")
    print("|---|---|---|---|")
    print(f"| images/s | {rates['ours']:,.0f} | {rates['img2dataset']:,.0f} | {ratio:.2f}x |")
    print(f"| images downloaded | {successes['ours']} | {successes['img2dataset']} | |")
    print(f"target >= 0.9x: {'met' if ratio >= 0.9 else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"urls": len(urls), "rates": rates, "ratio": ratio, "successes": successes, "times": times}))
    return 0 if successes["ours"] == successes["img2dataset"] else 1


if __name__ == "__main__":
    sys.exit(main())
