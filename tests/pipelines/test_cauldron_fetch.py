"""URL-only images (NLVR2's and Localized Narratives' Hub layouts) fetched with `--fetch-images`."""

import io
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.ledger import read_ledger
from pipelines.cli import main
from tests.curation.pairs.image_server import ImageServer, Route

from .cauldron_sources import png

pytestmark = pytest.mark.slow


def test_url_images_are_downloaded_through_the_guarded_downloader(tmp_path, ray_session):
    routes = {
        f"/{name}.png": Route(body=png(seed, (60, 40)), headers={"Content-Type": "image/png"})
        for name, seed in (("left", 1), ("right", 2), ("dog", 3))
    }
    routes["/page.html"] = Route(body=b"<html></html>", headers={"Content-Type": "text/html"})
    with ImageServer(routes) as server:
        nlvr2 = [
            {
                "sentence": "Two birds.",
                "left_url": server.url("/left.png"),
                "right_url": server.url("/right.png"),
                "label": "True",
                "identifier": "train-1-0-0",
            },
            {
                "sentence": "A cat.",
                "left_url": server.url("/left.png"),
                "right_url": server.url("/missing.png"),
                "label": "False",
                "identifier": "train-1-0-1",
            },
        ]
        narratives = [
            {
                "dataset_id": "open_images",
                "image_id": "d1",
                "annotator_id": 1,
                "caption": "A dog on grass.",
                "original_caption": "A dog on grass.",
                "image_url": server.url("/dog.png"),
            },
            {
                "dataset_id": "open_images",
                "image_id": "d2",
                "annotator_id": 1,
                "caption": "A page.",
                "original_caption": "A page.",
                "image_url": server.url("/page.html"),
            },
        ]
        for name, rows in (("nlvr2", nlvr2), ("narratives", narratives)):
            (tmp_path / name).mkdir()
            (tmp_path / name / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        out = tmp_path / "out"
        argv = [
            "cauldron",
            "build",
            "--source",
            f"nlvr2={tmp_path / 'nlvr2'}",
            "--source",
            f"localized_narratives={tmp_path / 'narratives'}",
            "--output",
            str(out),
            "--fetch-images",
            "--allow-private-networks",
            "--download-threads",
            "2",
            "--download-timeout",
            "5",
        ]
        assert main(argv) == 0
        hits = dict(server.hits)
        assert main(argv) == 0  # a rerun finds the subsets complete and fetches nothing again
        assert server.hits == hits
    (pair,) = pq.read_table(out / "nlvr2" / "train-00000-of-00001.parquet").to_pylist()
    assert [Image.open(io.BytesIO(i["bytes"])).size for i in pair["images"]] == [(60, 40), (60, 40)]
    assert pair["texts"][0]["assistant"] == "Yes."
    assert hits["/left.png"] == 1  # the same URL in two rows is fetched once
    ledger = {row["id"]: row for row in read_ledger(sorted((out / "ledger").glob("*.parquet"))).to_pylist()}
    assert ledger["nlvr2/train#1"]["reason"] == "http_404" and "missing.png" in ledger["nlvr2/train#1"]["detail"]
    assert ledger["localized_narratives/train#1"]["reason"] == "non_image_content_type"
    (dog,) = pq.read_table(out / "localized_narratives" / "train-00000-of-00001.parquet").to_pylist()
    assert dog["texts"][0]["assistant"] == "A dog on grass."
