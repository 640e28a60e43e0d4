"""`curate pairs` from s3:// to s3://: URL lists downloaded through a staging on the store, image bytes
read in place; the output equals a local run's, and a rerun reuses the published staging."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.curation.pairs.image_server import ImageServer, Route
from tests.storage.runs import run, snapshot, upload_tree

pytestmark = pytest.mark.slow


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_inputs(folder, server):
    folder.mkdir()
    urls = [{"URL": server.url(f"/{i}.jpg"), "TEXT": f"alt {i}", "top_caption": f"caption {i}", "punsafe": i / 10} for i in range(10)]
    urls += [
        {"URL": server.url("/missing.jpg"), "TEXT": "gone", "top_caption": "gone", "punsafe": 0.0},
        {"URL": "ftp://example.com/a.jpg", "TEXT": "ftp", "top_caption": "ftp", "punsafe": 0.0},
    ]
    pq.write_table(pa.Table.from_pylist(urls), folder / "urls.parquet")
    pairs = [{"image": jpeg(100 + i), "TEXT": f"alt b{i}", "top_caption": f"caption b{i}", "punsafe": i / 8} for i in range(8)]
    pairs[3]["image"] = b"not an image"
    pq.write_table(pa.Table.from_pylist(pairs), folder / "bytes.parquet")


def pairs_args(inputs, output):
    """One download thread: img2dataset then stores the images in request order, so runs compare byte for byte."""
    return [
        "pairs",
        "--input",
        inputs,
        "--output",
        output,
        "--nsfw-source",
        "column",
        "--nsfw-threshold",
        "0.75",
        "--samples-per-shard",
        "4",
        "--allow-private-networks",
        "--download-threads",
        "1",
        "--num-cpus",
        "2",
    ]


def test_pairs_s3_to_s3_equals_a_local_run_and_reuses_its_staging(bucket, tmp_path):
    routes = {f"/{i}.jpg": Route(200, jpeg(i), {"Content-Type": "image/jpeg"}) for i in range(10)}
    with ImageServer(routes) as server:
        write_inputs(tmp_path / "in", server)
        upload_tree(tmp_path / "in", bucket / "in")
        run("curate", *pairs_args(tmp_path / "in", tmp_path / "local"))
        server.hits.clear()
        output = bucket / "out"
        run("curate", *pairs_args(bucket / "in", output))
        assert sum(server.hits.values()) == 10 + 1
        assert sorted(p.name for p in (output / "staging" / "urls" / "images").iterdir()) == [
            "00000.parquet",
            "00000.tar",
            "00000_stats.json",
        ]
        server.hits.clear()
        run("curate", *pairs_args(bucket / "in", output))
        assert not server.hits, "the staging published on the store was downloaded again"
    report = json.loads((output / "report.json").read_text())
    assert report["counts"]["balanced"] and report["counts"]["input"] == 12 + 8 and report["resumed_partitions"] == 2
    assert report["dropped_by_reason"]["http_404"] == 1 and report["dropped_by_reason"]["bad_url_scheme"] == 1
    skip = ("staging/",)  # img2dataset's stats files hold timings
    assert snapshot(output, skip) == snapshot(tmp_path / "local", skip)
