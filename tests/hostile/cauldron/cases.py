"""The hostile corpus of `cauldron build`: crafted damaged, truncated, wrongly typed and odd inputs.

Each folder of `corpus/` is one source (its adapter in `SOURCES`); `python -m tests.hostile.cauldron.cases`
rebuilds the corpus byte for byte. What every case must do is in `EXPECTED` (test_cauldron_hostile.py
checks it); see SOURCES.md for where each file comes from.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from cauldron.schema import CAULDRON_ARROW_SCHEMA

CORPUS = Path(__file__).with_name("corpus")
# PIL modes as the formats that store them (LAB: CIELAB TIFF, the mode that broke eval dedup)
MODES = (
    ("1", "PNG"),
    ("L", "PNG"),
    ("P", "PNG"),
    ("LA", "PNG"),
    ("RGB", "PNG"),
    ("RGBA", "PNG"),
    ("I;16", "PNG"),
    ("CMYK", "TIFF"),
    ("YCbCr", "TIFF"),
    ("LAB", "TIFF"),
    ("I", "TIFF"),
    ("F", "TIFF"),
    ("PA", "TIFF"),
    ("CMYK", "JPEG"),
    ("L", "WEBP"),
)
SOURCES = {  # folder -> adapter
    "modes": "cauldron",
    "truncated_parquet": "cauldron",
    "empty_parquet": "cauldron",
    "damaged_row_group": "orca_math",
    "jsonl_damaged": "dolly",
    "json_truncated": "metamathqa",
    "zip_damaged": "camel_ai_math",
    "zip_truncated": "camel_ai_math",
    "tar_broken_header": "dolly",
    "wrong_types": "vqav2",
    "nlvr2_int_labels": "nlvr2",
    "long_names": "dolly",
}
UNUSABLE = ("truncated_parquet", "empty_parquet", "zip_truncated")  # whole files that cannot be opened


def _encoded(mode: str, fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), "RGB").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def mode_image(mode: str, fmt: str) -> bytes:
    return _encoded(mode, fmt, seed=MODES.index((mode, fmt)))  # a different picture for every case


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height pixels (a decompression bomb's header, without the bomb)."""
    data = bytearray(_encoded("L", "PNG", 0))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def cauldron_row(images: list, text: str) -> dict:
    return {"images": images, "texts": [{"user": f"What is {text}?", "assistant": f"It is {text}.", "source": "hostile"}]}


def _parquet(path: Path, rows: list[dict], schema: pa.Schema | None = None, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, **options)


def _jsonl(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(path: Path, members: list[tuple[str, str]]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, text in members:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), text)
    return path.read_bytes()


def dolly(i: int) -> bytes:
    return json.dumps({"instruction": f"Say {i}.", "context": "", "response": f"{i}", "category": "open_qa"}).encode() + b"\n"


