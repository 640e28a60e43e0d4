import io
import shutil
import subprocess
import tarfile

import pytest

from curation.errors import SampleError
from curation.image_tar import pack_images, unpack_images

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
JPEG = b"\xff\xd8\xff" + b"x" * 700


def tar_of(*members: tuple[str, bytes], kind: bytes = tarfile.REGTYPE) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.type = len(data), kind
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_images_round_trip_under_their_numbers_with_extensions_from_the_bytes():
    packed = pack_images([(3, PNG), (0, JPEG)])
    assert unpack_images(packed) == {3: PNG, 0: JPEG}
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:  # any tar reader sees plain files
        assert [(m.name, m.size, m.mtime) for m in tar] == [("3.png", len(PNG), 0), ("0.jpg", len(JPEG), 0)]
    assert pack_images([(3, PNG), (0, JPEG)]) == packed  # deterministic bytes
    assert len(packed) % 512 == 0 and len(packed) < 10240  # no padding to tar's 10 KiB record


def test_no_images_is_an_empty_tar_not_a_missing_member():
    assert unpack_images(pack_images([])) == {}
    assert pack_images([]) == bytes(1024)


def test_gnu_tar_lists_the_members():
    tar = shutil.which("tar")
    if tar is None:
        pytest.skip("no tar binary")
    listing = subprocess.run([tar, "-tf", "-"], input=pack_images([(1, PNG), (4, JPEG)]), capture_output=True, check=True)
    assert listing.stdout.decode().split() == ["1.png", "4.jpg"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a tar at all" * 64,
        tar_of(("x.png", PNG)),
        tar_of(("../1.png", PNG)),
        tar_of(("1.png", PNG), ("1.jpg", JPEG)),
        tar_of(("2.png", b""), kind=tarfile.SYMTYPE),
    ],
)
def test_anything_we_never_write_is_malformed(data):
    with pytest.raises(SampleError) as error:
        unpack_images(data)
    assert error.value.reason == "malformed"
