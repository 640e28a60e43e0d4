"""The crafted corpus carries the defect each case claims, and is the same bytes on every build."""

import hashlib
import io
import time
import warnings

import pytest
from PIL import Image

from curation.readers import UnreadableInputError
from curation.shards import list_tar
from tests.hostile import craft_images, craft_pdfs, craft_tars
from tests.hostile.craft_images import ImageCase
from tests.hostile.craft_pdfs import PdfCase
from tests.hostile.craft_tars import TarCase


@pytest.mark.parametrize("case", craft_images.cases(), ids=lambda c: c.name)
def test_each_crafted_image_opens_in_its_mode_or_fails_as_claimed(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about some of the broken headers
        if case.mode is not None:
            with Image.open(io.BytesIO(case.data)) as image:
                assert (image.mode, getattr(image, "n_frames", 1)) == (case.mode, case.frames)
                for frame in range(case.frames):
                    image.seek(frame)
                    image.load()
        else:
            with pytest.raises(Exception) as caught:
                with Image.open(io.BytesIO(case.data)) as image:
                    image.load()
            assert type(caught.value).__name__ == case.error


@pytest.mark.parametrize("case", craft_tars.cases(), ids=lambda c: c.name)
def test_each_crafted_tar_is_unusable_or_gives_a_sample(tmp_path, case):
    path = tmp_path / case.name
    path.write_bytes(case.data)
    if case.unusable:
        with pytest.raises(UnreadableInputError):
            list_tar(path)
    else:
        assert list_tar(path).readable >= 1


def test_crafted_cases_are_small_distinct_and_the_same_bytes_every_build():
    built: list[tuple[ImageCase | PdfCase | TarCase, ...]] = [
        craft_images.cases.__wrapped__(),
        craft_pdfs.cases.__wrapped__(),
        craft_tars.cases.__wrapped__(),
    ]
    time.sleep(1.1)  # a timestamp of one-second resolution (an ICC profile's, a gzip header's) would differ
    again = [craft_images.cases.__wrapped__(), craft_pdfs.cases.__wrapped__(), craft_tars.cases.__wrapped__()]
    assert built == again
    everything = [case for group in built for case in group]
    assert len({case.name for case in everything}) == len(everything)
    assert len({hashlib.sha1(case.data).digest() for case in everything}) == len(everything)
    assert sum(len(case.data) for case in everything) < 200_000
