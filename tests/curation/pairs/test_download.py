import io
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.pairs.download import DownloadOptions, download_pairs, iter_staged_pairs
from curation.pairs.download_reasons import reason_for
from curation.pairs.pair import Pair, PairColumns

from .image_server import ImageServer, Route
from .images import encoded, garbage_jpeg, pixel_bomb
from .outcomes import kept, rejected, result_id

JPEG = {"Content-Type": "image/jpeg"}
PNG = {"Content-Type": "image/png"}
OPTIONS = DownloadOptions(
    max_side=256,
    max_bytes=200_000,
    max_pixels=1_000_000,
    timeout_s=2,
    threads=4,
    samples_per_shard=8,
    allow_private_networks=True,  # the test server is on loopback
)


def routes():
    return {
        "/big.jpg": Route(body=encoded(640, 480), headers=JPEG),
        "/small.png": Route(body=encoded(100, 80, "PNG"), headers=PNG),
        "/octet.jpg": Route(body=encoded(120, 90), headers={"Content-Type": "application/octet-stream"}),
        "/hop": Route(302, headers={"Location": "/big.jpg"}),
        "/broken.jpg": Route(body=garbage_jpeg(), headers=JPEG),
        "/empty.jpg": Route(body=b"", headers=JPEG),
        "/page.html": Route(body=b"<html>hi</html>", headers={"Content-Type": "text/html; charset=utf-8"}),
        "/to-file": Route(302, headers={"Location": "file:///etc/passwd"}),
        "/to-ftp": Route(302, headers={"Location": "ftp://127.0.0.1/x.jpg"}),
        "/huge.jpg": Route(body=b"\xff\xd8\xff" + b"\0" * 300_000, headers=JPEG),
        "/bomb.png": Route(body=pixel_bomb(), headers=PNG),
        "/noai.jpg": Route(body=encoded(50, 50), headers={**JPEG, "X-Robots-Tag": "noai"}),
        "/slow.jpg": Route(body=encoded(50, 50), headers=JPEG, delay_s=4.0),
    }


EXPECTED = {
    "big": "ok",
    "small": "ok",
    "octet": "ok",
    "hop": "ok",
    "missing": "http_404",
    "broken": "decode_error",
    "empty": "empty_image",
    "page": "non_image_content_type",
    "to_file": "redirect_not_allowed",
    "to_ftp": "redirect_not_allowed",
    "huge": "too_large",
    "bomb": "too_many_pixels",
    "noai": "opt_out_header",
    "slow": "timeout",
    "ftp_row": "bad_url_scheme",
    "file_row": "bad_url_scheme",
    "no_url": "missing_url",
    "no_host": "bad_url",
    "long_caption": "caption_too_long",
}


def input_rows(server):
    paths = {
        "big": "/big.jpg", "small": "/small.png", "octet": "/octet.jpg", "hop": "/hop", "missing": "/missing.jpg",
        "broken": "/broken.jpg", "empty": "/empty.jpg", "page": "/page.html", "to_file": "/to-file",
        "to_ftp": "/to-ftp", "huge": "/huge.jpg", "bomb": "/bomb.png", "noai": "/noai.jpg", "slow": "/slow.jpg",
        "long_caption": "/small.png",
    }  # fmt: skip
    rows = [
        {"key": k, "URL": server.url(p), "TEXT": f"alt {k}", "top_caption": f"a photo of {k}", "punsafe": 0.25} for k, p in paths.items()
    ]
    rows[-1]["top_caption"] = "x" * 5000
    rows += [
        {"key": "ftp_row", "URL": "ftp://example.com/a.jpg", "TEXT": "a", "top_caption": "b"},
        {"key": "file_row", "URL": "file:///etc/passwd", "TEXT": "a", "top_caption": "b"},
        {"key": "no_url", "URL": None, "TEXT": "a", "top_caption": "b"},
        {"key": "no_host", "URL": "http:///x.jpg", "TEXT": "a", "top_caption": "b"},
    ]
    return rows


