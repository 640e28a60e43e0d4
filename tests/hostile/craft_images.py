"""Crafted hostile images: every PIL mode in the formats that carry it, and headers and data that no
decoder should trust (see SOURCES.md for the defect classes and the public test files they follow).

`cases()` builds them once per process from seeded pixels, so every run sees the same bytes. Each case
names the PIL mode Pillow must open it in, or the error Pillow must raise, so a crafted file that
stopped carrying its defect is caught (test_craft.py).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, TiffImagePlugin

WIDTH, HEIGHT = 24, 16


@dataclass(frozen=True)
class ImageCase:
    name: str  # a file name: its suffix says the format
    defect: str
    data: bytes
    mode: str | None = None  # the mode Pillow opens it in, when it decodes
    error: str | None = None  # the exception Pillow raises (at open or load), when it does not
    frames: int = 1


def _pixels(seed: int, channels: int, dtype: type = np.uint8, high: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, high, (HEIGHT, WIDTH, channels), dtype=dtype).squeeze()


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _rgb(seed: int) -> Image.Image:
    return Image.fromarray(_pixels(seed, 3))


@dataclass(frozen=True)
class Tag:
    tag: int
    type: int  # 3 SHORT, 4 LONG
    values: list[int]


def tiff(width: int, height: int, tags: list[Tag], data: bytes = b"") -> bytes:
    """A little-endian TIFF whose one IFD holds exactly these tags (plus size and strip offset), so a
    header can ask for whatever it likes; `data` follows the IFD as the only strip."""
    tags = sorted([Tag(256, 4, [width]), Tag(257, 4, [height]), *tags], key=lambda t: t.tag)
    ifd_size = 2 + 12 * (len(tags) + 1) + 4
    tags = sorted([*tags, Tag(273, 4, [8 + ifd_size])], key=lambda t: t.tag)
    entries = b""
    for t in tags:
        if len(t.values) != 1:
            raise ValueError("one value per tag keeps every value inside its entry")
        value = struct.pack("<HH", t.values[0], 0) if t.type == 3 else struct.pack("<I", t.values[0])
        entries += struct.pack("<HHI", t.tag, t.type, 1) + value
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries + b"\x00" * 4 + data


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(ihdr: bytes, *chunks: bytes) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + b"".join(chunks) + _chunk(b"IEND", b"")


def _scanlines(rows: np.ndarray) -> bytes:
    """Rows of raw pixel bytes, each behind filter type 0."""
    return b"".join(b"\x00" + row.tobytes() for row in rows)


def png_rgba16_animated(seed: int, frames: int = 2) -> bytes:
    """An APNG of 16-bit RGBA frames (Pillow reads it, but cannot write 16 bits per channel)."""
    width, height = WIDTH, HEIGHT
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    chunks = [_chunk(b"acTL", struct.pack(">II", frames, 0))]
    sequence = 0
    for index in range(frames):
        rows = _pixels(seed + index, 4, np.uint16, 1 << 16).astype(">u2").reshape(height, width * 4)
        data = zlib.compress(_scanlines(rows))
        chunks.append(_chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, width, height, 0, 0, 1, 10, 0, 0)))
        sequence += 1
        if index == 0:
            chunks.append(_chunk(b"IDAT", data))
        else:
            chunks.append(_chunk(b"fdAT", struct.pack(">I", sequence) + data))
            sequence += 1
    return _png(ihdr, *chunks)


def png_palette_1x1(trns: bytes) -> bytes:
    """A 1x1 palette PNG with this tRNS body (one zero byte: its only colour fully transparent)."""
    return _png(
        struct.pack(">IIBBBBB", 1, 1, 1, 3, 0, 0, 0),
        _chunk(b"PLTE", b"\xff\x4d\x00"),
        _chunk(b"tRNS", trns),
        _chunk(b"IDAT", zlib.compress(b"\x00\x00")),
    )


def png_unknown_compression() -> bytes:
    """A valid PNG plus an iCCP chunk whose compression method is 1 (only 0 is defined)."""
    good = _save(_rgb(11), "PNG")
    iccp = _chunk(b"iCCP", b"profile\x00\x01" + zlib.compress(b"\x00" * 128))
    return good[:33] + iccp + good[33:]  # right after the signature and IHDR


def png_broken(seed: int) -> bytes:
    """A PNG signature followed by random bytes: no IHDR at all."""
    return b"\x89PNG\r\n\x1a\n" + np.random.default_rng(seed).bytes(72)


def gif_screen(width: int, height: int, top: int = 0, frame: tuple[int, int] = (1, 1)) -> bytes:
    """A GIF whose logical screen is `width` x `height` and whose one frame sits at `top` with size
    `frame`: a few dozen bytes can declare gigapixels (the frame reaches past the screen)."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF1, 0, 0) + b"\x00\x00\x00\xff\xff\xff\xff\x00\x00\xff\xff\xff"
    control = b"\x21\xf9\x04\x01\x00\x00\x00\x00"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, top, frame[0], frame[1], 0)
    return header + control + descriptor + b"\x02\x02\x44\x01\x00\x3b"


