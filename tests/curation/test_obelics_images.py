"""Downloading kept documents' images: bytes attached per node, failures removed per image, not per document."""

import io

from PIL import Image

from curation import obelics_images
from curation.documents import InterleavedDocument
from curation.obelics_images import ImageTally, download_document_images, stage_document_images, url_requests, with_staged_images
from curation.pairs.download import DownloadOptions

from .pairs.image_server import ImageServer, Route
from .pairs.images import encoded, garbage_jpeg

JPEG = {"Content-Type": "image/jpeg"}
OPTIONS = DownloadOptions(max_side=64, timeout_s=2, threads=4, samples_per_shard=4, allow_private_networks=True)


def doc(doc_id, *nodes):
    texts, images, metadata = [], [], []
    for node in nodes:
        is_text = isinstance(node, str) and not node.startswith(("http", "ftp", "file"))
        texts.append(node if is_text else None)
        images.append(None if is_text else node)
        metadata.append(None if is_text or isinstance(node, bytes) else {"src": node})
    return InterleavedDocument(doc_id, texts, images, metadata, {})


def routes():
    return {
        "/a.jpg": Route(body=encoded(300, 200), headers=JPEG),
        "/b.jpg": Route(body=encoded(40, 30), headers=JPEG),
        "/broken.jpg": Route(body=garbage_jpeg(), headers=JPEG),
        "/noai.jpg": Route(body=encoded(50, 50), headers={**JPEG, "X-Robots-Tag": "noai"}),
    }


def test_images_attached_failures_removed_per_image(tmp_path):
    own = encoded(20, 20)
    with ImageServer(routes()) as server:
        docs = [
            doc("d1", "intro", server.url("/a.jpg"), "middle", server.url("/missing.jpg"), "end"),
            doc("d2", "text", server.url("/broken.jpg"), "more", server.url("/noai.jpg")),
            doc("d3", "has bytes", own, "and", server.url("/b.jpg")),
            doc("d4", "refused", "file:///etc/passwd"),
        ]
        out = download_document_images(docs, tmp_path / "staging", OPTIONS, min_images=1)
        assert server.hits.get("/a.jpg") == 1 and "/etc/passwd" not in str(server.hits)
    assert [d.id for d in out.documents] == ["d1", "d3"]
    assert sorted(i for i, _ in out.no_images_left) == ["d2", "d4"]
    assert out.requested == 6 and out.downloaded == 2
    reasons = sorted((r["id"], r["reason"]) for r in out.removed_images)
    assert reasons == [("d1", "http_404"), ("d2", "decode_error"), ("d2", "opt_out_header"), ("d4", "bad_url_scheme")]

    d1 = out.documents[0]
    assert d1.texts == ["intro", None, "middle\n\nend"]  # the failed image's text stays, merged
    stored = d1.images[1]
    assert isinstance(stored, bytes)
    image = Image.open(io.BytesIO(stored))
    assert max(image.size) == 64  # resized to --max-side
    d3 = out.documents[1]
    assert d3.images[1] == own and isinstance(d3.images[3], bytes)


def test_nodes_with_bytes_are_never_fetched():
    own = encoded(20, 20)
    assert url_requests([doc("d", "t", own)]) == []


def test_min_images_ledgers_documents_below_it(tmp_path):
    with ImageServer(routes()) as server:
        docs = [doc("two", "t", server.url("/a.jpg"), "u", server.url("/missing.jpg"))]
        out = download_document_images(docs, tmp_path / "s", OPTIONS, min_images=2)
    assert out.documents == [] and out.no_images_left[0][0] == "two"


def test_rerun_reuses_the_staging(tmp_path):
    with ImageServer(routes()) as server:
        docs = [doc(f"d{i}", "t", server.url("/a.jpg")) for i in range(6)]
        first = download_document_images(docs, tmp_path / "s", OPTIONS)
        hits = server.hits["/a.jpg"]
        again = download_document_images(docs, tmp_path / "s", OPTIONS)
        assert server.hits["/a.jpg"] == hits == 6
    assert [d.images for d in again.documents] == [d.images for d in first.documents]


def test_attaching_streams_documents_and_reads_the_staging_one_shard_ahead(tmp_path, monkeypatch):
    with ImageServer(routes()) as server:
        docs = [doc(f"d{i}", "t", server.url("/a.jpg" if i % 3 else "/missing.jpg"), "u", server.url("/b.jpg")) for i in range(10)]
        tally = ImageTally(requested=stage_document_images(iter(docs), tmp_path / "s", OPTIONS))
    pulled = []
    real = obelics_images.iter_staged_images

    def counting(staging):
        for staged in real(staging):
            pulled.append(staged.id)
            yield staged

    monkeypatch.setattr(obelics_images, "iter_staged_images", counting)
    written = []
    for kept in with_staged_images(iter(docs), tmp_path / "s", tally):
        written.append(kept.id)
        taken = 2 * len(written)  # image keys of the documents handed out so far
        assert len(pulled) <= taken + OPTIONS.samples_per_shard, "read more than a shard ahead"
    monkeypatch.undo()
    assert tally.requested == 20 and tally.downloaded == 16
    assert len(written) == 10 and len(tally.removed_images) == 4 and tally.no_images_left == []
    expected = download_document_images(docs, tmp_path / "s", OPTIONS)
    assert expected.downloaded == tally.downloaded and expected.removed_images == tally.removed_images
