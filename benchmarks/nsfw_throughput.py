"""NSFW stage throughput: our batched CLIP + NSFW head stage against a naive one-image-at-a-time loop.

Both run in the same process on the same model, head and JPEG images (random weights; throughput does
not depend on them). The naive loop is what a plain open_clip user writes: PIL decode, open_clip's
preprocess transform, `encode_image` on a batch of one, normalise, head. Ours is `nsfw.score_pairs`
with a `ClipNsfwClassifier` (reduced JPEG decode and resizing in a thread pool, one batch ahead of the
model, uint8 transfer, batched forward under inference_mode).

Also reported: the time our stage's image preparation (decode + resize + crop, in the thread pool) and
the model (CLIP + head on prepared batches) each take alone, and the decode share of their sum; and our
stage with the other decoding path (`decode="device"`: torchvision's `decode_jpeg` and torch resizing on
the model's device, nvJPEG on a GPU; on a CPU, libjpeg-turbo at full size instead of PIL's reduced scale).
`benchmarks/gpu_suite.py` runs the GPU comparison as one of its sections.

    python benchmarks/nsfw_throughput.py                       # CPU, tiny ViT, about a minute
    python benchmarks/nsfw_throughput.py --torch-threads 1     # CPU, no intra-op threading for either path
    python benchmarks/nsfw_throughput.py --model ViT-B-32 --images 128 --naive-images 32   # CPU, compute-bound
    python benchmarks/nsfw_throughput.py --model ViT-L-14 --device cuda --dtype bfloat16 \\
        --images 4096 --batch-size 256 --threads 14            # GPU
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.images import DEFAULT_MAX_PIXELS  # noqa: E402
from curation.pairs.clip_embedder import ClipConfig, ClipImageEmbedder  # noqa: E402
from curation.pairs.model_input import prepare_encoded  # noqa: E402
from curation.pairs.nsfw import ClipNsfwClassifier, score_pairs  # noqa: E402
from curation.pairs.nsfw_head import HeadSpec, NsfwHead  # noqa: E402
from curation.pairs.pair import Pair  # noqa: E402

TINY_VIT = {  # a 224-pixel ViT small enough that per-call overhead matters, as for any small model
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 32, "heads": 2, "layers": 1},
}


def make_images(count: int, unique: int, width: int, height: int) -> list[bytes]:
    """Photo-like JPEGs (smooth gradients plus noise), `unique` distinct ones repeated to `count`."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for _ in range(unique):
        phase = rng.uniform(0, 6.28, 3)
        base = np.stack([128 + 100 * np.sin(x / (40 + 9 * c) + y / 70 + phase[c]) for c in range(3)], -1)
        pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=85)
        images.append(out.getvalue())
    return [images[i % unique] for i in range(count)]


def random_head(dim: int, device: str) -> NsfwHead:
    torch.manual_seed(0)
    dims = (dim, 64, 512, 256, 1)  # the released ViT-L/14 head's shape
    return NsfwHead(HeadSpec(dims, ("relu", "relu", "relu", "sigmoid"), input_norm=True)).to(device).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def naive_loop(classifier: ClipNsfwClassifier, preprocess, images: list[bytes]) -> float:
    embedder = classifier.embedder
    start = time.perf_counter()
    with torch.no_grad():
        for data in images:
            pixels = preprocess(Image.open(io.BytesIO(data))).unsqueeze(0).to(embedder.device, embedder.dtype)
            features = torch.nn.functional.normalize(embedder.model.encode_image(pixels).float(), dim=-1)
            float(classifier.head(features)[0])
    return time.perf_counter() - start


def ours(classifier: ClipNsfwClassifier, pairs: list[Pair]) -> float:
    start = time.perf_counter()
    scored = score_pairs(pairs, classifier)
    sync(classifier.embedder.device)
    assert len(scored.ids) == len(pairs), scored.rejected[:3]
    return time.perf_counter() - start


