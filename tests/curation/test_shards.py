import io
import json
import tarfile

import pytest
import webdataset as wds

from curation.documents import InterleavedDocument
from curation.image_tar import unpack_images
from curation.interleaved_format import document_to_sample, sample_to_document
from curation.shards import OVERSIZED, PartitionShardWriter, UnsafeTarError, iter_tar_samples, read_manifest


def make_doc(i: int) -> InterleavedDocument:
    return InterleavedDocument(
        f"doc.{i}/x",
        texts=[None, f"text {i}"],
        images=[b"\x89PNG\r\n\x1a\nfake" if i % 2 else f"https://e.example/{i}.jpg", None],
        metadata=[{"src": f"https://e.example/{i}.jpg"}, None],
        general_metadata={"url": f"https://p.example/{i}"},
    )


def test_shards_are_atomic_deterministic_and_read_back_with_webdataset(tmp_path):
    writer = PartitionShardWriter(tmp_path, "part-a", samples_per_shard=2)
    docs = [make_doc(i) for i in range(5)]
    for doc in docs:
        writer.write(document_to_sample(doc))
    manifest = writer.close(input=5)
    assert [s["name"] for s in manifest["shards"]] == ["part-a-00000.tar", "part-a-00001.tar", "part-a-00002.tar"]
    assert manifest["count"] == 5 and read_manifest(tmp_path, "part-a") == manifest
    assert not list(tmp_path.glob(".*tmp*"))

    urls = [str(tmp_path / s["name"]) for s in manifest["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == 5
    assert [json.loads(s["json"])["id"] for s in samples] == [d.id for d in docs]
    assert unpack_images(samples[1]["images.tar"])[0].startswith(b"\x89PNG")
    round_tripped = [sample_to_document(s) for s in iter_tar_samples(tmp_path / "part-a-00000.tar")]
    assert [(d.id, d.texts, d.images) for d in round_tripped] == [(d.id, d.texts, d.images) for d in docs[:2]]

    again = PartitionShardWriter(tmp_path / "again", "part-a", samples_per_shard=2)
    for doc in docs:
        again.write(document_to_sample(doc))
    assert again.close(input=5)["shards"] == manifest["shards"]  # same bytes, same checksums


def test_rewriting_a_partition_removes_stale_shards_and_the_old_manifest(tmp_path):
    writer = PartitionShardWriter(tmp_path, "p", samples_per_shard=1)
    for i in range(3):
        writer.write(document_to_sample(make_doc(i)))
    writer.close()
    rewrite = PartitionShardWriter(tmp_path, "p", samples_per_shard=1)
    assert read_manifest(tmp_path, "p") is None
    rewrite.write(document_to_sample(make_doc(0)))
    rewrite.close()
    assert sorted(p.name for p in tmp_path.glob("p-*.tar")) == ["p-00000.tar"]


@pytest.mark.parametrize("name", ["/etc/passwd.txt", "../escape.txt", "a/../../b.txt"])
def test_unsafe_member_names_are_rejected(tmp_path, name):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UnsafeTarError):
        list(iter_tar_samples(path))


def test_oversized_members_and_links(tmp_path):
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w") as tar:
        link = tarfile.TarInfo("k.lnk")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
        info = tarfile.TarInfo("k.txt")
        info.size = 10
        tar.addfile(info, io.BytesIO(b"0123456789"))
    assert list(iter_tar_samples(path)) == [{"__key__": "k", "txt": b"0123456789"}]
    assert list(iter_tar_samples(path, max_member_bytes=5)) == [{"__key__": "k", OVERSIZED: {"txt": 10}}]
