"""Generated OBELICS-format partitions for pipeline tests."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PROSE = [
    "The function returns a new list containing the items of the sequence in sorted order.",
    "A module is a file containing definitions and statements that other programs may import.",
    "Exceptions are raised when an error occurs and they can be handled by a try statement.",
    "The interpreter reads the whole program before executing any of its statements.",
]
BLOCKED = "blocked.example"


def _row(texts: list[str], urls: list[str], page: str) -> dict:
    """Text, image, text, image, ... with one image URL after each text."""
    row_texts, images, metadata = [], [], []
    for text, url in zip(texts, urls):
        row_texts += [text, None]
        images += [None, url]
        metadata += [None, {"src": url}]
    return {"texts": row_texts, "images": images, "metadata": json.dumps(metadata), "general_metadata": json.dumps({"url": page})}


def write_partitions(root: Path, partitions: int = 3, docs: int = 20, seed: int = 0) -> dict:
    """Write parquet partitions; return how many rows of each kind went in."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    facts = {"input": 0, "malformed": 0, "optout_doc": 0, "optout_image": 0}
    for p in range(partitions):
        rows = []
        for n in range(docs):
            if n % 5 == 4:
                text = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(25))
            else:
                text = " ".join(rng.sample(PROSE, 3))
            page = f"https://site.example/{p}/{n}"
            if n % 7 == 3:  # its only image is blocked: the document goes
                rows.append(_row([text], [f"https://{BLOCKED}/{p}/{n}.jpg"], page))
                facts["optout_doc"] += 1
            elif n % 7 == 5:  # one of two images is blocked: the image goes, the texts merge
                rows.append(_row([text, "More text."], [f"https://{BLOCKED}/{p}/{n}.jpg", f"https://img.example/{p}/{n}.jpg"], page))
                facts["optout_image"] += 1
            else:
                rows.append(_row([text, "More text."], [f"https://img.example/{p}/{n}a.jpg", f"https://img.example/{p}/{n}b.jpg"], page))
        rows.append({"texts": ["x"], "images": [None, None], "metadata": "[]", "general_metadata": "{}"})
        facts["malformed"] += 1
        facts["input"] += len(rows)
        pq.write_table(pa.Table.from_pylist(rows), root / f"part-{p}.parquet")
    return facts
