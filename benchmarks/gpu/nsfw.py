"""NSFW stage: JPEGs decoded on the device (nvJPEG) vs in CPU threads (before), ViT-L-14 bf16 + the NSFW head.

Both paths score the same photo-like JPEGs at web sizes (generated here, 500x375 to 1600x1200, quality 85)
with the same random-weight model and head, through `nsfw.score_pairs`, as the pipeline does. Also
measured alone: the model on prepared batches (the ceiling) and each path's decoding. Accuracy: how far
the device path's NSFW scores are from the CPU path's (the two decode differently: full size vs reduced
DCT scale, torch vs PIL resampling).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.nsfw_throughput import make_images, random_head
from curation.images import DEFAULT_MAX_PIXELS
from curation.pairs.clip_embedder import ClipConfig, ClipImageEmbedder
from curation.pairs.model_input import prepare_encoded
from curation.pairs.nsfw import ClipNsfwClassifier, score_pairs
from curation.pairs.pair import Pair

GOAL_IMAGES_PER_S = 3000
WEB_SIZES = [(500, 375), (640, 480), (800, 600), (1024, 768), (1280, 960), (1600, 1200), (768, 1024), (1280, 720)]
TINY_CLIP = Path(__file__).resolve().parents[2] / "examples" / "models" / "tiny-clip.json"


def web_jpegs(count: int, unique_per_size: int, sizes: list[tuple[int, int]]) -> list[bytes]:
    distinct = [data for w, h in sizes for data in make_images(unique_per_size, unique_per_size, w, h)]
    random.Random(0).shuffle(distinct)
    return [distinct[i % len(distinct)] for i in range(count)]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def images_per_s(fn, count: int) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return count / (time.perf_counter() - start)


def run(smoke: bool) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = min(16, os.cpu_count() or 1)
    batch = 8 if smoke else 256
    sizes = [(160, 120), (96, 128)] if smoke else WEB_SIZES
    images = web_jpegs(24 if smoke else 8192, 2 if smoke else 16, sizes)
    pairs = [Pair(str(i), data, "c", "alt") for i, data in enumerate(images)]
    base = ClipConfig(
        model=str(TINY_CLIP) if smoke else "ViT-L-14", pretrained=None, device=device,
        batch_size=batch, preprocess_threads=threads,
    )  # fmt: skip

    def classifier(**changes) -> ClipNsfwClassifier:
        embedder = ClipImageEmbedder(replace(base, **changes))
        return ClipNsfwClassifier(embedder, random_head(embedder.embedding_dim, embedder.device))

    def stage(scorer: ClipNsfwClassifier, subset: list[Pair]) -> float:
        score_pairs(subset[:batch], scorer)  # warm-up: kernels, allocator, compilation
        return images_per_s(lambda: score_pairs(subset, scorer), len(subset))

    new, old = classifier(decode="device"), classifier(decode="cpu")
    new_rate = stage(new, pairs)
    old_rate = stage(old, pairs[: max(batch, len(pairs) // 2)])
    rows = [stage_row("decode on device + model", new_rate, old_rate, threads)]
    if not smoke:  # compiling takes minutes on a CPU
        rows.append(
            stage_row(
                "decode on device + compiled model",
                stage(classifier(decode="device", compile=True), pairs),
                old_rate,
                threads,
            )
        )
    rows += part_rows(new, old, images, batch, threads)
    rows.append(agreement_row(new, old, pairs[: 4 * batch]))
    return rows


def stage_row(name: str, rate: float, old_rate: float, threads: int) -> dict:
    return {
        "section": "nsfw",
        "name": name,
        "value": rate,
        "unit": "images/s",
        "baseline": f"CPU decode, {threads} threads (before)",
        "baseline_value": old_rate,
        "ratio": rate / old_rate,
        "goal": f">= {GOAL_IMAGES_PER_S}",
        "met": rate >= GOAL_IMAGES_PER_S,
    }


def part_rows(new: ClipNsfwClassifier, old: ClipNsfwClassifier, images: list[bytes], batch: int, threads: int) -> list[dict]:
    """The model alone on a prepared batch, and each path's decoding alone."""
    embedder, decoder = new.embedder, new.embedder.decoder
    assert decoder is not None
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    prepared = decoder.prepare(batches[0], DEFAULT_MAX_PIXELS).pixels_on(embedder.device)
    repeats = max(1, len(batches) // 2)
    embedder.embed_pixels(prepared)
    model_rate = images_per_s(lambda: [embedder.embed_pixels(prepared) for _ in range(repeats)], repeats * len(prepared))

    def decode_all() -> None:
        for items in batches:
            decoder.prepare(items, DEFAULT_MAX_PIXELS).pixels_on(embedder.device)

    decode_rate = images_per_s(decode_all, len(images))
    prepare = partial(prepare_encoded, spec=old.embedder.spec, max_pixels=DEFAULT_MAX_PIXELS)
    cpu_batches = batches[: max(1, len(batches) // 4)]
    cpu_decode_rate = images_per_s(
        lambda: [old.embedder._prepare_on_cpu(items, prepare) for items in cpu_batches], sum(map(len, cpu_batches))
    )
    return [
        {
            "section": "nsfw",
            "name": "model alone (CLIP on prepared batches)",
            "value": model_rate,
            "unit": "images/s",
            "notes": f"batch {len(prepared)}",
        },
        {
            "section": "nsfw",
            "name": "decode + resize alone, on device",
            "value": decode_rate,
            "unit": "images/s",
            "baseline": f"CPU, {threads} threads",
            "baseline_value": cpu_decode_rate,
            "ratio": decode_rate / cpu_decode_rate,
        },
    ]


def agreement_row(new: ClipNsfwClassifier, old: ClipNsfwClassifier, pairs: list[Pair]) -> dict:
    a, b = score_pairs(pairs, new, with_embeddings=True), score_pairs(pairs, old, with_embeddings=True)
    assert a.ids == b.ids and a.embeddings is not None and b.embeddings is not None
    embedding_diff = float(np.abs(a.embeddings - b.embeddings).max())
    return {
        "section": "nsfw",
        "name": "max |NSFW score| difference, device vs CPU decode",
        "value": float(np.abs(a.scores - b.scores).max()),
        "unit": "probability",
        "notes": f"{len(pairs)} images; max embedding difference {embedding_diff:.2e}",
    }
