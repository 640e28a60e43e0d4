"""Download stagings kept on the store: a rerun of a cauldron file pass with `--fetch-images` and of an
OBELICS partition's image download, with the work folder on s3://, requests no URL again and gives the
same result (the first run's completed shards are published to the store and pulled back); each shard
is published as soon as it completes, after the lists it belongs to, so a killed task loses only the
shards in flight."""

import json

import pytest

from cauldron.adapters import get_adapter
from cauldron.build_pass import PassSettings, run_file_pass
from cauldron.source_files import list_source
from cauldron.url_images import URL_COLUMNS
from curation.obelics_images import download_document_images
from curation.pairs.download import DownloadOptions, download_staging, stage_url_rows
from curation.pairs.staging_sync import LocalStaging, staged_locally
from curation.storage import read_parquet, storage_path
from tests.curation.pairs.image_server import ImageServer, Route
from tests.curation.test_obelics_images import OPTIONS, doc, routes
from tests.pipelines.cauldron_sources import png

pytestmark = pytest.mark.slow  # each download starts a process pool
PNG = {"Content-Type": "image/png"}


def nlvr2_rows(server: ImageServer) -> list[dict]:
    pairs = [("/left.png", "/right.png"), ("/left.png", "/missing.png"), ("/dog.png", "/right.png")]
    return [
        {
            "sentence": f"Sentence {i}.",
            "left_url": server.url(a),
            "right_url": server.url(b),
            "label": "True",
            "identifier": f"train-{i}-0-0",
        }
        for i, (a, b) in enumerate(pairs)
    ]


def test_a_cauldron_file_pass_reuses_the_images_fetched_to_the_store(bucket, tmp_path):
    served = {f"/{name}.png": Route(body=png(seed, (60, 40)), headers=PNG) for name, seed in (("left", 1), ("right", 2), ("dog", 3))}
    with ImageServer(served) as server:
        (tmp_path / "nlvr2").mkdir()
        (tmp_path / "nlvr2" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in nlvr2_rows(server)))
        adapter = get_adapter("nlvr2")
        listing = list_source(tmp_path / "nlvr2", adapter.include)
        (file,) = listing.files
        fetch = DownloadOptions(threads=2, timeout_s=5, samples_per_shard=2, allow_private_networks=True)
        settings = PassSettings("nlvr2", adapter, listing.root, fetch=fetch)
        work = bucket / "out" / "work" / "nlvr2"

        first = run_file_pass(settings, file, work, None)
        written = {name: read_parquet(storage_path(getattr(first, name))).to_pylist() for name in ("spill", "ledger")}
        hits = dict(server.hits)
        assert sum(hits.values()) == 4  # four distinct URLs, each requested once
        images = sorted(p.name for p in (work / "staging" / file.name / "images").iterdir())
        assert images == ["00000.parquet", "00000.tar", "00000_stats.json", "00001.parquet", "00001.tar", "00001_stats.json"]

        again = run_file_pass(settings, file, work, None)  # as a rerun after a crash, in a fresh scratch folder
        assert server.hits == hits, "URLs fetched to the store were downloaded again"
    assert (again.input, again.kept, again.dropped) == (first.input, first.kept, first.dropped) == (3, 2, 1)
    assert {name: read_parquet(storage_path(getattr(again, name))).to_pylist() for name in written} == written  # rewritten, equal


def test_obelics_images_downloaded_to_the_store_are_reused(bucket):
    with ImageServer(routes()) as server:
        docs = [doc(f"d{i}", "t", server.url("/a.jpg"), "u", server.url("/b.jpg")) for i in range(3)]
        staging = bucket / "out" / "staging" / "part-0"
        first = download_document_images(docs, staging, OPTIONS)
        hits = dict(server.hits)
        assert hits == {"/a.jpg": 3, "/b.jpg": 3} and (staging / "images" / "00001_stats.json").exists()
        again = download_document_images(docs, staging, OPTIONS)
        assert server.hits == hits, "images downloaded to the store were requested again"
    assert first.downloaded == again.downloaded == 6
    assert [d.images for d in again.documents] == [d.images for d in first.documents]


def test_each_shard_is_on_the_store_as_soon_as_it_completes(bucket):
    staging = bucket / "staging" / "part-0"
    on_store: list[list[str]] = []
    with ImageServer(routes()) as server:
        rows = [{"url": server.url(f"/{name}.jpg"), "id": f"{name}{i}"} for i in range(3) for name in ("a", "b")]
        with staged_locally(staging) as local:
            stage_url_rows(rows, local.path, columns=URL_COLUMNS, options=OPTIONS)

            def done(shard_id: int) -> None:  # what a task killed right after this shard would leave behind
                local.shard_done(shard_id)
                assert (staging / "staging.json").exists(), "a shard is published after the lists it belongs to"
                on_store.append(sorted(p.name for p in (staging / "images").iterdir()))

            download_staging(local.path, OPTIONS, done)
        assert server.hits == {"/a.jpg": 3, "/b.jpg": 3}
    first = on_store[0][0].split(".")[0]  # whichever shard finished first: its three files, marker included
    assert len(on_store) == 2 and on_store[0] == [f"{first}.parquet", f"{first}.tar", f"{first}_stats.json"]
    assert on_store[-1] == ["00000.parquet", "00000.tar", "00000_stats.json", "00001.parquet", "00001.tar", "00001_stats.json"]
    assert (staging / "staging.json").exists()


def test_a_download_killed_after_its_shards_resumes_from_the_store(bucket, monkeypatch):
    """kill -9 runs no way out: the rerun must find the lists and shards published while the task ran."""
    staging = bucket / "staging" / "part-0"
    with ImageServer(routes()) as server:
        rows = [{"url": server.url(f"/{name}.jpg"), "id": f"{name}{i}"} for i in range(3) for name in ("a", "b")]
        with monkeypatch.context() as killed:
            killed.setattr(LocalStaging, "finish", lambda self: None)
            with staged_locally(staging) as local:
                stage_url_rows(rows, local.path, columns=URL_COLUMNS, options=OPTIONS)
                download_staging(local.path, OPTIONS, local.shard_done)
        hits = dict(server.hits)
        assert hits == {"/a.jpg": 3, "/b.jpg": 3}
        with staged_locally(staging) as local:
            stage_url_rows(rows, local.path, columns=URL_COLUMNS, options=OPTIONS)
            assert download_staging(local.path, OPTIONS, local.shard_done) == 0
        assert server.hits == hits, "shards published before the kill were downloaded again"
    assert sorted(p.name for p in staging.iterdir()) == ["images", "rejected.parquet", "staging.json", "urls.parquet"]