def gif_transparent_frames(seed: int) -> bytes:
    """Three palette frames with a transparent index, each disposed to the background."""
    frames = [_rgb(seed + i).quantize(8) for i in range(3)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], transparency=2, disposal=2, duration=10)


def ppm_header(width: str, height: str) -> bytes:
    return f"P6 {width} {height}\n255\n".encode() + b"\x80" * 48


def truncated_tga(seed: int) -> bytes:
    """A run-length encoded palette TGA cut before its last scanlines."""
    data = _save(_rgb(seed).quantize(16), "TGA", compression="tga_rle")
    return data[: len(data) * 3 // 4]


def tiff_lab(seed: int) -> bytes:
    image = _rgb(seed).convert("LAB")
    image.info.pop("icc_profile", None)  # the conversion's profile carries the time it was made
    return _save(image, "TIFF")


def tiff_of(array: np.ndarray) -> bytes:
    return _save(Image.fromarray(array), "TIFF")  # the mode follows the dtype: I;16, I or F


def tiff_pages(seed: int) -> bytes:
    pages = [_rgb(seed + i).quantize(4) for i in range(3)]
    return _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def tiff_group4(seed: int) -> bytes:
    return _save(_rgb(seed).convert("1"), "TIFF", compression="group4")


def tiff_jpeg_garbage(seed: int) -> bytes:
    """A JPEG-compressed TIFF whose strip holds random bytes: the header is fine, the decoder fails."""
    good = _save(_rgb(seed), "TIFF", compression="jpeg")
    with Image.open(io.BytesIO(good)) as image:
        assert isinstance(image, TiffImagePlugin.TiffImageFile)
        start, size = image.tag_v2[273][0], image.tag_v2[279][0]
    noise = np.random.default_rng(seed).bytes(size - 2)
    return good[: start + 2] + noise + good[start + size :]  # keep the SOI marker so libjpeg starts


def mutated(data: bytes, seed: int, count: int) -> bytes:
    """`data` with `count` bytes past the first 8 set to random values: a fuzzer's first step."""
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    for at in rng.integers(8, len(out), count):
        out[at] = int(rng.integers(0, 256))
    return bytes(out)


def _mode_cases() -> list[ImageCase]:
    def case(name: str, defect: str, data: bytes, mode: str, frames: int = 1) -> ImageCase:
        return ImageCase(name, defect, data, mode=mode, frames=frames)

    grey16 = _pixels(21, 1, np.uint16, 1 << 16)
    return [
        case("lab.tif", "CIELAB TIFF", tiff_lab(1), "LAB"),
        case("grey16.tif", "I;16 TIFF (16-bit grey)", tiff_of(grey16), "I;16"),
        case("int32.tif", "I TIFF (32-bit signed integer)", tiff_of(_pixels(22, 1, np.int32, 1 << 20) - (1 << 19)), "I"),
        case(
            "float32.tif",
            "F TIFF (32-bit float, values far outside 0..255)",
            tiff_of(np.random.default_rng(23).normal(0, 1e4, (HEIGHT, WIDTH)).astype(np.float32)),
            "F",
        ),
        case("bilevel-trns.png", "1-bit PNG with a transparent colour", _save(_rgb(3).convert("1"), "PNG", transparency=1), "1"),
        case(
            "grey16-trns.png",
            "I;16 PNG with a transparent colour",
            _save(Image.fromarray(grey16), "PNG", transparency=int(grey16[0, 0])),
            "I;16",
        ),
        case("palette-trns.png", "P PNG with one transparent palette entry", _save(_rgb(4).quantize(16), "PNG", transparency=3), "P"),
        case(
            "palette-trns.gif", "P GIF, three frames, transparent index, disposal to background", gif_transparent_frames(5), "P", frames=3
        ),
        case("grey-alpha.png", "LA PNG (grey + alpha)", _save(Image.fromarray(_pixels(6, 2)), "PNG"), "LA"),
        case("bilevel.pbm", "1-bit PBM", _save(_rgb(7).convert("1"), "PPM"), "1"),
        case("bilevel-g4.tif", "1-bit CCITT group 4 TIFF", tiff_group4(8), "1"),
        case("pages.tif", "multi-frame palette TIFF", tiff_pages(9), "P", frames=3),
        case("rgba16-anim.png", "16-bit RGBA APNG (two frames)", png_rgba16_animated(10), "RGBA", frames=2),
        case("palette-1x1-null-trns.png", "1x1 P PNG whose tRNS makes its only colour transparent", png_palette_1x1(b"\x00"), "P"),
        case("palette-1x1-empty-trns.png", "1x1 P PNG with an empty tRNS chunk", png_palette_1x1(b""), "P"),
    ]


def _broken_cases() -> list[ImageCase]:
    def case(name: str, defect: str, data: bytes, error: str) -> ImageCase:
        return ImageCase(name, defect, data, error=error)

    return [
        case("broken.png", "PNG signature, then random bytes", png_broken(31), "UnidentifiedImageError"),
        case("jpeg-garbage.tif", "JPEG-compressed TIFF whose strip is random bytes (decoder error)", tiff_jpeg_garbage(32), "OSError"),
        case("truncated.tga", "run-length TGA cut at three quarters", truncated_tga(33), "OSError"),
        case(
            "gigapixel.gif",
            "49-byte GIF whose frame reaches 65535 x 66000 pixels",
            gif_screen(32, 32, top=65000, frame=(65535, 1000)),
            "DecompressionBombError",
        ),
        case("negative-size.ppm", "negative height in a PPM header", ppm_header("32", "-16"), "UnidentifiedImageError"),
        case(
            "overflow-size.ppm",
            "PPM height of 2**32 + 16 (16 once wrapped to 32 bits)",
            ppm_header("32", "4294967312"),
            "DecompressionBombError",
        ),
        case(
            "zero-width.gif", "GIF whose screen and frame are zero pixels wide", gif_screen(0, 32, frame=(0, 32)), "UnidentifiedImageError"
        ),
        case(
            "unknown-compression.png",
            "PNG with an iCCP chunk of unknown compression method",
            png_unknown_compression(),
            "UnidentifiedImageError",
        ),
        case(
            "ifd-offset.tif",
            "BigTIFF whose first IFD offset is past 2**63",
            b"II+\x00\x08\x00\x00\x00" + b"\xff" * 7 + b"\x80",
            "ValueError",
        ),
        case(
            "ifd-beyond-end.tif",
            "TIFF whose first IFD starts past the end of the file",
            b"II*\x00" + struct.pack("<I", 1 << 30),
            "UnidentifiedImageError",
        ),
        case(
            "huge-samples.tif",
            "TIFF asking for 303 million samples per pixel",
            tiff(10, 8, [Tag(258, 3, [16]), Tag(259, 3, [1]), Tag(262, 3, [1]), Tag(277, 4, [303169682])]),
            "UnidentifiedImageError",
        ),
        case(
            "huge-strip.tif",
            "deflate TIFF whose one strip declares 4 GiB, 64 bytes present",
            tiff(
                1024,
                1024,
                [Tag(258, 3, [8]), Tag(259, 3, [8]), Tag(262, 3, [1]), Tag(277, 3, [1]), Tag(278, 4, [1024]), Tag(279, 4, [0xFFFFFFFF])],
                data=b"\x7f" * 64,
            ),
            "OSError",
        ),
        case(
            "fuzzed.tif",
            "deflate TIFF with 40 random bytes changed",
            mutated(_save(_rgb(34), "TIFF", compression="tiff_adobe_deflate"), 34, 40),
            "UnidentifiedImageError",
        ),
    ]


@cache
def cases() -> tuple[ImageCase, ...]:
    return tuple(_mode_cases() + _broken_cases())