@pytest.mark.slow
def test_img2dataset_staging_ledgers_every_failure_and_is_reused(tmp_path):
    columns = PairColumns(id="key")
    with ImageServer(routes()) as server:
        rows = input_rows(server)
        summary = download_pairs(rows, tmp_path / "stage", columns=columns, options=OPTIONS)
        assert (summary.rows, summary.rejected, summary.shards_downloaded) == (len(rows), 4, 2)
        results = list(iter_staged_pairs(tmp_path / "stage", caption="synthetic"))

        ids = [result_id(r) for r in results]
        assert sorted(ids) == sorted(EXPECTED)  # every input row exactly once
        outcome = {r.id: ("ok" if isinstance(r, Pair) else r.reason) for r in results}
        assert outcome == EXPECTED
        for pair in (r for r in results if isinstance(r, Pair)):
            assert pair.image is not None
            image = Image.open(io.BytesIO(pair.image))
            assert image.format == "JPEG" and max(image.size) <= 256
            assert (pair.width, pair.height) == image.size
            assert pair.caption == f"a photo of {pair.id}" and pair.caption_source == "synthetic"
            assert pair.alt_text == f"alt {pair.id}" and pair.scores == {"punsafe": 0.25}
        big = kept(next(r for r in results if r.id == "big"))
        assert (big.width, big.height) == (256, 192)
        assert (big.metadata["original_width"], big.metadata["original_height"]) == (640, 480)
        assert set(server.hits) <= set(routes()) | {"/missing.jpg"}  # refused rows never reached a server
        assert server.hits["/big.jpg"] == 2  # once directly, once through the redirect

        hits = dict(server.hits)
        rows[0]["top_caption"] = "an edited caption"
        again = download_pairs(rows, tmp_path / "stage", columns=columns, options=OPTIONS)
        assert again.shards_downloaded == 0 and server.hits == hits  # staging reused, nothing fetched
        rerun = list(iter_staged_pairs(tmp_path / "stage"))
        assert [r.id for r in rerun] == ids  # same order: nothing was downloaded again
        assert kept(next(r for r in rerun if r.id == "big")).caption == "an edited caption"  # texts never stale

        images = tmp_path / "stage" / "images"
        (images / "00000_stats.json").unlink()  # as if killed while writing shard 0
        (images / "00000.tar").write_bytes((images / "00000.tar").read_bytes()[:1000])
        resumed = download_pairs(rows, tmp_path / "stage", columns=columns, options=OPTIONS)
        assert resumed.shards_downloaded == 1 and server.hits["/big.jpg"] == 4 and server.hits["/slow.jpg"] == 1
        resumed_results = iter_staged_pairs(tmp_path / "stage")
        assert {r.id: ("ok" if isinstance(r, Pair) else r.reason) for r in resumed_results} == EXPECTED


def test_an_unfinished_staging_is_not_read(tmp_path):
    download_rows = [{"URL": "http://127.0.0.1:9/a.jpg", "TEXT": "a"}]
    from curation.pairs.download import DownloadIncompleteError, stage_url_rows

    stage_url_rows(download_rows, tmp_path, options=OPTIONS)
    with pytest.raises(DownloadIncompleteError):
        list(iter_staged_pairs(tmp_path))


@pytest.mark.parametrize(
    ("status", "message", "reason"),
    [
        ("failed_to_download", "HTTP Error 404: Not Found", "http_404"),
        ("failed_to_download", "HTTP Error 503: Service Unavailable", "http_503"),
        ("failed_to_download", "<urlopen error timed out>", "timeout"),
        ("failed_to_download", "The read operation timed out", "timeout"),
        ("failed_to_download", "HTTP Error 302: Redirection to url 'file:///x' is not allowed", "redirect_not_allowed"),  # noqa: E501
        ("failed_to_download", "[too_large] body over the 10 byte cap", "too_large"),
        ("failed_to_download", "<urlopen error [Errno -2] Name or service not known>", "dns_error"),
        ("failed_to_download", "Use of image disallowed by X-Robots-Tag directive", "opt_out_header"),
        ("failed_to_resize", "Image decoding error", "decode_error"),
        ("failed_to_resize", "image area too large", "too_many_pixels"),
        ("failed_to_resize", "something new", "decode_error"),
        ("failed_to_download", "something new", "download_error"),
    ],
)
def test_img2dataset_messages_map_to_ledger_reasons(status, message, reason):
    assert reason_for(status, message) == reason


