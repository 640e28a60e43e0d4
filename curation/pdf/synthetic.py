"""A minimal PDF writer for demo inputs, tests and benchmarks: no PDF library needed to make PDFs.

It writes just enough of PDF 1.4 to exercise a renderer: pages of any size and `/Rotate`, lines of
Helvetica text (a standard font, so every reader extracts it), an embedded JPEG, raw extra content
operators, and the standard security handler (RC4, revision 2) for password-protected files.
Text is Latin-1 only.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

MARGIN_PT = 72.0
LINE_SPACING = 1.4
# The padding string of the standard security handler (PDF 32000-1, 7.6.3.3).
_PASSWORD_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
_FILE_ID = hashlib.md5(b"potion synthetic pdf").digest()


@dataclass
class SyntheticPage:
    """One page: `lines` are laid out from the top-left margin; `image` (JPEG bytes) fills `image_box`."""

    width: float = 612.0
    height: float = 792.0
    lines: list[str] = field(default_factory=list)
    font_size: float = 12.0
    rotate: int = 0
    image: bytes | None = None
    image_box: tuple[float, float, float, float] | None = None  # x, y (bottom-left), w, h in points
    extra_content: bytes = b""

    def baseline(self, line_no: int) -> tuple[float, float]:
        """Where line `line_no` starts, in PDF user space (origin bottom-left)."""
        return MARGIN_PT, self.height - MARGIN_PT - (line_no + 1) * self.font_size * LINE_SPACING


def _escape(text: str) -> bytes:
    raw = text.encode("latin-1")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _content(page: SyntheticPage) -> bytes:
    ops: list[bytes] = []
    if page.image is not None:
        x, y, w, h = page.image_box or (0.0, 0.0, page.width, page.height)
        ops.append(f"q {w:.3f} 0 0 {h:.3f} {x:.3f} {y:.3f} cm /Im1 Do Q".encode())
    for line_no, line in enumerate(page.lines):
        x, y = page.baseline(line_no)
        ops.append(b"BT /F1 %.2f Tf %.3f %.3f Td (" % (page.font_size, x, y) + _escape(line) + b") Tj ET")
    if page.extra_content:
        ops.append(page.extra_content)
    return b"\n".join(ops)


def _jpeg_info(data: bytes) -> tuple[int, int, str]:
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "JPEG":
            raise ValueError("page images must be JPEG bytes")
        colour = {"L": "/DeviceGray", "RGB": "/DeviceRGB", "CMYK": "/DeviceCMYK"}[image.mode]
        return image.width, image.height, colour


def _rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def _pad(password: str) -> bytes:
    return (password.encode("latin-1") + _PASSWORD_PAD)[:32]


class _Rc4Security:
    """Standard security handler, revision 2 (40-bit RC4): computes /O, /U and per-object keys."""

    permissions = -4  # every permission bit set

    def __init__(self, user_password: str, owner_password: str):
        self.owner_entry = _rc4(hashlib.md5(_pad(owner_password)).digest()[:5], _pad(user_password))
        p_bytes = self.permissions.to_bytes(4, "little", signed=True)
        self.file_key = hashlib.md5(_pad(user_password) + self.owner_entry + p_bytes + _FILE_ID).digest()[:5]
        self.user_entry = _rc4(self.file_key, _PASSWORD_PAD)

    def encrypt(self, obj_num: int, data: bytes) -> bytes:
        key = hashlib.md5(self.file_key + obj_num.to_bytes(3, "little") + b"\x00\x00").digest()[:10]
        return _rc4(key, data)

    def dictionary(self) -> bytes:
        return b"<< /Filter /Standard /V 1 /R 2 /Length 40 /P %d /O <%s> /U <%s> >>" % (
            self.permissions,
            self.owner_entry.hex().encode(),
            self.user_entry.hex().encode(),
        )


def build_pdf(
    pages: list[SyntheticPage],
    user_password: str | None = None,
    compress: bool = True,
) -> bytes:
    """Serialise `pages` to PDF bytes; with `user_password` the file is encrypted and needs it to open."""
    security = _Rc4Security(user_password, user_password + "-owner") if user_password else None
    objects: dict[int, bytes] = {}
    streams: dict[int, tuple[bytes, bytes]] = {}  # obj_num -> (dictionary entries, data)
    font_num, pages_num = 3, 2
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[font_num] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    next_num = 4
    kids = []
    for page in pages:
        page_num, content_num = next_num, next_num + 1
        next_num += 2
        resources = b"/Font << /F1 %d 0 R >>" % font_num
        if page.image is not None:
            width, height, colour = _jpeg_info(page.image)
            image_num = next_num
            next_num += 1
            entries = (
                b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s"
                b" /BitsPerComponent 8 /Filter /DCTDecode" % (width, height, colour.encode())
            )
            streams[image_num] = (entries, page.image)
            resources += b" /XObject << /Im1 %d 0 R >>" % image_num
        content = _content(page)
        streams[content_num] = (b"/Filter /FlateDecode", zlib.compress(content)) if compress else (b"", content)
        objects[page_num] = (
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %.3f %.3f] /Rotate %d"
            b" /Resources << %s >> /Contents %d 0 R >>"
            % (pages_num, page.width, page.height, page.rotate, resources, content_num)
        )
        kids.append(page_num)
    objects[pages_num] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    for num, (entries, data) in streams.items():
        payload = security.encrypt(num, data) if security else data
        objects[num] = b"<< %s /Length %d >>\nstream\n" % (entries, len(payload)) + payload + b"\nendstream"
    encrypt_num = None
    if security:
        encrypt_num = next_num
        objects[encrypt_num] = security.dictionary()
        next_num += 1

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % next_num
    for num in range(1, next_num):
        out += b"%010d 00000 n \n" % offsets[num]
    trailer = b"/Size %d /Root 1 0 R /ID [<%s> <%s>]" % (next_num, _FILE_ID.hex().encode(), _FILE_ID.hex().encode())
    if encrypt_num:
        trailer += b" /Encrypt %d 0 R" % encrypt_num
    out += b"trailer\n<< " + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def text_image_with_boxes(
    lines: list[str], font_size: int = 32, margin: int = 40, mode: str = "L"
) -> tuple[Image.Image, list[tuple[float, float, float, float]]]:
    """Black text on white, as a scanned page would look, and each line's `[x, y, w, h]` page fraction."""
    font = ImageFont.load_default(size=font_size)
    step = int(font_size * LINE_SPACING)
    width = max(int(font.getlength(line)) for line in lines) + 2 * margin
    image = Image.new(mode, (width, len(lines) * step + 2 * margin), "white")
    draw = ImageDraw.Draw(image)
    boxes = []
    for line_no, line in enumerate(lines):
        origin = (margin, margin + line_no * step)
        draw.text(origin, line, fill="black", font=font)
        x0, y0, x1, y1 = draw.textbbox(origin, line, font=font)
        boxes.append((x0 / image.width, y0 / image.height, (x1 - x0) / image.width, (y1 - y0) / image.height))
    return image, boxes


def text_image(lines: list[str], font_size: int = 32, margin: int = 40, mode: str = "L") -> Image.Image:
    """Black text on white, as a scanned page would look (used for pages with no text layer)."""
    return text_image_with_boxes(lines, font_size, margin, mode)[0]


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def scanned_page(lines: list[str], width: float = 612.0, height: float = 792.0, font_size: int = 32) -> SyntheticPage:
    """A page whose only content is an image of `lines` (no text layer): the OCR case."""
    image = text_image(lines, font_size)
    scale = min(width / image.width, height / image.height)
    w, h = image.width * scale, image.height * scale
    return SyntheticPage(width, height, image=jpeg_bytes(image), image_box=(0.0, height - h, w, h))
