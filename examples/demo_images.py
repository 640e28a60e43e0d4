"""The demo's stand-in for the web: a loopback server for the OBELICS sample's image URLs.

The sample's documents point at `https://<host>/<doc>/<i>.jpg` URLs that do not exist. The demo starts
this server, copies the sample with every URL moved to `http://127.0.0.1:<port>/<host>/<doc>/<i>.jpg`
(the do-not-train list is moved with it, its domain entries spelled out as the URLs they cover, since
every image now shares one host), and runs `curate obelics` with `--allow-private-networks`.

What the server answers is fixed by the URL, so every demo run sees the same web: most images are
photos-like JPEGs of 1200 x 900 (resized to `--max-side` by the pipeline), some are missing (404), some
are not images, and some carry `X-Robots-Tag: noai`, the opt-out header the downloader honours.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

IMAGE_SIZE = (1200, 900)


def answer_kind(path: str) -> str:
    """What the server does for `path`: image, missing, not_an_image or noai (about 86/7/4/3 in 100)."""
    roll = int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big") % 100
    if roll < 7:
        return "missing"
    if roll < 11:
        return "not_an_image"
    if roll < 14:
        return "noai"
    return "image"


def demo_jpeg(path: str) -> bytes:
    """A deterministic picture for `path`: a colour field with a few shapes."""
    digest = hashlib.sha256(path.encode()).digest()
    image = Image.new("RGB", IMAGE_SIZE, tuple(digest[:3]))
    draw = ImageDraw.Draw(image)
    for i in range(4):
        x, y = digest[3 + i] * 4, digest[7 + i] * 3
        draw.ellipse((x, y, x + 300, y + 220), fill=tuple(digest[11 + 3 * i : 14 + 3 * i]))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


class DemoImageServer:
    """A threaded HTTP server on 127.0.0.1 (port chosen by the OS); counts what it answered."""

    def __init__(self) -> None:
        self.answered: Counter[str] = Counter()
        lock = threading.Lock()
        answered = self.answered

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                kind = answer_kind(self.path)
                with lock:
                    answered[kind] += 1
                if kind == "missing":
                    self.send_error(404)
                    return
                body = b"<html>not a picture</html>" if kind == "not_an_image" else demo_jpeg(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                if kind == "noai":
                    self.send_header("X-Robots-Tag", "noai")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def moved(self, url: str) -> str:
        """`url` as this server serves it: its host becomes the first path segment."""
        parts = urlsplit(url)
        return f"{self.base_url}/{parts.hostname}{parts.path}"

    def __enter__(self) -> DemoImageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_sample(sample: Path, do_not_train: Path, output: Path, server: DemoImageServer) -> tuple[Path, Path]:
    """Copy the OBELICS sample and its do-not-train list to `output`, every image URL moved to `server`.

    Returns (the input folder, the do-not-train list) for `curate obelics`.
    """
    inputs = output / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    sample_urls: set[str] = set()
    for path in sorted(sample.glob("*.parquet")):
        table = pq.read_table(path)
        if pa.types.is_string(table.schema.field("images").type.value_type):
            rows = table.to_pylist()
            for row in rows:
                sample_urls.update(u for u in row["images"] if u)
                row["images"] = [server.moved(u) if u else u for u in row["images"]]
                row["metadata"] = _moved_metadata(row["metadata"], server)
            table = pa.Table.from_pylist(rows, schema=table.schema)
        pq.write_table(table, inputs / path.name)
    entries = [line.strip() for line in do_not_train.read_text().splitlines() if line.strip() and not line.startswith("#")]
    moved = []
    for entry in entries:
        if "://" in entry:
            moved.append(server.moved(entry))
        else:  # a domain: every sample URL on it, or under it
            moved += sorted(server.moved(u) for u in sample_urls if _on_domain(urlsplit(u).hostname or "", entry))
    listed = output / "do_not_train.txt"
    listed.write_text("# the demo's do-not-train list, moved to the loopback image server\n" + "".join(f"{u}\n" for u in moved))
    return inputs, listed


def _on_domain(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def _moved_metadata(text: str, server: DemoImageServer) -> str:
    try:
        nodes = json.loads(text)
    except (TypeError, ValueError):
        return text  # the sample's deliberately malformed rows stay malformed
    if not isinstance(nodes, list):
        return text
    return json.dumps([{**n, "src": server.moved(n["src"])} if isinstance(n, dict) and n.get("src") else n for n in nodes])