def test_changed_options_restart_the_staging(tmp_path):
    from curation.pairs.download import IMAGES_DIR, stage_url_rows

    rows = [{"URL": "ftp://x/y.jpg", "TEXT": "a"}]
    stage = tmp_path / "stage"
    stage_url_rows(rows, stage, options=OPTIONS)
    (stage / IMAGES_DIR).mkdir()
    (stage / IMAGES_DIR / "00000_stats.json").write_text("{}")
    stage_url_rows(rows, stage, options=OPTIONS)
    assert (stage / IMAGES_DIR / "00000_stats.json").exists()
    stage_url_rows(rows, stage, options=DownloadOptions(max_side=512))
    assert not (stage / IMAGES_DIR).exists()
    assert [(r.id, rejected(r).reason) for r in iter_staged_pairs(stage)] == [("0", "bad_url_scheme")]


def test_a_staging_follows_the_urls_requested_not_the_partition_name(tmp_path):
    """An input replaced under the same name restarts the staging only where its URLs changed: images
    already downloaded for the same (id, URL) list are reused, images of other URLs are never served."""
    from curation.pairs.download import IMAGES_DIR, URLS_FILE, stage_url_rows

    stage = tmp_path / "stage"
    marker = stage / IMAGES_DIR / "00000_stats.json"
    stage_url_rows([{"URL": "https://a.example/1.jpg", "TEXT": "old"}], stage, options=OPTIONS)
    marker.parent.mkdir()
    marker.write_text("{}")  # as if shard 0 were downloaded
    stage_url_rows([{"URL": "https://a.example/1.jpg", "TEXT": "new"}], stage, options=OPTIONS)
    assert marker.exists() and pq.read_table(stage / URLS_FILE)["alt_text"].to_pylist() == ["new"]
    stage_url_rows([{"URL": "https://b.example/1.jpg", "TEXT": "new"}], stage, options=OPTIONS)
    assert not marker.exists()


def test_duplicate_ids_and_unreadable_rows_are_refused_one_by_one(tmp_path):
    from curation.pairs.download import REJECTED_FILE, URLS_FILE, stage_url_rows
    from curation.readers import UnreadableRows

    rows: list[dict[str, Any] | UnreadableRows] = [
        {"id": "a", "URL": "http://x/1.jpg"},
        {"id": "a", "URL": "http://x/2.jpg"},
        UnreadableRows(2, 4, "row group 1: bad page"),
    ]
    assert stage_url_rows(rows, tmp_path, columns=PairColumns(id="id")) == (1, 3)
    assert pq.read_table(tmp_path / URLS_FILE)["url"].to_pylist() == ["http://x/1.jpg"]
    rejected = pq.read_table(tmp_path / REJECTED_FILE).to_pylist()
    assert [(r["id"], r["reason"]) for r in rejected] == [
        ("a#row1", "duplicate_id"),
        ("#row2", "unreadable_input"),
        ("#row3", "unreadable_input"),
    ]


def test_the_url_list_streams_one_row_group_per_shard_and_keeps_its_fingerprint(tmp_path):
    """urls.parquet is written a shard's rows at a time (what a killed writer left is removed); the staging
    key is the same digest of the queued (id, URL) list as before, so an existing staging is reused."""
    import hashlib
    import json

    from curation.pairs.download import REJECTED_FILE, STAGING_FILE, URLS_FILE, stage_url_rows

    rows = ({"URL": f"https://a.example/{i}.jpg" if i % 4 else "data:x", "TEXT": f"t{i}"} for i in range(10))  # a generator
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / ".urls.parquet.tmp-99999").write_bytes(b"PAR1")  # a task killed while it wrote the list
    assert stage_url_rows(rows, stage, options=DownloadOptions(samples_per_shard=3), id_prefix="p/") == (7, 3)
    assert sorted(p.name for p in stage.iterdir()) == [REJECTED_FILE, STAGING_FILE, URLS_FILE]
    urls = pq.ParquetFile(stage / URLS_FILE)
    assert [urls.metadata.row_group(g).num_rows for g in range(urls.metadata.num_row_groups)] == [3, 3, 1]
    assert urls.read_row_group(1)["pair_id"].to_pylist() == ["p/5", "p/6", "p/7"]
    assert pq.read_table(stage / REJECTED_FILE)["id"].to_pylist() == ["p/0", "p/4", "p/8"]
    queued = [(f"p/{i}", f"https://a.example/{i}.jpg") for i in range(10) if i % 4]
    digest = hashlib.sha256("".join(f"{pair_id}\t{url}\n" for pair_id, url in queued).encode()).hexdigest()
    state = json.loads((stage / STAGING_FILE).read_text())
    assert (state["fingerprint"], state["rows"]) == (digest, 7)
