"""curation.storage and the writers and readers that use it, against the moto S3 server."""

import hashlib
import io
import json
import pickle
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.atomic import atomic_open, write_json, write_parquet
from curation.errors import UserError
from curation.ledger import LedgerEntry, read_ledger, write_ledger
from curation.optout_lists import DoNotTrainList
from curation.readers import UnreadableInputError, count_rows, discover_partitions, input_columns, iter_rows_checked
from curation.shards import PartitionShardWriter, iter_tar_samples, list_tar, read_manifest
from curation.storage import ObjectPath, is_url, local_only, storage_path
from tests.hostile.craft_tars import cases


def put(path: ObjectPath, payload: bytes) -> None:
    path.fs.pipe_file(path.path, payload)


def test_storage_path_keeps_local_paths_local(tmp_path):
    assert storage_path(str(tmp_path)) == tmp_path and isinstance(storage_path(str(tmp_path)), Path)
    assert storage_path(f"file://{tmp_path}/x") == tmp_path / "x"
    assert storage_path("relative/dir") == Path("relative/dir")
    remote = storage_path("s3://bucket/a/b.parquet")
    assert isinstance(remote, ObjectPath) and str(remote) == "s3://bucket/a/b.parquet"
    assert storage_path("hf://datasets/org/name/data") == ObjectPath("hf://datasets/org/name/data")
    assert is_url("gs://b/k") and not is_url(str(tmp_path)) and not is_url(f"file://{tmp_path}")
    with pytest.raises(UserError, match="unknown storage scheme"):
        storage_path("nosuchscheme://bucket/key")
    with pytest.raises(UserError, match="--optout-cache must be a local path"):
        local_only(remote, "--optout-cache")


def test_object_path_names_match_pathlib():
    path = ObjectPath("s3://bucket/out/shards/part-00001.tar")
    pure = Path("/bucket/out/shards/part-00001.tar")
    assert (path.name, path.stem, path.suffix) == (pure.name, pure.stem, pure.suffix)
    assert path.parent == ObjectPath("s3://bucket/out/shards") and path.parent / "x" == ObjectPath("s3://bucket/out/shards/x")
    assert path.with_name("m.json") == ObjectPath("s3://bucket/out/shards/m.json")
    assert path.with_suffix(".json").name == "part-00001.json"
    assert str(path.relative_to(ObjectPath("s3://bucket/out"))) == "shards/part-00001.tar"
    assert ObjectPath("s3://bucket/out/") == ObjectPath("s3://bucket/out")
    assert pickle.loads(pickle.dumps(path)) == path
    with pytest.raises(TypeError):
        open(path)  # type: ignore[call-overload]  # never mistaken for a local file name


def test_listing_globbing_and_removal(bucket):
    for key in ("a/x-00000.tar", "a/x-00001.tar", "a/x.manifest.json", "a/sub/y.parquet", "a/sub/deeper/z.parquet", "b/w.parquet"):
        put(bucket / key, b"1")
    root = bucket / "a"
    assert root.exists() and root.is_dir() and not root.is_file() and (root / "x.manifest.json").is_file()
    assert [p.name for p in root.glob("x-[0-9][0-9][0-9][0-9][0-9].tar")] == ["x-00000.tar", "x-00001.tar"]
    assert [str(p.relative_to(root)) for p in root.glob("*/*.parquet")] == ["sub/y.parquet"]
    assert [str(p.relative_to(root)) for p in root.glob("**/*.parquet")] == ["sub/deeper/z.parquet", "sub/y.parquet"]
    assert [p.name for p in root.rglob("*.parquet")] == ["z.parquet", "y.parquet"]
    (root / "x-00000.tar").unlink()
    (root / "x-00000.tar").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        (root / "x-00000.tar").unlink()
    assert not (root / "x-00000.tar").exists()
    (root / "sub").remove_tree()
    assert not list(root.rglob("*.parquet")) and (bucket / "b" / "w.parquet").exists()


def test_listings_are_never_stale(bucket):
    """Another process may write between two looks: what this process saw before must not hide it."""
    folder = bucket / "shards"
    put(folder / "one.json", b"{}")
    assert [p.name for p in folder.glob("*.json")] == ["one.json"]
    other = ObjectPath(str(folder / "two.json"))
    other.fs.pipe_file(other.path, b"{}")  # as another writer would; the listing above must not be cached
    assert [p.name for p in folder.glob("*.json")] == ["one.json", "two.json"]
    assert (folder / "two.json").exists()


