import json

import pytest

from cauldron.sft_shards import row_to_sample, sample_to_row
from curation.errors import SampleError
from curation.image_tar import pack_images, unpack_images

PNG = b"\x89PNG\r\n\x1a\nfirst"
JPEG = b"\xff\xd8\xffsecond"
TURN = {"user": "What is shown?", "assistant": "A square.", "source": "vqav2"}


@pytest.mark.parametrize("images", [[], [PNG], [PNG, JPEG, PNG]])
def test_rows_round_trip_with_any_number_of_images(images):
    sample = row_to_sample("vqav2/12", {"images": images, "texts": [TURN]}, dataset="vqav2")
    assert sorted(sample) == ["__key__", "images.tar", "json"] and sample["__key__"].startswith(
        "vqav2_12_"
    )  # "/" is unsafe: the key carries a digest
    assert unpack_images(sample["images.tar"]) == dict(enumerate(images))
    assert sample_to_row(sample) == {"images": images, "texts": [TURN]}


def test_every_turn_has_the_three_keys():
    sample = row_to_sample("k", {"images": [], "texts": [{"user": "Hi", "assistant": "Hello"}]}, dataset="openhermes")
    assert json.loads(sample["json"]) == {"texts": [{"user": "Hi", "assistant": "Hello", "source": "openhermes"}], "dataset": "openhermes"}


def test_shards_of_the_earlier_layout_still_read():
    old = {"__key__": "k", "json": json.dumps({"texts": [TURN], "dataset": "d"}).encode(), "0.png": PNG, "1.jpg": JPEG}
    assert sample_to_row(old) == {"images": [PNG, JPEG], "texts": [TURN]}


def test_images_must_be_numbered_from_zero():
    sample = row_to_sample("k", {"images": [PNG], "texts": [TURN]})
    sample["images.tar"] = pack_images([(1, PNG)])
    with pytest.raises(SampleError, match="0..n-1"):
        sample_to_row(sample)
