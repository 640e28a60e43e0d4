"""Crafted hostile PDFs: cut-off objects, loops in the page tree, the trailer chain and content streams,
cross-reference tables that lie, a linearization dictionary pointing nowhere, a broken encryption
dictionary and randomly mutated bytes (see SOURCES.md for the public test files they follow).

`assemble` writes a well-formed file from numbered objects, with a correct cross-reference table; the
cases then break exactly one thing each. Everything is seeded: every run sees the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from tests.fixtures.pdf_writer import SyntheticPage, build_pdf

HEADER = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


@dataclass(frozen=True)
class PdfCase:
    name: str
    defect: str
    data: bytes


@dataclass(frozen=True)
class Assembled:
    data: bytes
    offsets: dict[int, int]  # object number -> byte offset
    xref: int  # byte offset of the cross-reference table


def stream(body: bytes, extra: bytes = b"", length: int | None = None) -> bytes:
    declared = len(body) if length is None else length
    return b"<< /Length %d %s>>\nstream\n%s\nendstream" % (declared, extra, body)


def assemble(objects: dict[int, bytes], trailer: bytes, header: bytes = HEADER) -> Assembled:
    """`objects` written in order, then a cross-reference table with every offset right."""
    out = bytearray(header)
    offsets = {}
    for number, body in objects.items():
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    size = max(offsets) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += b"%010d 00000 n \n" % offsets[number] if number in offsets else b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size %d %s >>\nstartxref\n%d\n%%%%EOF\n" % (size, trailer, xref)
    return Assembled(bytes(out), offsets, xref)


def text_page(parent: int, contents: int, resources: bytes) -> bytes:
    return b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 200 100] /Contents %d 0 R /Resources %s >>" % (parent, contents, resources)


def _hello() -> dict[int, bytes]:
    return {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: text_page(2, 4, b"<< /Font << /F1 5 0 R >> >>"),
        4: stream(b"BT /F1 12 Tf 20 50 Td (Hello, hostile world) Tj ET"),
        5: FONT,
    }


def cut_off() -> bytes:
    """Objects that never end, no cross-reference table, a stream that declares 20000 bytes and has 30."""
    return (
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R\n2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1\n"
        b"3 0 obj\n<< /Type /Page /Contents 4 0 R\n4 0 obj\n<< /Length 20000 >>\nstream\nBT /F1 12 Tf (cut off here\n"
        b"trailer\n<< /Root 1 0 R >>\n"
    )


def page_tree_loop() -> bytes:
    """The root's kids: a page, and a Pages node whose descendants lead back to itself (3 -> 4 -> 5 -> 3)."""
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [6 0 R 3 0 R] /Count 2 /MediaBox [0 0 200 100] >>",
        3: b"<< /Type /Pages /Parent 2 0 R /Kids [4 0 R] /Count 1 >>",
        4: b"<< /Type /Pages /Parent 3 0 R /Kids [5 0 R] /Count 1 >>",
        5: b"<< /Type /Pages /Parent 4 0 R /Kids [3 0 R] /Count 1 >>",
        6: text_page(2, 7, b"<< /Font << /F1 8 0 R >> >>"),
        7: stream(b"BT /F1 12 Tf 20 50 Td (Pages loop) Tj ET"),
        8: FONT,
    }
    return assemble(objects, b"/Root 1 0 R").data


def prev_loop() -> bytes:
    """A good file plus an incremental update whose trailer's /Prev points at the update's own table."""
    base = assemble(_hello(), b"/Root 1 0 R")
    update = bytearray(base.data)
    info = len(update)
    update += b"6 0 obj\n<< /Title (updated) >>\nendobj\n"
    xref = len(update)
    update += b"xref\n0 1\n0000000000 65535 f \n6 1\n%010d 00000 n \n" % info
    update += b"trailer\n<< /Size 7 /Root 1 0 R /Info 6 0 R /Prev %d >>\nstartxref\n%d\n%%%%EOF\n" % (xref, xref)
    return bytes(update)


def duplicate_xref() -> bytes:
    """A table whose second subsection lists objects 3 and 4 again, at each other's offsets, and whose
    free head has generation 65536 (one past the maximum)."""
    good = assemble(_hello(), b"/Root 1 0 R")
    table = b"xref\n0 6\n0000000000 65536 f \n" + b"".join(b"%010d 00000 n \n" % good.offsets[n] for n in range(1, 6))
    table += b"3 2\n%010d 00000 n \n%010d 00000 n \n" % (good.offsets[4], good.offsets[3])
    return good.data[: good.xref] + table + b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % good.xref


def xref_overflow() -> bytes:
    """Cross-reference numbers past 32 and 64 bits: a subsection starting at 2**32, a 19-digit offset."""
    good = assemble(_hello(), b"/Root 1 0 R")
    table = (
        b"xref\n0 2\n0000000000 65535 f \n%010d 00000 n \n4294967296 3\n%010d 00000 n \n0007777777770000130 00000 n \n"
        b"%010d 00000 n \n" % (good.offsets[1], good.offsets[2], good.offsets[4])
    )
    return good.data[: good.xref] + table + b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % good.xref


