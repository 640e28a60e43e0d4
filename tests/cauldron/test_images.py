"""Decoding is capped and never crashes on bad bytes; pixel hashes ignore the encoding and the mode."""

import io

import pytest
from PIL import Image

from cauldron.images import decode_image, pixel_hash, to_image_bytes
from curation.errors import SampleError

from .conftest import encode, make_photo


def test_pixel_cap_is_checked_before_decoding():
    big = encode(Image.new("L", (3000, 2000)))
    with pytest.raises(SampleError, match="too_many_pixels"):
        decode_image(big, max_pixels=5_000_000)
    assert decode_image(big, max_pixels=6_000_000).size == (3000, 2000)


def test_corrupt_and_truncated_bytes_raise_decode_error():
    with pytest.raises(SampleError):
        decode_image(b"not an image")
    with pytest.raises(SampleError):
        decode_image(encode(make_photo(0))[:200])


def test_pixel_hash_is_encoding_and_mode_independent():
    photo = make_photo(3)
    png = pixel_hash(encode(photo))
    assert pixel_hash(encode(photo, "BMP")) == png
    assert pixel_hash(encode(photo.convert("RGBA"))) == png  # opaque alpha
    assert pixel_hash(encode(photo, "PNG", compress_level=9)) == png
    assert pixel_hash(encode(make_photo(4))) != png
    grey = photo.convert("L")
    assert pixel_hash(encode(grey)) == pixel_hash(encode(grey.convert("RGB")))


def test_to_image_bytes_accepts_dataset_shapes():
    data = encode(make_photo(5))
    assert to_image_bytes({"bytes": data, "path": "x.png"}) == data
    assert to_image_bytes(memoryview(data)) == data
    assert pixel_hash(to_image_bytes(Image.open(io.BytesIO(data)))) == pixel_hash(data)
    with pytest.raises(SampleError, match="path only"):
        to_image_bytes({"bytes": None, "path": "/somewhere/x.png"})