def stage_parts(classifier: ClipNsfwClassifier, images: list[bytes]) -> tuple[float, float]:
    """Seconds to prepare all images (thread pool, alone) and to run the model on the prepared batches."""
    embedder = classifier.embedder
    pool, spec = embedder._pool, embedder.spec
    start = time.perf_counter()
    prepared = list(pool.map(lambda data: prepare_encoded(data, spec, DEFAULT_MAX_PIXELS), images))
    prepare_s = time.perf_counter() - start
    step = embedder.config.batch_size
    batches = [np.stack(prepared[i : i + step]) for i in range(0, len(prepared), step)]
    sync(embedder.device)
    start = time.perf_counter()
    for batch in batches:
        classifier.score_embeddings(embedder.embed_prepared(batch))
    sync(embedder.device)
    return prepare_s, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny-vit", help="open_clip architecture (default: a tiny 224px ViT)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--images", type=int, default=512, help="images through our stage")
    parser.add_argument("--naive-images", type=int, default=96, help="images through the naive loop")
    parser.add_argument("--unique", type=int, default=64, help="distinct images generated")
    parser.add_argument("--size", default="800x600", help="JPEG size WxH (web photos, before any resizing)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="preparation threads")
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads for both paths (default: torch's)")
    parser.add_argument("--decode", default="auto", choices=["auto", "cpu", "device"], help="our decoding path (auto: device on GPU)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    if args.model == "tiny-vit":
        config_dir = Path(tempfile.mkdtemp())
        (config_dir / "tiny-vit.json").write_text(json.dumps(TINY_VIT))
        open_clip.add_model_config(config_dir / "tiny-vit.json")
    width, height = map(int, args.size.split("x"))
    images = make_images(args.images, args.unique, width, height)
    pairs = [Pair(str(i), data, "c", "alt") for i, data in enumerate(images)]
    config = ClipConfig(
        model=args.model, pretrained=None, device=args.device, dtype=args.dtype,
        batch_size=args.batch_size, preprocess_threads=args.threads, decode=args.decode,
    )  # fmt: skip
    embedder = ClipImageEmbedder(config)
    classifier = ClipNsfwClassifier(embedder, random_head(embedder.embedding_dim, embedder.device))
    preprocess_cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(embedder.model))
    preprocess = image_transform_v2(preprocess_cfg, is_train=False)

    warm = min(args.batch_size, len(pairs))  # kernels, allocator, thread pool
    naive_loop(classifier, preprocess, images[:4])
    ours(classifier, pairs[:warm])
    naive_count = min(args.naive_images, len(images))
    naive_s = naive_loop(classifier, preprocess, images[:naive_count])
    ours_s = ours(classifier, pairs)
    prepare_s, model_s = stage_parts(classifier, images)
    other_decode: Literal["cpu", "device"] = "cpu" if embedder.decoder is not None else "device"
    other = ClipNsfwClassifier(ClipImageEmbedder(replace(config, decode=other_decode)), classifier.head)
    ours(other, pairs[:warm])
    other_s = ours(other, pairs)

    device_name = torch.cuda.get_device_name() if embedder.device.startswith("cuda") else f"cpu x{os.cpu_count()}"
    result = {
        "model": args.model,
        "device": device_name,
        "dtype": str(embedder.dtype).removeprefix("torch."),
        "image_size": args.size,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "naive_images_per_s": naive_count / naive_s,
        "decode": "device" if embedder.decoder is not None else "cpu",
        "ours_images_per_s": len(pairs) / ours_s,
        "speedup": (len(pairs) / ours_s) / (naive_count / naive_s),
        "prepare_only_images_per_s": len(images) / prepare_s,
        "model_only_images_per_s": len(images) / model_s,
        "decode_share": prepare_s / (prepare_s + model_s),
        f"ours_{other_decode}_decode_images_per_s": len(pairs) / other_s,
        f"{other_decode}_decode_vs_ours": ours_s / other_s,
    }
    for key, value in result.items():
        print(f"{key:>34}: {value:.3f}" if isinstance(value, float) else f"{key:>34}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
