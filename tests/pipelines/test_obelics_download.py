"""`curate obelics` downloads the images of the documents it keeps, and only those."""

import io
import json

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from curation.documents import document_id
from curation.image_tar import unpack_images
from curation.ledger import read_ledger
from curation.pairs.download import DownloadOptions
from curation.perplexity import PerplexityConfig
from pipelines.obelics import ObelicsConfig, run_obelics
from tests.curation.pairs.image_server import ImageServer
from tests.pipelines.obelics_data import BLOCKED, write_partitions
from tests.pipelines.obelics_served import serve_partitions

pytestmark = pytest.mark.slow


def test_kept_documents_carry_their_images(tmp_path, tiny_lm, ray_session):
    facts = write_partitions(tmp_path / "in", partitions=2, docs=14)
    with ImageServer({}) as server:
        served = serve_partitions(tmp_path / "in", server, tmp_path / "dnt.txt")
        config = ObelicsConfig(
            inputs=[tmp_path / "in"],
            output=tmp_path / "out",
            ppl=PerplexityConfig(model=str(tiny_lm)),
            drop_top_ppl=0.2,
            do_not_train=[tmp_path / "dnt.txt"],
            docs_per_shard=5,
            download=DownloadOptions(max_side=200, timeout_s=2, threads=4, samples_per_shard=8, allow_private_networks=True),
        )
        report = run_obelics(config)
        hits = dict(server.hits)
    assert report["counts"]["input"] == facts["input"] and report["counts"]["balanced"]
    assert not [p for p in hits if p.startswith(f"/{BLOCKED}/")], "an opted-out image was requested"
    ledger = read_ledger(sorted((tmp_path / "out" / "ledger").glob("*.parquet"))).to_pylist()
    ppl_dropped = {r["id"] for r in ledger if r["reason"] == "ppl_top_fraction"}
    assert ppl_dropped
    urls_of = {}
    for path in (tmp_path / "in").glob("*.parquet"):
        for row in pq.read_table(path).to_pylist():
            urls_of[document_id(row, json.loads(row["general_metadata"]))] = [u for u in row["images"] if u]
    assert ppl_dropped <= set(urls_of)
    dropped_paths = {u.split(":", 2)[2].split("/", 1)[1] for i in ppl_dropped for u in urls_of[i]}
    assert dropped_paths and not {p.lstrip("/") for p in hits} & dropped_paths, "a dropped document's image was requested"
    removed = pq.read_table(tmp_path / "out" / "removed_images").to_pylist()
    by_reason = report["removed_images"]
    assert by_reason.get("http_404", 0) > 0 and by_reason.get("decode_error", 0) > 0
    assert all(r["reason"] and r["url"] for r in removed)
    requested_paths = set(hits)
    removed_404 = {r["url"] for r in removed if r["reason"] == "http_404"}
    assert all(any(u.endswith(p) for p in requested_paths) for u in removed_404)

    images = 0
    for sample in wds.WebDataset(sorted(str(p) for p in (tmp_path / "out" / "shards").glob("*.tar")), shardshuffle=False):
        doc = json.loads(sample["json"])
        packed = unpack_images(sample["images.tar"])
        positions = [i for i, t in enumerate(doc["texts"]) if t is None]
        assert sorted(packed) == positions, "an image node without bytes reached a shard"
        for data in packed.values():
            assert max(Image.open(io.BytesIO(data)).size) <= 200
        images += len(packed)
    assert images == report["images"]["downloaded"] > 0
    no_images = [r for r in ledger if r["reason"] == "no_images_left"]
    assert report["dropped_by_reason"].get("no_images_left", 0) == len(no_images)
    assert report["images"]["requested"] == images + sum(1 for r in removed if r["reason"] != "opt_out")
    assert served["served"] >= images


def test_keep_urls_requests_nothing(tmp_path, tiny_lm, ray_session):
    write_partitions(tmp_path / "in", partitions=1, docs=8)
    with ImageServer({}) as server:
        serve_partitions(tmp_path / "in", server, tmp_path / "dnt.txt")
        config = ObelicsConfig(
            inputs=[tmp_path / "in"],
            output=tmp_path / "out",
            ppl=PerplexityConfig(model=str(tiny_lm)),
            drop_top_ppl=None,
            images="keep-urls",
        )
        report = run_obelics(config)
        assert server.hits == {}
    assert report["counts"]["balanced"] and "no_images_left" not in report["dropped_by_reason"]