def test_atomic_writes_publish_whole_objects_or_nothing(bucket):
    target = bucket / "out" / "report.json"
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as handle:
            handle.write('{"a": 2, "half": ')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"a": 1}, "a failed write replaced the object"
    assert [p.name for p in (bucket / "out").iterdir()] == ["report.json"], "a temporary object was left"
    write_parquet(bucket / "out" / "t.parquet", pa.table({"x": [1, 2, 3]}))
    assert count_rows(bucket / "out" / "t.parquet").units == 3


def test_readers_read_objects_in_place(bucket, tmp_path):
    pq.write_table(pa.table({"id": ["a", "b"], "v": [1, 2]}), tmp_path / "p.parquet", row_group_size=1)
    with pa.OSFile(str(tmp_path / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, pa.schema([("id", pa.string())])) as writer:
        writer.write_table(pa.table({"id": ["c", "d", "e"]}))
    (bucket / "in" / "nested").upload(tmp_path / "p.parquet")
    (bucket / "in" / "nested" / "p.parquet").upload(tmp_path / "p.parquet")
    (bucket / "in" / "s.arrow").upload(tmp_path / "s.arrow")
    (bucket / "in" / "nested").unlink()
    parts = discover_partitions([bucket / "in"])
    assert [(p.name, p.path) for p in parts] == [("nested_p", bucket / "in/nested/p.parquet"), ("s", bucket / "in/s.arrow")]
    assert [count_rows(p.path).units for p in parts] == [2, 3]
    # an unreadable block would stay in the list as itself, and fail the comparison
    assert [row["id"] if isinstance(row, dict) else row for row in iter_rows_checked(parts[0].path)] == ["a", "b"]
    assert [row["id"] if isinstance(row, dict) else row for row in iter_rows_checked(parts[1].path)] == ["c", "d", "e"]
    assert input_columns(parts[1].path) == ["id"]
    with pytest.raises(FileNotFoundError):
        discover_partitions([bucket / "missing"])


def test_shards_manifests_and_ledgers_on_object_storage(bucket):
    out = bucket / "out" / "shards"
    put(out / "p-00007.tar", b"left by an interrupted attempt")
    writer = PartitionShardWriter(out, "p", samples_per_shard=2)
    for i in range(3):
        writer.write({"__key__": f"k{i}", "json": json.dumps({"i": i}).encode(), "txt": b"t"})
    manifest = writer.close(input=4)
    assert read_manifest(out, "p") == manifest and manifest["count"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["p-00000.tar", "p-00001.tar", "p.manifest.json"]
    assert [s["bytes"] for s in manifest["shards"]] == [(out / s["name"]).stat().st_size for s in manifest["shards"]]
    digests = [hashlib.sha256((out / s["name"]).read_bytes()).hexdigest() for s in manifest["shards"]]
    assert [s["sha256"] for s in manifest["shards"]] == digests  # computed while writing, equal to what was uploaded
    samples = [s for name in ("p-00000.tar", "p-00001.tar") for s in iter_tar_samples(out / name)]
    assert [s["__key__"] for s in samples] == ["k0", "k1", "k2"] and list_tar(out / "p-00000.tar").units == 2
    entries = [LedgerEntry("x", "p", "parse", "malformed", "")]
    write_ledger(bucket / "out" / "ledger" / "p.parquet", entries)
    assert read_ledger([bucket / "out" / "ledger" / "p.parquet"]).column("reason").to_pylist() == ["malformed"]


def test_damaged_tar_on_object_storage_is_accounted(bucket):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("a.txt", "b.txt", "c.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    put(bucket / "t.tar", buffer.getvalue()[:2348])  # cut inside the third header: "b" may miss members
    count = list_tar(bucket / "t.tar")
    assert count.readable == 1 and count.damage


def _count(path):
    try:
        return list_tar(path)
    except UnreadableInputError as exc:
        return str(exc).split(": ", 1)[1]


def test_listing_a_tar_on_object_storage_counts_what_a_local_listing_counts(bucket, tmp_path):
    """The object listing seeks over member data; every hostile tar must still count as it does locally."""
    for case in cases():
        (tmp_path / case.name).write_bytes(case.data)
        put(bucket / case.name, case.data)
        assert _count(bucket / case.name) == _count(tmp_path / case.name), case.name


def test_listing_a_tar_of_large_members_on_object_storage_fetches_headers_not_data(bucket, monkeypatch):
    import s3fs

    out = bucket / "shards"
    writer = PartitionShardWriter(out, "p", samples_per_shard=100)
    for i in range(4):  # members of 2.4 MB, as a PDF of PDFA: their data is seeked over
        writer.write({"__key__": f"k{i}", "pdf": bytes([i]) * 2_400_000, "json": b"{}"})
    size = writer.close()["bytes"]
    fetched = []
    real = s3fs.core.S3File._fetch_range

    def counting(self, start, end):
        fetched.append(end - start)
        return real(self, start, end)

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counting)
    assert list_tar(out / "p-00000.tar").units == 4
    assert 0 < sum(fetched) < size / 10  # the whole shard was downloaded before


def test_do_not_train_lists_from_objects(bucket, tmp_path):
    put(bucket / "dnt.txt", b"# comment\nhttps://x.example/a.jpg\nblocked.example\n")
    pq.write_table(pa.table({"domain": ["other.example"]}), tmp_path / "d.parquet")
    (bucket / "dnt.parquet").upload(tmp_path / "d.parquet")
    lists = DoNotTrainList.from_files([bucket / "dnt.txt", bucket / "dnt.parquet"])
    assert lists.match("https://x.example/a.jpg") == "url"
    assert lists.match("https://cdn.blocked.example/i.png") == "domain:blocked.example"
    assert lists.match("https://www.other.example/i.png") == "domain:other.example"


@contextmanager
def s3_calls() -> Iterator[list[tuple[str, int]]]:
    """(API method, keys listed) of every S3 request s3fs makes inside the block."""
    import s3fs

    calls: list[tuple[str, int]] = []
    original = s3fs.S3FileSystem._call_s3

    async def counted(fs, method, *args, **kwargs):
        calls.append((method, 0))  # counted before it runs: a request that fails (a missing key) is one too
        out = await original(fs, method, *args, **kwargs)
        calls[-1] = (method, len(out.get("Contents", [])) if isinstance(out, dict) else 0)
        return out

    s3fs.S3FileSystem._call_s3 = counted
    try:
        yield calls
    finally:
        s3fs.S3FileSystem._call_s3 = original


def test_a_glob_with_a_literal_start_lists_only_keys_with_that_prefix(bucket):
    """One partition's shards among many objects: the LIST asks the store for that prefix only."""
    folder = bucket / "shards"
    for name in [f"other{i:02d}-00000.tar" for i in range(30)] + ["x-00000.tar", "x-00001.tar", "x.manifest.json", "x-y-00000.tar"]:
        put(folder / name, b"1")
    with s3_calls() as calls:
        assert [p.name for p in folder.glob("x-[0-9][0-9][0-9][0-9][0-9].tar")] == ["x-00000.tar", "x-00001.tar"]
    assert calls == [("list_objects_v2", 3)]  # x-00000.tar, x-00001.tar, x-y-00000.tar: not the folder's 34 objects
    with s3_calls() as calls:
        assert len(list(folder.glob("*.tar"))) == 33
    assert calls == [("list_objects_v2", 34)]  # no literal start: the whole folder
    assert [p.name for p in folder.starting_with("x.")] == ["x.manifest.json"]
    assert not list((bucket / "missing").glob("x-*.tar"))


def test_reading_a_manifest_asks_no_existence_check_first(bucket):
    from curation.shards import read_manifest

    path = bucket / "shards" / "x.manifest.json"
    write_json(path, {"partition": "x"})
    with s3_calls() as before:
        assert path.exists() and json.loads(path.read_text()) == {"partition": "x"}  # a check, then the read
    with s3_calls() as present:
        assert read_manifest(bucket / "shards", "x") == {"partition": "x"}
    with s3_calls() as missing:
        assert read_manifest(bucket / "shards", "y") is None
    assert len(present) == len(before) - 1 == 2 and len(missing) <= 2


def test_finding_which_partitions_are_done_is_one_listing_not_a_request_per_partition(bucket):
    from curation.shards import read_manifest, read_manifests

    shards = bucket / "shards"
    for name in ("p03", "p07"):
        write_json(shards / f"{name}.manifest.json", {"partition": name})
        put(shards / f"{name}-00000.tar", b"1")
    partitions = [f"p{i:02d}" for i in range(12)]
    with s3_calls() as one_by_one:
        assert {p: m for p in partitions if (m := read_manifest(shards, p))} == {"p03": {"partition": "p03"}, "p07": {"partition": "p07"}}
    with s3_calls() as listed:
        assert read_manifests(shards, partitions) == {"p03": {"partition": "p03"}, "p07": {"partition": "p07"}}
    assert [method for method, _ in listed].count("list_objects_v2") == 1
    assert len(listed) == 1 + 2 * 2 < len(one_by_one) == 2 * 12  # a listing, then a HEAD and a GET per manifest found
    assert read_manifests(shards, ["p03"]) == {"p03": {"partition": "p03"}} and read_manifests(bucket / "none", partitions) == {}
