"""The hostile-input corpus laid out as inputs of `curate pairs`, `curate obelics` and `curate pdfs`.

The corpus is crafted at test time (craft_images, craft_pdfs, craft_tars; damaged parquet, tars and JSON
in craft.py). The same layout can be built from the public test files the crafted cases were modelled
on, from a folder laid out as SOURCES.md says (`real_corpus`). Each builder returns the input root and
the inputs that are unusable as a whole (each must end the run with a line naming it, while every other
input is still processed).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.fixtures.pdf_writer import SyntheticPage, build_pdf
from tests.hostile import craft, craft_images, craft_pdfs, craft_tars

REAL_CORPUS_VARIABLE = "POTION_HOSTILE_CORPUS"
# the real tars that give no sample at all, and the few others `curate pairs` reads (each tar is a partition)
REAL_UNUSABLE_TARS = ("neg-size", "issue10968", "issue11169", "issue12435", "writer-big", "writer-big-long")
REAL_PAIRS_TARS = REAL_UNUSABLE_TARS + ("gnu-not-utf8", "hardlink", "sparse-formats", "pax-bad-hdr-file")
IMAGE_EXTS = ("jpg", "png", "gif", "tif", "tiff")
ODD_KEY = "caf\udce9-latin1-name"  # written as raw non-UTF-8 bytes
LONG_KEY = "k" * 150


@dataclass(frozen=True)
class NamedFile:
    name: str
    data: bytes

    @property
    def stem(self) -> str:
        return self.name.split(".")[0]

    @property
    def ext(self) -> str:
        return self.name.rsplit(".", 1)[-1].lower()


@dataclass(frozen=True)
class Corpus:
    """The images, PDFs and tars one run goes over. `unusable_tars` (by stem) give no sample at all;
    `pairs_tars` are those `curate pairs` reads."""

    kind: str  # crafted | real
    images: tuple[NamedFile, ...]
    pdfs: tuple[NamedFile, ...]
    tars: tuple[NamedFile, ...]
    unusable_tars: tuple[str, ...]
    pairs_tars: tuple[str, ...]


def crafted_corpus() -> Corpus:
    tars = craft_tars.cases()
    unusable = tuple(c.name.split(".")[0] for c in tars if c.unusable)
    return Corpus(
        "crafted",
        images=tuple(NamedFile(c.name, c.data) for c in craft_images.cases()),
        pdfs=tuple(NamedFile(c.name, c.data) for c in craft_pdfs.cases()),
        tars=tuple(NamedFile(c.name, c.data) for c in tars),
        unusable_tars=unusable,
        pairs_tars=tuple(c.name.split(".")[0] for c in tars if c.name.endswith(".tar")),  # pairs reads no .tar.gz
    )


def real_corpus(folder: Path) -> Corpus:
    """The public test files of SOURCES.md, from `folder` with its images/, pdfs/ and tars/."""

    def files(sub: str) -> tuple[NamedFile, ...]:
        return tuple(NamedFile(p.name, p.read_bytes()) for p in sorted((folder / sub).iterdir()))

    return Corpus("real", files("images"), files("pdfs"), files("tars"), REAL_UNUSABLE_TARS, REAL_PAIRS_TARS)


def real_corpus_folder() -> Path | None:
    folder = os.environ.get(REAL_CORPUS_VARIABLE)
    return Path(folder) if folder else None


def image_samples(corpus: Corpus) -> dict[str, craft.Sample]:
    """One pair-like sample per image (whatever its format, under an image extension)."""
    samples = {}
    for index, image in enumerate(corpus.images):
        samples[f"img{index:02d}"] = {
            image.ext if image.ext in IMAGE_EXTS else "png": image.data,
            "txt": f"a picture from {image.name}".encode(),
            "json": json.dumps({"url": f"https://img.example/{image.name}"}).encode(),
        }
    return samples


def odd_samples() -> dict[str, craft.Sample]:
    ok = craft.jpeg(1)
    return {
        "cmyk": {"jpg": craft.jpeg(2, mode="CMYK"), "txt": b"a CMYK jpeg"},
        "deep": {"jpg": ok, "txt": b"deep json", "json": craft.deep_json()},
        "surrogate": {"jpg": ok, "txt": b"lone surrogate", "json": craft.surrogate_json()},
        LONG_KEY: {"jpg": craft.jpeg(3), "txt": b"a key over 100 characters"},
        ODD_KEY: {"jpg": craft.jpeg(4), "txt": b"a non-UTF-8 member name"},
        "noimage": {"txt": b"no image member"},
        "img00#again": {"jpg": craft.jpeg(5), "txt": b"the key of an earlier sample, again"},
    }


def _write_tars(target: Path, tars: tuple[NamedFile, ...], stems: tuple[str, ...] | None = None) -> None:
    """The corpus tars (those named by stem, or all) into `target`."""
    target.mkdir(parents=True)
    for tar in tars:
        if stems is None or tar.stem in stems:
            (target / tar.name).write_bytes(tar.data)


def _damaged_tars(root: Path, corpus: Corpus) -> None:
    few = dict(list(image_samples(corpus).items())[:4])
    craft.truncated_in_header(root / "truncated.tar", few, member=7)
    craft.bad_checksum_midway(root / "checksum.tar", few, member=6)
    craft.absurd_size(root / "absurd.tar", few)
    craft.appended_archive(root / "appended.tar", dict(list(few.items())[:2]), dict(list(few.items())[2:]))


def pairs_inputs(root: Path, corpus: Corpus) -> list[str]:
    root.mkdir(parents=True)
    craft.write_tar(root / "images.tar", image_samples(corpus) | odd_samples())
    _damaged_tars(root, corpus)
    _write_tars(root / "tars", corpus.tars, corpus.pairs_tars)
    rows = [{"image": f.data, "TEXT": f"alt {f.name}", "top_caption": f"caption {i}"} for i, f in enumerate(corpus.images[:6])]
    pq.write_table(pa.Table.from_pylist(rows), root / "bytes.parquet")
    craft.parquet_with_bad_row_group(root / "bad-row-group.parquet", rows, row_group_size=2, bad_group=1)
    pq.write_table(pa.table({"image": ["not bytes", "still not"], "TEXT": [["a list"], ["b"]]}), root / "wrong-types.parquet")
    pq.write_table(pa.table({"image": pa.array([], pa.binary()), "TEXT": pa.array([], pa.string())}), root / "no-rows.parquet")
    (root / "zero.parquet").write_bytes(b"")
    (root / "garbage.parquet").write_bytes(b"PAR1" + b"\x00garbage" * 50)
    return ["zero", "garbage"] + [f"tars_{stem}" for stem in corpus.unusable_tars]


def _doc(text: str, image: object, **extra: object) -> dict:
    return {
        "texts": [text, None],
        "images": [None, image],
        "metadata": json.dumps([None, {"src": "https://img.example/x.jpg"}]),
        "general_metadata": json.dumps({"url": f"https://page.example/{text}"}),
        **extra,
    }


def obelics_inputs(root: Path, corpus: Corpus) -> list[str]:
    root.mkdir(parents=True)
    prose = "The function returns a new list containing the items of the sequence in sorted order."
    rows = [_doc(f"{prose} {f.name}", f.data, id=f"doc-{f.name}") for f in corpus.images]
    image = craft.jpeg(6)
    rows += [
        _doc(prose, craft.jpeg(2, mode="CMYK"), id="cmyk"),
        {**_doc(prose, image, id="deep"), "metadata": craft.deep_json().decode()},
        {**_doc(prose, image, id="surrogate"), "general_metadata": craft.surrogate_json("url").decode()},
        _doc(prose, image, id="L" * 300),
        _doc(prose, image, id="same.key"),
        _doc(prose, image, id="same_key"),  # a different id with the same safe key
        _doc(prose, image, id="doc-again"),
        _doc(prose, image, id="doc-again"),
        {**_doc(prose, image, id="nodes"), "texts": [prose, "both"]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), root / "docs.parquet")
    craft.parquet_with_bad_row_group(root / "bad-row-group.parquet", rows[:6], row_group_size=2, bad_group=2)
    pq.write_table(pa.table({"texts": ["a string", "not a list"], "images": [1, 2]}), root / "wrong-types.parquet")
    pq.write_table(pa.table({"foo": [1, 2, 3]}), root / "wrong-columns.parquet")
    url_docs = pa.Table.from_pylist([_doc(f"{prose} {i}", f"https://img.example/{i}.jpg", id=f"url-{i}") for i in range(8)])
    stream = pa.BufferOutputStream()
    with pa.ipc.new_stream(stream, url_docs.schema) as writer:
        for batch in url_docs.to_batches(max_chunksize=2):
            writer.write_batch(batch)
    craft.truncated_file(root / "truncated.arrow", stream.getvalue().to_pybytes(), keep=0.7)
    pq.write_table(pa.Table.from_pylist(rows[:1]).slice(0, 0), root / "no-rows.parquet")
    (root / "zero.parquet").write_bytes(b"")
    (root / "garbage.arrow").write_bytes(b"ARROW1" + b"\xff" * 300)
    return ["zero", "garbage"]


def pdfs_inputs(root: Path, corpus: Corpus) -> list[str]:
    loose = root / "loose"
    loose.mkdir(parents=True)
    for pdf in corpus.pdfs:
        (loose / pdf.name).write_bytes(pdf.data)
    good = build_pdf([SyntheticPage(lines=["A good page"]), SyntheticPage(lines=["Another page"])])
    (loose / "good.pdf").write_bytes(good)
    craft.truncated_file(loose / "truncated.pdf", good, keep=0.5)
    (loose / "empty.pdf").write_bytes(b"")
    shards = root / "shards"
    shards.mkdir()
    samples: dict[str, craft.Sample] = {
        "good": {"pdf": good},
        "deep-ocr": {"pdf": good, "json": craft.deep_json()},
        "surrogate-ocr": {
            "pdf": good,
            "json": json.dumps({"pages": [{"lines": {"text": ["x"], "bbox": [[0, 0, 1, 1]]}}]}).replace('"x"', '"\\udc80"').encode(),
        },
        LONG_KEY: {"pdf": good},
        ODD_KEY: {"pdf": good},
        "nothing": {"txt": b"no document member"},
        "good#again": {"pdf": good},
    }
    for index, image in enumerate(corpus.images):
        samples[f"page{index:02d}"] = {"tif" if image.ext.startswith("tif") else "png": image.data, "txt": f"text of {image.name}".encode()}
    craft.write_tar(shards / "docs.tar", samples)
    _damaged_tars(shards, corpus)
    craft.gzip_truncated(shards / "gz-truncated.tar", dict(list(samples.items())[:3]))
    _write_tars(shards / "tars", corpus.tars)
    (shards / "not-a-tar.tar").write_bytes(b"%PDF-1.4 this is not a tar\n" * 30)
    return ["not-a-tar"] + [f"tars_{stem}" for stem in corpus.unusable_tars]