def build(root: Path) -> None:
    modes = [cauldron_row([{"bytes": mode_image(mode, fmt), "path": None}], f"{mode} {fmt}") for mode, fmt in MODES]
    modes += [
        cauldron_row([{"bytes": None, "path": "images/not_there.png"}], "a path without bytes"),
        cauldron_row([{"bytes": b"\xff\xd8\xff\xe0" + bytes(range(256)), "path": None}], "a broken JPEG"),
        cauldron_row([{"bytes": png_claiming(100_000, 100_000), "path": None}], "a pixel bomb"),
        cauldron_row([{"bytes": b"", "path": None}], "zero bytes"),
    ]
    _parquet(root / "modes" / "train.parquet", modes, CAULDRON_ARROW_SCHEMA)
    (root / "evals").mkdir(parents=True, exist_ok=True)
    (root / "evals" / "lab.tif").write_bytes(mode_image("LAB", "TIFF"))  # eval dedup on a CIELAB image
    (root / "evals" / "cmyk.jpg").write_bytes(mode_image("CMYK", "JPEG"))

    _parquet(root / "truncated_parquet" / "train.parquet", modes[:3], CAULDRON_ARROW_SCHEMA)
    whole = (root / "truncated_parquet" / "train.parquet").read_bytes()
    (root / "truncated_parquet" / "train.parquet").write_bytes(whole[: len(whole) // 2])
    (root / "empty_parquet").mkdir(parents=True, exist_ok=True)
    (root / "empty_parquet" / "train.parquet").write_bytes(b"")

    path = root / "damaged_row_group" / "train.parquet"
    _parquet(
        path,
        [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(40)],
        row_group_size=20,
        compression="snappy",
        use_dictionary=False,
    )
    column = pq.ParquetFile(path).metadata.row_group(1).column(0)
    raw = bytearray(path.read_bytes())
    start, size = column.data_page_offset + 30, column.total_compressed_size - 40
    raw[start : start + size] = b"\x07" * size
    path.write_bytes(bytes(raw))

    _jsonl(
        root / "jsonl_damaged" / "train.jsonl",
        [
            dolly(0),
            b'{"instruction": "unclosed\n',
            b'{"instruction": "\xff\xfe", "response": "x"}\n',
            b"[" * 50_000 + b"]" * 50_000 + b"\n",
            b'"a string, not an object"\n',
            dolly(5),
            b'{"instruction": "cut',
        ],
    )
    records = [{"query": f"What is {i}?", "response": f"It is {i}.", "type": "x", "original_question": ""} for i in range(6)]
    text = json.dumps(records).encode()
    (root / "json_truncated").mkdir(parents=True, exist_ok=True)
    (root / "json_truncated" / "MetaMathQA.json").write_bytes(text[: int(len(text) * 0.7)])

    math = [
        (
            f"{i}.json",
            json.dumps(
                {"role_1": "Assistant", "topic;": "Algebra", "sub_topic": "x", "message_1": f"Solve x = {i}.", "message_2": f"x is {i}"}
            ),
        )
        for i in range(3)
    ]
    raw_zip = _zip(root / "zip_damaged" / "math.zip", math)
    at = raw_zip.index(b"Solve x = 1.")
    (root / "zip_damaged" / "math.zip").write_bytes(raw_zip[:at] + b"Solve x = 9." + raw_zip[at + 12 :])  # CRC mismatch
    (root / "zip_truncated").mkdir(parents=True, exist_ok=True)
    (root / "zip_truncated" / "math.zip").write_bytes(raw_zip[: len(raw_zip) // 2])

    tar = bytearray(_tar([(f"part{i}.jsonl", dolly(i)) for i in range(4)]))
    tar[1024 + 148 : 1024 + 156] = b"garbage!"  # the second member's header checksum
    (root / "tar_broken_header").mkdir(parents=True, exist_ok=True)
    (root / "tar_broken_header" / "train.tar").write_bytes(bytes(tar))

    image = {"bytes": mode_image("RGB", "PNG"), "path": None}
    _jsonl(
        root / "wrong_types" / "train.jsonl",
        [
            json.dumps(line).encode() + b"\n"
            for line in (
                {"question": ["a", "list"], "answers": [{"answer": "x"}], "image": "images/x.png"},
                {"question": "What?", "answers": [{"answer": "x"}], "image": 7},
                {"question": "What?", "answers": [{"answer": 3}], "image": None},
                {"question": 12, "answers": {"answer": "a dict"}, "multiple_choice_answer": None},
            )
        ],
    )
    nlvr2 = [{"sentence": "Two dogs.", "left_image": image, "right_image": image, "label": label} for label in (0, 1)]
    _parquet(root / "nlvr2_int_labels" / "train.parquet", nlvr2)
    _jsonl(root / "long_names" / ("x" * 150 + ".jsonl"), [dolly(7)])


EXPECTED = {  # folder -> (rows kept, ledger reasons); unusable folders fail their subset instead
    "modes": (len(MODES) - 2, {"eval_exact_pixels": 2, "image_bytes_missing": 1, "decode_error": 2, "empty_image": 1}),
    "damaged_row_group": (20, {"unreadable_row_group": 20}),
    "jsonl_damaged": (2, {"bad_json": 3, "bad_record": 1, "truncated_file": 1}),
    "json_truncated": (4, {"truncated_file": 1}),
    "zip_damaged": (2, {"damaged_file": 1}),
    "tar_broken_header": (1, {"damaged_file": 1}),
    "wrong_types": (0, {"bad_value": 2, "bad_image": 1, "no_image": 1}),
    "nlvr2_int_labels": (0, {"ambiguous_label": 2}),
    "long_names": (1, {}),
}


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS)