def wrong_offsets() -> bytes:
    """Every offset in the table 7 bytes late, the content stream's /Length 10 bytes short, startxref off."""
    good = assemble({**_hello(), 4: stream(b"BT /F1 12 Tf 20 50 Td (Recover me) Tj ET", length=31)}, b"/Root 1 0 R")
    table = b"xref\n0 6\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % (good.offsets[n] + 7) for n in range(1, 6))
    return good.data[: good.xref] + table + b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (good.xref + 3)


def type3_cycle() -> bytes:
    """Type3 font A draws its glyph with font B, whose glyph draws with font A again; the page's second
    resource is a form XObject that draws itself."""
    glyph = b"1000 0 d0 0 0 750 750 re f BT /F%s 50 Tf (a) Tj ET /Loop Do"
    font = (
        b"<< /Type /Font /Subtype /Type3 /FontBBox [0 0 750 750] /FontMatrix [0.001 0 0 0.001 0 0] "
        b"/Encoding << /Type /Encoding /Differences [97 /g] >> /FirstChar 97 /LastChar 97 /Widths [1000] "
        b"/CharProcs << /g %d 0 R >> /Resources << /Font << /FA 6 0 R /FB 7 0 R >> /XObject << /Loop 10 0 R >> >> >>"
    )
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: text_page(2, 4, b"<< /Font << /FA 6 0 R >> /XObject << /Loop 10 0 R >> >>"),
        4: stream(b"BT /FA 20 Tf 20 50 Td (aa) Tj ET /Loop Do"),
        5: b"null",
        6: font % 8,
        7: font % 9,
        8: stream(glyph % b"B"),
        9: stream(glyph % b"A"),
        10: stream(
            b"0 0 m 10 10 l S /Loop Do", b"/Type /XObject /Subtype /Form /BBox [0 0 100 100] /Resources << /XObject << /Loop 10 0 R >> >> "
        ),
    }
    return assemble(objects, b"/Root 1 0 R").data


def linearized_nowhere() -> bytes:
    """A linearization dictionary and a first-page cross-reference stream whose numbers point past the
    end of the file (/L, /O, /E, /T, /H, /Prev), with a field width of 10**20 bytes."""
    first = (
        b"%PDF-1.3\n%\xe2\xe3\xcf\xd3\n7 0 obj\n<< /Linearized 1 /L 79450 /O 9 /E 35240 /N 1 /T 76560 /H [451 137] >>\nendobj\n"
        b"13 0 obj\n<< /Type /XRef /Index [7 21] /Size 28 /W [1 2 100000000000000000000] /Root 8 0 R /Prev 76570 "
        b"/Filter /FlateDecode /Length 12 >>\nstream\nx\x9c\xcb\x48\xcd\xc9\xc9\x07\x00\x06\x2c\nendstream\nendobj\n"
    )
    return first + b"startxref\n%d\n%%%%EOF\n" % (len(HEADER) + 1)


def broken_encrypt() -> bytes:
    """The trailer names an /Encrypt dictionary that is garbage ('E<' for '<<') with AES-256 filters."""
    objects = {
        **_hello(),
        6: b"E< /Filter /Standard /V 5 /R 6 /Length 256 /P -4 /O <00> /U <00> /StmF /StdCF /CF 7 0 R >>",
        7: b"<< /StdCF << /CFM /AESV3 /AuthEvent /DocOpen /Length 32 >> >>",
    }
    file_id = b"<00112233445566778899aabbccddeeff>"
    return assemble(objects, b"/Root 1 0 R /Encrypt 6 0 R /ID [%s %s]" % (file_id, file_id)).data


def mutated(data: bytes, seed: int, count: int) -> bytes:
    """`data` with `count` bytes past the header set to random values: a fuzzer's first step."""
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    for at in rng.integers(len(HEADER), len(out), count):
        out[at] = int(rng.integers(0, 256))
    return bytes(out)


@cache
def cases() -> tuple[PdfCase, ...]:
    two_pages = build_pdf([SyntheticPage(lines=["A page to mutate"]), SyntheticPage(lines=["and another"])])
    return (
        PdfCase("cut-off.pdf", "objects cut off, no cross-reference table, a stream longer than the file", cut_off()),
        PdfCase("page-tree-loop.pdf", "page tree with a reference loop", page_tree_loop()),
        PdfCase("prev-loop.pdf", "trailer /Prev pointing at its own table", prev_loop()),
        PdfCase("duplicate-xref.pdf", "objects listed twice in the table, swapped; free-list generation 65536", duplicate_xref()),
        PdfCase("xref-overflow.pdf", "table numbers past 32 and 64 bits", xref_overflow()),
        PdfCase("wrong-offsets.pdf", "every table offset, a stream /Length and startxref wrong", wrong_offsets()),
        PdfCase("type3-cycle.pdf", "Type3 glyphs drawing each other, a form XObject drawing itself", type3_cycle()),
        PdfCase("linearized-nowhere.pdf", "linearization and cross-reference stream pointing past the end", linearized_nowhere()),
        PdfCase("broken-encrypt.pdf", "an /Encrypt dictionary that does not parse", broken_encrypt()),
        PdfCase("mutated-8.pdf", "a good two-page file with 8 random bytes changed", mutated(two_pages, 3, 8)),
        PdfCase("mutated-24.pdf", "the same with 24 random bytes changed", mutated(two_pages, 1, 24)),
    )
