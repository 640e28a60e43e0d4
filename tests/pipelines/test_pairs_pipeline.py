import io
import json

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from curation.ledger import read_ledger
from curation.pairs.clip_embedder import ClipConfig
from curation.pairs.nsfw_head import HeadSpec, NsfwHead, save_head
from examples.build_demo_assets import TINY_CLIP
from pipelines.cli import main as curate
from pipelines.pairs import PairsConfig, run_pairs

pytestmark = pytest.mark.slow


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_pairs(path, n=40):
    rows = [{"image": jpeg(i), "TEXT": f"alt {i}", "top_caption": f"a synthetic caption {i}", "punsafe": i / n} for i in range(n)]
    rows[5]["image"] = b"not an image"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return rows


@pytest.fixture
def models(tmp_path):
    (tmp_path / "tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    save_head(NsfwHead(HeadSpec((32, 8, 1), ("relu", "sigmoid"))), tmp_path / "head.safetensors")
    return tmp_path / "tiny-clip.json", tmp_path / "head.safetensors"


def test_pairs_with_clip_scores_accounting_and_datasets_loading(tmp_path, models, ray_session):
    (tmp_path / "in").mkdir()
    write_pairs(tmp_path / "in" / "a.parquet")
    write_pairs(tmp_path / "in" / "b.parquet", n=20)
    config = PairsConfig(
        inputs=[tmp_path / "in"],
        output=tmp_path / "out",
        clip=ClipConfig(model=str(models[0]), pretrained=None),
        nsfw_head=models[1],
        drop_top_nsfw=0.1,
        embeddings=True,
    )
    report = run_pairs(config)
    counts = report["counts"]
    assert counts["input"] == 60 and counts["balanced"]
    assert report["dropped_by_reason"] == {"decode_error": 2, "nsfw_top_fraction": round(0.1 * 58)}
    shards = sorted(str(p) for p in (tmp_path / "out" / "shards").glob("*.tar"))
    rows = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train")
    assert len(rows) == counts["kept"]
    assert all(r["txt"].startswith("a synthetic caption") for r in rows)
    cutoff = report["selection"]["cutoff"]
    assert all(r["json"]["scores"]["nsfw"] <= cutoff for r in rows)  # ties at the cutoff are split by id
    embeddings = pq.read_table(tmp_path / "out" / "embeddings")
    assert embeddings.num_rows == 58

    again = run_pairs(config)
    assert again["scoring"]["scored"] == 0 and again["resumed_partitions"] == 2


def test_column_scores_and_calibration_cli(tmp_path, ray_session, capsys):
    (tmp_path / "in").mkdir()
    rows = write_pairs(tmp_path / "in" / "a.parquet", n=50)
    assert (
        curate(
            [
                "pairs",
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(tmp_path / "out"),
                "--nsfw-source",
                "column",
                "--nsfw-threshold",
                "0.9",
                "--caption",
                "alt",
            ]
        )
        == 0
    )
    ledger = read_ledger(sorted((tmp_path / "out" / "ledger").glob("*.parquet"))).to_pylist()
    assert sorted(r["reason"] for r in ledger) == ["decode_error"] + ["nsfw_threshold"] * 4  # 0.92, 0.94, 0.96, 0.98
    manifest = json.loads((tmp_path / "out" / "shards" / "a.manifest.json").read_text())
    assert manifest["dropped_by_reason"] == {"decode_error": 1, "nsfw_threshold": 4} and manifest["dropped"] == 5  # the report sums these

    labels = pa.table({"id": [f"a/{i}" for i in range(50)], "label": [int(r["punsafe"] >= 0.8) for r in rows]})
    pq.write_table(labels, tmp_path / "labels.parquet")
    assert (
        curate(
            [
                "nsfw-calibrate",
                "--labels",
                str(tmp_path / "labels.parquet"),
                "--scores",
                str(tmp_path / "out" / "scores"),
                "--target-recall",
                "1.0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "recall 1.000, precision 1.000" in out and "removes 10 of 50" in out


def test_laion_coco_url_list_through_img2dataset(tmp_path, ray_session):
    from tests.curation.pairs.image_server import ImageServer, Route

    routes = {f"/{i}.jpg": Route(body=jpeg(i), headers={"Content-Type": "image/jpeg"}) for i in range(12)}
    routes["/page.html"] = Route(body=b"<html></html>", headers={"Content-Type": "text/html"})
    with ImageServer(routes) as server:
        urls = [server.url(f"/{i}.jpg") for i in range(12)] + [server.url("/missing.jpg"), server.url("/page.html")]
        rows = [{"URL": u, "TEXT": f"alt {i}", "top_caption": f"synthetic {i}", "punsafe": i / 20} for i, u in enumerate(urls)]
        (tmp_path / "in").mkdir()
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in" / "laion.parquet")
        argv = [
            "pairs",
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "out"),
            "--nsfw-source",
            "column",
            "--nsfw-threshold",
            "0.5",
            "--max-side",
            "32",
            "--allow-private-networks",
        ]
        assert curate(argv) == 0
        hits = sum(server.hits.values())
        assert curate(argv) == 0 and sum(server.hits.values()) == hits  # the staging is reused: no new requests
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["counts"] == {"input": 14, "kept": 11, "dropped": 3, "shards": 1, "balanced": True}
    assert report["dropped_by_reason"] == {"http_404": 1, "non_image_content_type": 1, "nsfw_threshold": 1}  # 11/20 > 0.5
    shards = sorted(str(p) for p in (tmp_path / "out" / "shards").glob("*.tar"))
    rows = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train")
    assert all(max(r["jpg"].size) <= 32 for r in rows)
