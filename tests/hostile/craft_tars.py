"""Crafted hostile tars: the header classes of a tar reader's test data (bad checksums, GNU long names
and links, pax records good, bad and huge, sparse members, negative and huge sizes, base-256 numbers,
header-only members, truncated and garbage headers), written block by block (see SOURCES.md).

Headers are built field by field rather than with tarfile, which refuses to write most of these. Every
case is a few KB and seeded. `unusable` marks a tar that gives no sample before its damage, so the
whole input must fail with a line naming it; the others are read up to their damage, if any.
"""

from __future__ import annotations

import gzip
import tarfile
from dataclasses import dataclass
from functools import cache

import numpy as np

from tests.hostile.craft import jpeg

BLOCK = tarfile.BLOCKSIZE
USTAR = b"ustar\x0000"
GNU = b"ustar  \x00"
# field: (offset, width) in a ustar header; the GNU fields overlay ustar's prefix
FIELDS = {
    "name": (0, 100),
    "mode": (100, 8),
    "uid": (108, 8),
    "gid": (116, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "chksum": (148, 8),
    "type": (156, 1),
    "linkname": (157, 100),
    "magic": (257, 8),
    "uname": (265, 32),
    "gname": (297, 32),
    "devmajor": (329, 8),
    "devminor": (337, 8),
    "prefix": (345, 155),
    "gnu_atime": (345, 12),
    "gnu_ctime": (357, 12),
    "gnu_sparse": (386, 96),
    "gnu_extended": (482, 1),
    "gnu_realsize": (483, 12),
}


@dataclass(frozen=True)
class TarCase:
    name: str  # a file name; `.tar.gz` for the compressed ones
    defect: str
    data: bytes
    unusable: bool = False


def octal(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def base256(value: int, width: int) -> bytes:
    """GNU's binary number: big-endian two's complement with the top bit set (0x80 positive, 0xff negative)."""
    raw = (value % (1 << (8 * width))).to_bytes(width, "big")
    return bytes([raw[0] | 0x80]) + raw[1:]


def header(name: bytes, size: int | bytes = 0, kind: bytes = b"0", checksum: bytes | None = None, **fields: bytes) -> bytes:
    """One 512-byte header; numbers not given are zero, the checksum is right unless given."""
    values = {
        "name": name,
        "mode": octal(0o644, 8),
        "uid": octal(0, 8),
        "gid": octal(0, 8),
        "mtime": octal(0, 12),
        "size": size if isinstance(size, bytes) else octal(size, 12),
        "type": kind,
        "magic": USTAR,
        **fields,
    }
    block = bytearray(BLOCK)
    for field, value in values.items():
        at, width = FIELDS[field]
        if len(value) > width:
            raise ValueError(f"{field} takes {width} bytes, not {len(value)}")
        block[at : at + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = checksum if checksum is not None else b"%06o\x00 " % sum(block)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % BLOCK)


def member(name: bytes, data: bytes, kind: bytes = b"0", **fields: bytes) -> bytes:
    return header(name, len(data), kind, **fields) + padded(data)


def pax_records(records: list[tuple[bytes, bytes]]) -> bytes:
    """pax extended header records, each `<length> <key>=<value>\\n` with its own length counted."""
    out = b""
    for key, value in records:
        body = b" %s=%s\n" % (key, value)
        length = len(body) + 1
        while len(str(length)) + len(body) != length:  # the length counts its own digits
            length = len(str(length)) + len(body)
        out += str(length).encode() + body
    return out


def pax(records: bytes, name: bytes = b"PaxHeaders/x") -> bytes:
    return member(name, records, b"x")


def gnu_long(kind: bytes, value: bytes) -> bytes:
    """A GNU `L` (long name) or `K` (long link target) member carrying the next header's name."""
    return member(b"././@LongLink", value + b"\x00", kind, magic=GNU)


END = b"\x00" * (2 * BLOCK)


def sample(key: bytes, seed: int) -> bytes:
    """A two-member WebDataset sample: an image and its caption."""
    return member(key + b".jpg", jpeg(seed)) + member(key + b".txt", b"a caption for " + key)


def one_key_many_members(key: bytes, count: int, size: int) -> bytes:
    """`count` members of `size` bytes under one key, each its own extension: one sample as large as the tar."""
    return b"".join(member(b"%s.%d.bin" % (key, i), bytes([i % 256]) * size) for i in range(count))


def sparse_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """Up to four (offset, numbytes) slots of a GNU sparse header, each number 12 bytes."""
    return b"".join(offset + size for offset, size in pairs)


def sparse_formats() -> bytes:
    """The same 1 KiB image-sized hole-y member in GNU (old), pax 0.1 and pax 1.0 sparse form."""
    data = b"\xab" * 512
    gnu = (
        header(
            b"sparse-gnu.jpg",
            len(data),
            b"S",
            magic=GNU,
            gnu_sparse=sparse_map([(octal(512, 12), octal(512, 12))]),
            gnu_realsize=octal(1024, 12),
        )
        + data
    )
    pax01 = pax(
        pax_records(
            [
                (b"GNU.sparse.size", b"1024"),
                (b"GNU.sparse.numblocks", b"1"),
                (b"GNU.sparse.map", b"512,512"),
                (b"GNU.sparse.name", b"sparse-pax01.jpg"),
            ]
        )
    ) + member(b"GNUSparseFile.0/sparse-pax01.jpg", data)
    sparse_map_block = padded(b"1\n512\n512\n")
    pax10 = pax(
        pax_records(
            [
                (b"GNU.sparse.major", b"1"),
                (b"GNU.sparse.minor", b"0"),
                (b"GNU.sparse.name", b"sparse-pax10.jpg"),
                (b"GNU.sparse.realsize", b"1024"),
            ]
        )
    ) + member(b"GNUSparseFile.0/sparse-pax10.jpg", sparse_map_block + data)
    return gnu + pax01 + pax10 + sample(b"after-sparse", 40) + END


def header_only_members() -> bytes:
    """Directory, fifo, devices and links whose headers declare 5 bytes of data that are not there (no
    data follows such members), then a sample that must still be read."""
    kinds = [(b"dir/", b"5"), (b"fifo", b"6"), (b"null", b"3"), (b"sda", b"4"), (b"symlink.jpg", b"2"), (b"hard.jpg", b"1")]
    headers = b"".join(header(name, 5, kind, linkname=b"dir/missing.jpg" if kind in (b"1", b"2") else b"") for name, kind in kinds)
    return headers + sample(b"after-specials", 41) + END


def gnu_times_as_prefix(atime: bytes, ctime: bytes, seed: int) -> bytes:
    """A GNU header whose atime and ctime fields hold text: tarfile reads them as a ustar name prefix."""
    image = jpeg(seed)
    return header(b"a" * 96 + b".jpg", len(image), b"\x00", magic=GNU, gnu_atime=atime, gnu_ctime=ctime) + padded(image) + END


def damaged_after(tail: bytes, seed: int) -> bytes:
    """Two good samples, then `tail`: the first is read, the second is lost with the damage after it
    (a reader cannot know that a sample is complete until the next one starts)."""
    return sample(b"first", seed) + sample(b"second", seed + 100) + tail


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _unusable_cases() -> list[TarCase]:
    big = base256(16 << 30, 12)
    rng = np.random.default_rng(50)
    garbage = bytearray(rng.bytes(BLOCK))
    garbage[148:156] = b" " * 8
    garbage[148:156] = b"%06o\x00 " % sum(garbage)  # a valid checksum over random fields
    records = b"30 00000=0000000000000000000000\n" * 3  # each record says 30 bytes and holds 32
    return [
        TarCase("neg-size.tar", "first header with a negative base-256 size", header(b"neg.jpg", base256(-1, 12)) + END, True),
        TarCase(
            "bad-checksum.tar",
            "first header's checksum wrong",
            header(b"a.jpg", 16, checksum=b"0000000\x00") + padded(b"x" * 16) + END,
            True,
        ),
        TarCase("garbage-header.tar", "512 random bytes with a valid checksum", bytes(garbage) + END, True),
        TarCase(
            "base256-fields.tar",
            "base-256 mode, uid and gid of -255 and a checksum field of zeros",
            header(b"b.jpg", 0, mode=base256(-255, 8), uid=base256(-255, 8), gid=base256(-255, 8), checksum=b"00000000"),
            True,
        ),
        TarCase(
            "pax-bad-records.tar",
            "pax records whose lengths do not match, data cut short",
            (header(b"PaxHeaders/aaa", len(records) + 100, b"x") + records)[: BLOCK + 90],
            True,
        ),
        TarCase("big.tar", "a 16 GiB member declared in base 256, its header only", header(b"tmp/16gig.jpg", big), True),
        TarCase(
            "big-long-name.tar",
            "the same behind a GNU long name",
            gnu_long(b"L", b"longname/" * 16 + b"16gig.jpg") + header(b"longname", big, magic=GNU),
            True,
        ),
        TarCase("truncated-header.tar", "first header cut at 300 bytes", header(b"c.jpg", 16)[:300], True),
        TarCase(
            "gnu-prefix-traversal.tar",
            "GNU header whose time fields read as the name prefix `../../../../etc`",
            gnu_times_as_prefix(b"../../../../", b"etc", 54),
            True,
        ),
        TarCase(
            "pax-huge-header.tar",
            "a pax header declaring 1 TiB of records",
            header(b"PaxHeaders/huge", base256(1 << 40, 12), b"x") + padded(pax_records([(b"path", b"huge.jpg")])),
            True,
        ),
    ]


def _readable_cases() -> list[TarCase]:
    latin1 = sample(b"file-with-umlaut-\xe4", 42)
    short_eof = sample(b"short-eof", 43)
    big_map = sparse_map([(base256(10**10, 12), octal(0, 12)), (base256(6 * 10**10 - 512, 12), octal(512, 12))])
    sparse_01 = pax_records(
        [(b"GNU.sparse.size", b"1024"), (b"GNU.sparse.numblocks", b"1"), (b"GNU.sparse.map", b"5x,7"), (b"GNU.sparse.name", b"m.jpg")]
    )
    sparse_10 = pax_records(
        [(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.name", b"s.jpg"), (b"GNU.sparse.realsize", b"1024")]
    )
    return [
        TarCase("gnu-not-utf8.tar", "GNU header, member name not UTF-8", member(b"hi\x80\x81\x82\x83bye.jpg", jpeg(44), magic=GNU) + END),
        TarCase(
            "gnu-long-names.tar",
            "GNU long name (L) for a 300-byte key, long link target (K) for a symlink",
            gnu_long(b"L", b"n" * 300 + b".jpg")
            + member(b"n" * 100, jpeg(45), magic=GNU)
            + gnu_long(b"K", b"t" * 200 + b".jpg")
            + header(b"link.jpg", 0, b"2", magic=GNU, linkname=b"t" * 100)
            + END,
        ),
        TarCase(
            "hardlink.tar",
            "a sample, then a hard link to its image",
            sample(b"file", 46) + header(b"hard.jpg", 0, b"1", linkname=b"file.jpg") + END,
        ),
        TarCase("sparse-formats.tar", "sparse members in GNU, pax 0.1 and pax 1.0 form", sparse_formats()),
        TarCase("header-only.tar", "directory, fifo, device and link headers declaring data that is not there", header_only_members()),
        TarCase(
            "pax-nul-path.tar",
            "NUL byte inside a pax path",
            pax(pax_records([(b"path", b"nul\x00inside.jpg")])) + member(b"placeholder.jpg", jpeg(47)) + END,
        ),
        TarCase(
            "gnu-sparse-big.tar",
            "GNU sparse member of 60 GB, offsets in base 256",
            header(b"gnu-sparse.jpg", octal(0, 12), b"S", magic=GNU, gnu_realsize=base256(6 * 10**10, 12), gnu_sparse=big_map)
            + b"\x00" * BLOCK
            + END,
        ),
        TarCase(
            "gnu-prefix-in-times.tar",
            "a full 100-byte name and typeflag NUL under GNU magic, text in the time fields (read as a ustar prefix)",
            gnu_times_as_prefix(b"in-the-atime", b"/and-ctime", 48),
        ),
        TarCase(
            "trailing-slash.tar",
            "pax path of a long directory name ending in a slash",
            pax(pax_records([(b"path", b"123456789/" * 20)]))
            + header(b"123456789/" * 9 + b"12345678/", 0, b"5")
            + sample(b"in-dir", 49)
            + END,
        ),
        TarCase(
            "pax-bad-hdr.tar",
            "a sample, then a pax header Go rejects (record length past its data), no end marker",
            sample(b"before-pax", 51) + pax(b"99 path=bad.jpg\n") + member(b"bad.jpg", jpeg(52)),
        ),
        TarCase(
            "trailing-garbage.tar",
            "a sample, the end-of-archive marker, then random bytes",
            sample(b"before-garbage", 53) + END + np.random.default_rng(53).bytes(700),
        ),
        TarCase(
            "neg-size-loop.tar",
            "two samples, then a header of size -512 (Python's tarfile re-reads it forever)",
            damaged_after(header(b"loop.jpg", base256(-512, 12)) + END, 55),
        ),
        TarCase(
            "sparse-map-garbage.tar",
            "two samples, then a pax 0.1 sparse map that is not numbers",
            damaged_after(pax(sparse_01) + member(b"m", b"x" * 20), 56),
        ),
        TarCase(
            "sparse-map-short.tar",
            "two samples, then a pax 1.0 sparse map announcing a million entries, holding one",
            damaged_after(pax(sparse_10) + member(b"s", padded(b"1000000\n1\n")), 57),
        ),
        TarCase(
            "sparse-extended-run.tar",
            "two samples, then GNU sparse extension blocks running past the end of the file",
            damaged_after(
                header(b"e.jpg", octal(0, 12), b"S", magic=GNU, gnu_realsize=octal(10, 12), gnu_extended=b"\x01")
                + (b"\x00" * 504 + b"\x01" + b"\x00" * 7) * 3,
                58,
            ),
        ),
        TarCase(
            "long-name-negative.tar",
            "two samples, then a GNU long name of size -1024",
            damaged_after(header(b"././@LongLink", base256(-1024, 12), b"L", magic=GNU) + member(b"q.jpg", b"x") + END, 59),
        ),
        TarCase("latin1.tar.gz", "gzip tar, member names in latin-1", gzipped(latin1 + END)),
        TarCase("short-eof.tar.gz", "gzip tar with one zero block of the two that end an archive", gzipped(short_eof + b"\x00" * BLOCK)),
    ]


@cache
def cases() -> tuple[TarCase, ...]:
    return tuple(_unusable_cases() + _readable_cases())
