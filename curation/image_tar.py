"""The `images.tar` member: all images of a multi-image sample packed into one uncompressed tar.

A multi-image sample (an OBELICS document, a Cauldron conversation) keeps its images in one member, so
that every sample of a shard has the same members. `datasets.load_dataset("webdataset")` infers its
columns from the first samples and drops members they lack, and Ray Data fails to merge per-image
columns that only some samples have; a single member that no reader decodes (`.tar` is in none of
their decoder tables) reaches every reader whole, as bytes.

Inside, each image is a member named `<n>.<ext>`: `n` is the image's node position (documents) or its
index (conversations), `ext` comes from the image's magic number. The tar is USTAR with fixed metadata
and no padding to a record boundary, so equal images give equal bytes. A sample without images gets an
empty tar (two zero blocks), never a missing member.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterable

from curation.errors import SampleError
from curation.images import image_extension

IMAGES_MEMBER = "images.tar"
_BLOCK = tarfile.BLOCKSIZE
_NAME = re.compile(r"(\d+)\.[a-z0-9]+")


def pack_images(images: Iterable[tuple[int, bytes]]) -> bytes:
    """The `images.tar` bytes for (number, encoded image) pairs."""
    out = bytearray()
    for number, data in images:
        info = tarfile.TarInfo(f"{number}.{image_extension(data)}")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        out += info.tobuf(tarfile.USTAR_FORMAT)
        out += data + bytes(-len(data) % _BLOCK)
    return bytes(out + bytes(2 * _BLOCK))


def unpack_images(data: bytes) -> dict[int, bytes]:
    """{number: encoded image} from `images.tar` bytes; SampleError(`malformed`) for anything we never write."""
    images: dict[int, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                match = _NAME.fullmatch(member.name)
                if not member.isfile() or match is None:
                    raise SampleError("malformed", f"{IMAGES_MEMBER} holds {member.name!r}, not <n>.<ext> files")
                number = int(match.group(1))
                if number in images:
                    raise SampleError("malformed", f"{IMAGES_MEMBER} holds image {number} twice")
                handle = tar.extractfile(member)
                images[number] = handle.read() if handle else b""
    except tarfile.TarError as error:
        raise SampleError("malformed", f"{IMAGES_MEMBER} is not a tar: {error}") from None
    return images
