import io

import pytest
from PIL import Image

from curation import images
from curation.errors import SampleError


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(out, format="PNG")
    return out.getvalue()


def test_corrupt_data_is_a_decode_error_and_running_out_of_memory_is_not(monkeypatch):
    assert images.open_image(png()).size == (4, 3)
    with pytest.raises(SampleError) as corrupt:
        images.open_image(png()[:40])  # a header, then the data cut off
    assert corrupt.value.reason == "decode_error"

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(Image, "open", out_of_memory)
    with pytest.raises(MemoryError):
        images.open_image(png())
