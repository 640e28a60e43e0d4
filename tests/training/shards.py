"""Tiny shards of every kind the curate steps write, built with the curation writers themselves."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
from PIL import Image

from cauldron.sft_shards import row_to_sample
from curation.documents import ImageRef, InterleavedDocument
from curation.interleaved_format import document_to_sample
from curation.pairs.pair import Pair
from curation.pairs.samples import pair_sample
from curation.pdf.pages import PageSample
from curation.shards import PartitionShardWriter
from examples.assets import english_paragraphs

COLOURS = ["red", "green", "blue", "yellow"]
RGB = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def png(colour: str, size: tuple[int, int] = (40, 30), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(RGB[colour])[None, None] + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_interleaved(out: Path, docs: int = 12, shards: int = 2, seed: int = 0) -> Path:
    rng = random.Random(seed)
    prose = english_paragraphs()
    for shard in range(shards):
        writer = PartitionShardWriter(out, f"part-{shard:05d}", samples_per_shard=docs)
        for i in range(docs):
            texts: list[str | None] = []
            images: list[ImageRef | None] = []
            metadata: list[dict | None] = []
            for node in range(rng.randint(2, 4)):
                if node % 2 == 0:
                    colour = rng.choice(COLOURS)
                    url = f"https://img.example/{shard}/{i}/{node}.png"
                    images.append(png(colour, (rng.randint(20, 60), rng.randint(20, 60)), seed=i) if rng.random() < 0.7 else url)
                    texts.append(None)
                    metadata.append({"src": url})
                else:
                    texts.append(rng.choice(prose)[:300])
                    images.append(None)
                    metadata.append(None)
            writer.write(document_to_sample(InterleavedDocument(f"doc-{shard}-{i}", texts, images, metadata, {})))
        writer.close()
    return out


def write_pairs(out: Path, pairs: int = 16, seed: int = 0) -> Path:
    rng = random.Random(seed)
    writer = PartitionShardWriter(out, "pairs", samples_per_shard=pairs // 2)
    for i in range(pairs):
        colour = rng.choice(COLOURS)
        pair = Pair(f"pair-{i}", png(colour, seed=i), f"A {colour} square.", "alt", alt_text=f"A {colour} square.")
        writer.write(pair_sample(pair, image_format="png"))
    writer.close()
    return out


def write_pages(out: Path, pages: int = 6) -> Path:
    writer = PartitionShardWriter(out, "pages", samples_per_shard=pages)
    for i in range(pages):
        page = PageSample(
            f"pdf{i}",
            0,
            1,
            "file",
            "pdf",
            png("yellow", (50, 70), seed=i),
            "png",
            50,
            70,
            72.0,
            "RGB",
            f"Page {i}\nSome page text.",
            "text_layer",
        )
        writer.write(page.to_wds())
    writer.close()
    return out


def sft_rows(count: int = 16, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        colour = rng.choice(COLOURS)
        turns = [
            {"user": "What colour is the square?", "assistant": f"It is {colour}.", "source": "demo"},
            {"user": "Is it a circle?", "assistant": "No, it is a square.", "source": "demo"},
        ]
        rows.append({"images": [png(colour, seed=i)], "texts": turns[: rng.randint(1, 2)]})
    rows.append({"images": [], "texts": [{"user": "Say hello.", "assistant": "Hello.", "source": "text"}]})
    return rows


def write_sft(out: Path, count: int = 16, seed: int = 0) -> Path:
    rows = sft_rows(count, seed)
    writer = PartitionShardWriter(out, "sft", samples_per_shard=len(rows) // 2 + 1)
    for i, row in enumerate(rows):
        writer.write(row_to_sample(f"row-{i}", row))
    writer.close()
    return out


def write_text_sft(out: Path, count: int = 8) -> Path:
    """Conversations without images (the Cauldron's text-only sets)."""
    writer = PartitionShardWriter(out, "sft", samples_per_shard=count // 2)
    for i in range(count):
        turn = {"user": f"What is {i} plus {i}?", "assistant": f"It is {2 * i}.", "source": "text"}
        writer.write(row_to_sample(f"text-{i}", {"images": [], "texts": [turn]}))
    writer.close()
    return out


def write_all(root: Path) -> dict[str, Path]:
    return {
        "interleaved": write_interleaved(root / "obelics"),
        "pairs": write_pairs(root / "pairs"),
        "pdf": write_pages(root / "pdfs"),
        "sft": write_sft(root / "sft"),
        "text": write_text_sft(root / "text"),
    }
