"""The generated OBELICS partitions with their image URLs moved onto a loopback image server."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from tests.curation.pairs.image_server import ImageServer, Route
from tests.curation.pairs.images import encoded, garbage_jpeg
from tests.pipelines.obelics_data import BLOCKED

JPEG = {"Content-Type": "image/jpeg"}


def _moved(url: str | None, server: ImageServer) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    return server.url(f"/{parts.hostname}{parts.path}")


def serve_partitions(root: Path, server: ImageServer, dnt: Path, delay_s: float = 0.0) -> dict[str, int]:
    """Rewrite every partition under `root` to the server's URLs, add the routes, write the do-not-train list.

    Every third `...b.jpg` image is missing (404), every fifth `...a.jpg` is not an image; the rest are
    800x600 JPEGs. Blocked images are served too, so a request for one would show in `server.hits`.
    """
    blocked: list[str] = []
    facts = {"served": 0, "missing": 0, "garbage": 0}
    for path in sorted(root.glob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            row["images"] = [_moved(u, server) for u in row["images"]]
            metadata = json.loads(row["metadata"])
            row["metadata"] = json.dumps([{"src": _moved(m["src"], server)} if m else m for m in metadata])
            for url in filter(None, row["images"]):
                route = urlsplit(url).path
                number = sum(map(ord, route))
                if route.startswith(f"/{BLOCKED}/"):
                    blocked.append(url)
                    server.routes[route] = Route(body=encoded(30, 30), headers=JPEG)
                elif route.endswith("b.jpg") and number % 3 == 0:
                    facts["missing"] += 1
                elif route.endswith("a.jpg") and number % 5 == 0:
                    server.routes[route] = Route(body=garbage_jpeg(), headers=JPEG, delay_s=delay_s)
                    facts["garbage"] += 1
                else:
                    server.routes[route] = Route(body=encoded(800, 600, seed=number % 7), headers=JPEG, delay_s=delay_s)
                    facts["served"] += 1
        pq.write_table(pa.Table.from_pylist(rows), path)
    dnt.write_text("".join(f"{u}\n" for u in blocked))
    return facts
