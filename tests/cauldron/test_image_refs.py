"""Image values -> bytes: embedded, a file next to the source (never outside it), or a fetched URL."""

import os

import pytest

from cauldron.image_refs import ImageResolver
from curation.errors import SampleError

from .conftest import encode, make_photo

PNG = encode(make_photo(3))


def rejection(resolve, value):
    with pytest.raises(SampleError) as rejected:
        resolve(value)
    return rejected.value


def test_paths_resolve_next_to_the_file_then_under_the_root(tmp_path):
    (tmp_path / "train" / "png").mkdir(parents=True)
    (tmp_path / "train" / "png" / "1.png").write_bytes(PNG)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "2.png").write_bytes(PNG[::-1])
    resolve = ImageResolver(tmp_path, tmp_path / "train")
    assert resolve("png/1.png") == PNG  # relative to the JSON file's folder
    assert resolve({"bytes": None, "path": "images/2.png"}) == PNG[::-1]  # relative to the source root
    assert resolve("/fsx/someone/chartqa/train/png/1.png") == PNG  # an absolute path from another machine
    assert resolve({"bytes": PNG, "path": "ignored.png"}) == PNG


def test_missing_files_say_how_to_embed_the_bytes(tmp_path):
    error = rejection(ImageResolver(tmp_path), {"bytes": None, "path": "/data/x/COCO_1.jpg"})
    assert error.reason == "image_bytes_missing"
    assert "COCO_1.jpg" in error.detail and "save_to_disk" in error.detail and str(tmp_path) in error.detail


def test_no_file_outside_the_source_is_read(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)
    root = tmp_path / "source"
    root.mkdir()
    os.symlink(secret, root / "link.png")
    resolve = ImageResolver(root)
    assert rejection(resolve, "../secret.png").reason == "image_bytes_missing"
    assert rejection(resolve, str(secret)).reason == "image_bytes_missing"
    assert rejection(resolve, "link.png").reason == "image_bytes_missing"


def test_size_cap_empty_and_url_without_fetching(tmp_path):
    (tmp_path / "big.png").write_bytes(PNG)
    assert rejection(ImageResolver(tmp_path, max_bytes=10), "big.png").reason == "image_too_large"
    assert rejection(ImageResolver(tmp_path), b"").reason == "empty_image"
    error = rejection(ImageResolver(tmp_path), "https://example.org/a.jpg")
    assert error.reason == "image_url_not_fetched" and "--fetch-images" in error.detail
    assert rejection(ImageResolver(tmp_path), None).reason == "no_image"
