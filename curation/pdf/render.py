"""Page rasterisation: PDF pages through PDFium at an exact pixel size, TIFF/image pages through Pillow.

PDFium is not thread-safe: call these from one thread per process (the worker process does).
"""

from __future__ import annotations

import ctypes
import io
import math
import warnings

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from curation.errors import SampleError
from curation.images import on_white
from curation.pdf.settings import PdfSettings

POINTS_PER_INCH = 72.0
# zlib level 3: for rendered pages about 1.5x faster than Pillow's default (6) and no larger
# (benchmarks/pdf_render.py prints the sizes); PNG stays lossless either way.
PNG_COMPRESS_LEVEL = 3


def fit_size(width: float, height: float, scale: float, max_side: int, min_side: int = 0) -> tuple[int, int]:
    """Pixel size for a `width` x `height` page drawn at `scale` px/unit, within [min_side, max_side].

    The long side never exceeds `max_side`. A short side under `min_side` is enlarged as far as
    `max_side` permits; if it still falls short, SampleError(`page_too_small`).
    """
    if width <= 0 or height <= 0:
        raise SampleError("render_error", f"page has no area ({width} x {height})")
    long_side, short_side = max(width, height), min(width, height)
    cap = max_side / long_side
    scale = min(scale, cap)
    if min_side and short_side * scale < min_side:
        scale = min(min_side / short_side, cap)
    out_w = min(max_side, max(1, round(width * scale)))
    out_h = min(max_side, max(1, round(height * scale)))
    if min_side and min(out_w, out_h) < min_side:
        raise SampleError(
            "page_too_small",
            f"{width:.0f}x{height:.0f} fits {out_w}x{out_h} under max side {max_side}, short side under {min_side}",
        )
    return out_w, out_h


def pdf_page_size(page: pdfium.PdfPage, settings: PdfSettings) -> tuple[int, int]:
    """Rendered pixel size of a PDF page (its `/Rotate` applied) under `settings`."""
    width, height = page.get_size()
    scale = settings.dpi / POINTS_PER_INCH if settings.dpi else math.inf
    return fit_size(width, height, scale, settings.max_side, settings.min_side)


def render_pdf_page(page: pdfium.PdfPage, width: int, height: int, mode: str) -> Image.Image:
    """Rasterise `page` (with annotations, on white) to exactly `width` x `height` pixels."""
    gray = mode == "L"
    bitmap_format = pdfium_c.FPDFBitmap_Gray if gray else pdfium_c.FPDFBitmap_BGR
    bitmap = pdfium_c.FPDFBitmap_CreateEx(width, height, bitmap_format, None, 0)
    if not bitmap:
        raise SampleError("memory_limit", f"cannot allocate a {width}x{height} bitmap")
    try:
        pdfium_c.FPDFBitmap_FillRect(bitmap, 0, 0, width, height, 0xFFFFFFFF)
        flags = pdfium_c.FPDF_ANNOT | (pdfium_c.FPDF_GRAYSCALE if gray else pdfium_c.FPDF_REVERSE_BYTE_ORDER)
        pdfium_c.FPDF_RenderPageBitmap(bitmap, page.raw, 0, 0, width, height, 0, flags)
        stride = pdfium_c.FPDFBitmap_GetStride(bitmap)
        buffer = ctypes.cast(pdfium_c.FPDFBitmap_GetBuffer(bitmap), ctypes.POINTER(ctypes.c_ubyte * (stride * height)))
        # frombuffer shares memory with the bitmap; copy before the bitmap is freed
        return Image.frombuffer(mode, (width, height), buffer.contents, "raw", mode, stride, 1).copy()
    finally:
        pdfium_c.FPDFBitmap_Destroy(bitmap)


def open_raster(data: bytes) -> Image.Image:
    """Open an image file lazily (headers only); SampleError(`decode_error`) when it is not one.

    MemoryError is not a decode error: it goes on, to be ledgered as `memory_limit`.
    """
    try:
        return Image.open(io.BytesIO(data))
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises many types for corrupt data; this runs in the worker process
        raise SampleError("decode_error", f"{type(exc).__name__}: {exc}") from None


def raster_frame(image: Image.Image, index: int, max_pixels: int) -> Image.Image:
    """Frame `index` of an opened image (a page of a multi-page TIFF), pixel-capped, fully decoded.

    Raises SampleError(`too_many_pixels` / `decode_error`).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.seek(index)
            if image.width * image.height > max_pixels:
                raise SampleError("too_many_pixels", f"{image.width}x{image.height} is over {max_pixels} pixels")
            image.load()
            return image.copy()
    except SampleError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SampleError("too_many_pixels", str(exc)) from None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise SampleError("decode_error", f"{type(exc).__name__}: {exc}") from None


def fit_raster(image: Image.Image, settings: PdfSettings) -> Image.Image:
    """A raster page in the output mode, scaled (never beyond `max_side`) like a rendered page."""
    width, height = fit_size(image.width, image.height, 1.0, settings.max_side, settings.min_side)
    converted = on_white(image).convert(settings.mode)  # any colour mode; transparency on white, like a page
    if (width, height) != converted.size:
        converted = converted.resize((width, height), Image.Resampling.LANCZOS)
    return converted


def encode_image(image: Image.Image, settings: PdfSettings) -> tuple[bytes, str]:
    """Encoded bytes and the sample extension (`png` or `jpg`)."""
    buffer = io.BytesIO()
    if settings.image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=settings.jpeg_quality)
        return buffer.getvalue(), "jpg"
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue(), "png"
