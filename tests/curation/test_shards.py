import gzip
import hashlib
import io
import json
import tarfile
import threading

import pytest
import webdataset as wds

from curation.documents import InterleavedDocument
from curation.errors import SampleError
from curation.image_tar import unpack_images
from curation.interleaved_format import document_to_sample, sample_to_document
from curation.readers import InputCount, UnreadableInputError
from curation.shards import (
    DEFAULT_MAX_SAMPLE_MEMBERS,
    MAX_KEY_CHARS,
    OVERSIZED,
    TOO_LARGE,
    DamagedTarError,
    PartitionShardWriter,
    UnsafeTarError,
    iter_tar_members,
    iter_tar_samples,
    list_tar,
    read_manifest,
    safe_key,
)
from tests.hostile.craft import absurd_size, appended_archive, bad_checksum_midway, gzip_truncated, truncated_in_header, write_tar
from tests.hostile.craft_tars import END, base256, cases, header, member, one_key_many_members, pax_records, sample


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


def reference_tar(path, samples):
    """A shard as tarfile builds it from whole samples (what the writer wrote before it streamed)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for sample in samples:
            for ext, payload in sample.items():
                if not ext.startswith("__"):
                    info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                    info.size, info.mode, info.mtime = len(payload), 0o644, 0
                    tar.addfile(info, io.BytesIO(payload))
    return path.read_bytes()


def test_samples_stream_to_the_temporary_shard_and_the_shard_is_byte_identical(tmp_path):
    samples = [{"__key__": f"k{i}" + "x" * (120 * (i == 1)), "json": b"{}", "bin": bytes([i]) * (5000 * i + 1)} for i in range(5)]
    writer = PartitionShardWriter(tmp_path / "out", "p", samples_per_shard=3)
    for one in samples[:4]:
        writer.write(one)
    (temporary,) = (tmp_path / "out").glob(".p-00001.tar.tmp-*")
    assert temporary.stat().st_size > 8192  # the fourth sample is on disk, not held in memory
    assert sorted(p.name for p in (tmp_path / "out").glob("p-*.tar")) == ["p-00000.tar"]  # unpublished until whole
    writer.write(samples[4])
    manifest = writer.close()
    for shard, part in zip(manifest["shards"], (samples[:3], samples[3:]), strict=True):
        data = (tmp_path / "out" / shard["name"]).read_bytes()
        assert data == reference_tar(tmp_path / "ref.tar", part)
        assert (shard["bytes"], shard["sha256"], shard["count"]) == (len(data), hashlib.sha256(data).hexdigest(), len(part))


def test_a_failed_partition_leaves_no_temporary_shard(tmp_path):
    with pytest.raises(RuntimeError), PartitionShardWriter(tmp_path, "p", samples_per_shard=2) as writer:
        for i in range(3):
            writer.write({"__key__": f"k{i}", "txt": b"t"})
        raise RuntimeError("the partition fails")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p-00000.tar"]  # the whole first shard; no manifest
    writer = PartitionShardWriter(tmp_path / "again", "p")
    writer.write({"__key__": "k0", "txt": b"t"})
    with pytest.raises(TypeError):
        writer.write({"__key__": "k1", "txt": "text, not bytes"})  # a failed write removes the open shard itself
    assert not list((tmp_path / "again").iterdir())


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


def test_a_killed_writers_temporary_shard_is_removed_by_the_next_attempt(tmp_path):
    """A SIGKILLed writer cannot clean up: its `.p-00001.tar.tmp-<pid>` would stay, as large as a shard."""
    from curation.atomic import atomic_path

    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "p-00000.tar") as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt  # an interrupted writer removes its own temporary file
    assert not list(tmp_path.iterdir())
    killed = [tmp_path / ".p-00001.tar.tmp-4242", tmp_path / ".p-00000.tar.tmp-77"]  # as a killed process leaves them
    others = [tmp_path / ".q-00000.tar.tmp-4242", tmp_path / ".p.manifest.json.tmp-4242", tmp_path / ".p-x-00000.tar.tmp-1"]
    for path in killed + others:
        path.write_bytes(b"partial")
    writer = PartitionShardWriter(tmp_path, "p", samples_per_shard=1)
    assert not any(path.exists() for path in killed) and all(path.exists() for path in others)  # other names are not ours
    writer.write(document_to_sample(make_doc(0)))
    writer.close()
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


SAMPLES = {f"s{i}": {"jpg": bytes([i]) * 700, "txt": f"caption {i}".encode()} for i in range(4)}


def read_all(path, **kw):
    """(keys read, damage detail or None), as a consumer sees them."""
    keys = []
    try:
        for sample in iter_tar_samples(path, **kw):
            keys.append(sample["__key__"])
    except DamagedTarError as exc:
        return keys, exc.detail
    return keys, None


def test_a_sample_over_its_caps_is_marked_and_its_members_are_not_read(tmp_path, monkeypatch):
    """A stranger's tar can put any number of members under one key: the reader held them all."""
    import curation.shards as shards

    path = tmp_path / "t.tar"
    many = one_key_many_members(b"many", DEFAULT_MAX_SAMPLE_MEMBERS + 50, 1)
    big = one_key_many_members(b"big", 3, 40)
    path.write_bytes(many + member(b"ok.txt", b"fine") + big + member(b"last.txt", b"end") + END)
    reads = []
    real_read = shards._read_member

    def counting(tar, info):
        reads.append(info.name)
        return real_read(tar, info)

    monkeypatch.setattr(shards, "_read_member", counting)

    samples = list(iter_tar_samples(path, max_member_bytes=100, max_sample_bytes=10_000))
    assert [s["__key__"] for s in samples] == ["many", "ok", "big", "last"]
    assert set(samples[0]) == {"__key__", TOO_LARGE} and f"{DEFAULT_MAX_SAMPLE_MEMBERS + 1} members" in samples[0][TOO_LARGE]
    assert len(reads) == DEFAULT_MAX_SAMPLE_MEMBERS + 5  # the members under the cap, then the three other samples' 5
    assert samples[1]["txt"] == b"fine" and samples[3]["txt"] == b"end"
    few = list(iter_tar_samples(path, max_member_bytes=100, max_sample_bytes=100, max_sample_members=5000))
    assert "101 bytes" in few[0][TOO_LARGE] and "120 bytes" in few[2][TOO_LARGE]  # big's third 40-byte member breaks 100
    assert list_tar(path).units == 4  # the count is the same: over-cap samples are still one sample each


