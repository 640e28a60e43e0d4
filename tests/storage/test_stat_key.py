"""Input identities (`stat_key`, `stat_keys`): a changed file gets a new key, nothing reads its bytes."""

import os
import uuid

from curation.storage import MISSING_KEY, ObjectPath, stat_key, stat_keys


def test_a_local_key_follows_size_and_mtime(tmp_path):
    path = tmp_path / "part.parquet"
    path.write_bytes(b"abc")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    first = stat_key(path)
    assert first == stat_key(path) == "3:mtime_ns=1000000000"

    path.write_bytes(b"xyz")  # same size, other bytes: the mtime moves
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert stat_key(path) != first
    # The same bytes written again also move the mtime, so the key changes: such a partition is redone,
    # which costs work but never keeps an output made from another file.
    os.utime(path, ns=(3_000_000_000, 3_000_000_000))
    assert stat_key(path) not in (first, "3:mtime_ns=2000000000")


def test_stat_keys_equal_stat_key_and_mark_missing_files(tmp_path):
    paths = [tmp_path / "a.parquet", tmp_path / "sub" / "b.parquet", tmp_path / "gone.parquet"]
    paths[1].parent.mkdir()
    for path in paths[:2]:
        path.write_bytes(b"data")
    assert stat_keys(paths) == [stat_key(paths[0]), stat_key(paths[1]), MISSING_KEY]


def test_an_object_key_is_its_etag_from_one_listing_per_folder(bucket):
    a, b = bucket / "in" / "a.parquet", bucket / "in" / "b.parquet"
    a.fs.pipe_file(a.path, b"first")
    b.fs.pipe_file(b.path, b"other")
    key = stat_key(a)
    assert key.startswith("5:ETag=") and key != stat_key(b)
    assert stat_keys([a, b, bucket / "in" / "gone.parquet"]) == [key, stat_key(b), MISSING_KEY]  # listing == HEAD

    a.fs.pipe_file(a.path, b"FIRST")  # same size, same second: only the ETag tells
    assert stat_key(a) != key and stat_keys([a]) == [stat_key(a)]
    a.fs.pipe_file(a.path, b"first")  # the same bytes again: the content tag is the same
    assert stat_key(a) == key


def test_a_store_without_tags_falls_back_to_the_object_time():
    path = ObjectPath(f"memory://stat-key-{uuid.uuid4().hex[:8]}/a.bin")
    path.fs.pipe_file(path.path, b"one")
    key = stat_key(path)
    assert key.startswith("3:time_ns=") and stat_keys([path]) == [key]  # info() and ls() agree
    path.fs.pipe_file(path.path, b"two")
    assert stat_key(path) != key