def test_the_reader_keeps_no_header_of_members_it_has_passed(tmp_path):
    """tarfile appends every header it reads to a list: a tar of millions of tiny members filled memory."""
    path = tmp_path / "t.tar"
    path.write_bytes(one_key_many_members(b"k", 50, 1) + END)
    kept = [len(tar.members) for tar, _ in iter_tar_members(path)]  # type: ignore[attr-defined]
    assert len(kept) == 50 and max(kept) == 0


def test_a_tar_truncated_half_way_through_a_header_is_damage_not_an_end(tmp_path):
    path = truncated_in_header(tmp_path / "t.tar", SAMPLES, member=5)  # the txt header of s2
    keys, damage = read_all(path)
    assert keys == ["s0", "s1"] and "truncated header" in damage
    assert list_tar(path) == InputCount(2, damage)  # s2 lost a member: it belongs to the unreadable rest
    assert list_tar(path).units == 3


@pytest.mark.parametrize(
    ("build", "read", "expected"),
    [
        (lambda p: bad_checksum_midway(p, SAMPLES, member=4), ["s0"], "damaged header"),  # s1 may lack members
        (lambda p: absurd_size(p, SAMPLES), ["s0", "s1", "s2", "s3"], "unexpected end of data"),
        (
            lambda p: appended_archive(p, dict(list(SAMPLES.items())[:2]), dict(list(SAMPLES.items())[2:])),
            ["s0", "s1"],
            "data after the end-of-archive marker",
        ),
        (lambda p: gzip_truncated(p, SAMPLES), None, "EOFError"),
    ],
)
def test_damage_python_tarfile_passes_over_quietly_is_reported(tmp_path, build, read, expected):
    path = build(tmp_path / "t.tar")
    keys, damage = read_all(path)
    assert expected in damage
    if read is not None:
        assert keys == read
    listing = list_tar(path)
    assert listing.readable == len(keys) and listing.damage is not None


def _within(seconds: float, work):
    """`work()`'s result, failing the test instead of hanging when it does not return in time."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(work()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, f"still reading after {seconds} s"
    return result[0]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("neg-size-loop", "negative size -512"),  # tarfile alone re-reads this header forever
        ("sparse-map-garbage", "malformed header"),  # tarfile alone raises ValueError
        ("sparse-map-short", "malformed header"),
        ("sparse-extended-run", "malformed header"),  # tarfile alone raises IndexError
        ("long-name-negative", "asks to read -1024 bytes"),
    ],
)
def test_headers_python_tarfile_loops_or_crashes_on_are_damage(tmp_path, case, expected):
    path = tmp_path / "t.tar"
    path.write_bytes(next(c.data for c in cases() if c.name == f"{case}.tar"))
    keys, damage = _within(10, lambda: read_all(path))
    assert keys == ["first"] and expected in damage  # `second` may lack members: it belongs to the damaged rest
    assert list_tar(path) == InputCount(1, damage)


@pytest.mark.parametrize("compress", [lambda data: data, gzip.compress])
def test_a_header_declaring_a_terabyte_is_refused_without_allocating_it(tmp_path, compress):
    records = pax_records([(b"path", b"huge.jpg")])
    data = sample(b"a", 1) + sample(b"b", 2) + header(b"PaxHeaders/huge", base256(1 << 40, 12), b"x") + records + b"\x00" * 2048
    path = tmp_path / "t.tar"
    path.write_bytes(compress(data))
    keys, damage = read_all(path)  # tarfile alone asks for one read of 1 TiB: MemoryError
    assert keys == ["a"] and f"asks to read {1 << 40} bytes" in damage


@pytest.mark.parametrize("content", [b"", b"this is not a tar file at all" * 40])
def test_a_tar_with_nothing_readable_is_unusable(tmp_path, content):
    (tmp_path / "t.tar").write_bytes(content)
    with pytest.raises(UnreadableInputError, match="t.tar: not a readable tar"):
        list_tar(tmp_path / "t.tar")


def test_non_utf8_and_long_member_names_are_read_and_written_back(tmp_path):
    odd = "caf\udce9-" + "x" * 150  # a latin-1 byte that is not UTF-8, and a name over ustar's 100 chars
    path = write_tar(tmp_path / "in.tar", {odd: {"txt": b"hi"}})
    (sample,) = list(iter_tar_samples(path))
    assert sample["__key__"] == "caf\\xe9-" + "x" * 150 and sample["txt"] == b"hi"

    writer = PartitionShardWriter(tmp_path / "out", "p")
    long_key = safe_key(sample["__key__"]) + "y" * 300
    writer.write({"__key__": long_key, "txt": b"long"})
    writer.write({"__key__": "plain", "txt": b"short"})
    manifest = writer.close()
    shard = str(tmp_path / "out" / manifest["shards"][0]["name"])
    assert [s["__key__"] for s in wds.WebDataset(shard, shardshuffle=False)] == [long_key, "plain"]


def test_a_key_written_twice_in_a_partition_is_a_sample_error(tmp_path):
    writer = PartitionShardWriter(tmp_path, "p")
    writer.write({"__key__": "k", "txt": b"1"})
    with pytest.raises(SampleError) as info:
        writer.write({"__key__": "k", "txt": b"2"})
    assert info.value.reason == "duplicate_key"
    assert writer.close()["count"] == 1


def test_long_ids_get_bounded_distinct_keys():
    a, b = "a" * 500 + "1", "a" * 500 + "2"
    assert len(safe_key(a)) == MAX_KEY_CHARS and safe_key(a) != safe_key(b)
    assert safe_key("short.id/x") == "short_id_x"


class _ResetAfter(io.BytesIO):
    """A file whose connection drops once `limit` bytes have been read."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__(data)
        self.limit = limit

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= self.limit:
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().read(size)


@pytest.mark.parametrize("error", ["storage", "damage"])
def test_a_storage_error_is_raised_as_itself_not_taken_for_damage(tmp_path, monkeypatch, error):
    path = write_tar(tmp_path / "t.tar", SAMPLES)
    data = path.read_bytes() if error == "storage" else gzip.compress(path.read_bytes())[:-40]
    monkeypatch.setattr(type(path), "open", lambda self, mode="r", *a, **k: _ResetAfter(data, 2048))
    expected = ConnectionResetError if error == "storage" else DamagedTarError
    with pytest.raises(expected):
        list(iter_tar_samples(path))
