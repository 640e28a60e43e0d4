"""The device decoding path (torchvision decode_jpeg + torch resizing), run here with torchvision's CPU decoder:
the same code as on a GPU except the CUDA stream, checked against the PIL path."""

import numpy as np
import pytest
import torch
from torchvision.io import decode_jpeg

from curation.images import open_image
from curation.pairs.clip_embedder import ClipConfig, ClipImageEmbedder
from curation.pairs.device_decode import resize_crop
from curation.pairs.model_input import prepare_image
from curation.pairs.nsfw import ClipNsfwClassifier, score_pairs
from curation.pairs.pair import Pair

from .images import encoded, garbage_jpeg, pixel_bomb

WEB_SIZES = [(64, 64), (100, 60), (60, 100), (77, 131), (300, 200), (800, 600), (1024, 768)]


def embedder(name, decode, batch_size=3):
    return ClipImageEmbedder(ClipConfig(model=name, pretrained=None, batch_size=batch_size, decode=decode))


def test_auto_decodes_on_the_device_only_on_a_gpu(tiny_clip_name):
    assert embedder(tiny_clip_name, "auto").decoder is None  # this machine has no GPU
    assert embedder(tiny_clip_name, "device").decoder is not None


@pytest.mark.parametrize("size", WEB_SIZES)
def test_resizing_on_the_device_matches_pils_within_rounding(tiny_clip_name, size):
    spec = embedder(tiny_clip_name, "cpu").spec
    width, height = size
    data = encoded(width, height, seed=sum(size))
    ours = resize_crop(decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)), spec).permute(1, 2, 0)
    reference = prepare_image(open_image(data), spec)  # PIL: full decode, bicubic resize, crop
    diff = np.abs(ours.numpy().astype(int) - reference.astype(int))
    assert ours.shape == reference.shape and diff.max() <= 3 and diff.mean() < 0.25


def test_device_embeddings_match_the_pil_path(tiny_clip_name):
    images = [encoded(w, h, seed=i) for i, (w, h) in enumerate(WEB_SIZES)]
    on_device, errors = embedder(tiny_clip_name, "device").embed_encoded(images)
    assert errors == [None] * len(images)
    cpu = embedder(tiny_clip_name, "cpu")
    full_decode = cpu.embed([open_image(data) for data in images])
    np.testing.assert_allclose(on_device, full_decode, atol=2e-3)
    reduced_decode, _ = cpu.embed_encoded(images)  # the CPU path decodes large JPEGs at a reduced scale
    np.testing.assert_allclose(on_device, reduced_decode, atol=1e-2)


def test_mixed_batches_keep_order_reasons_and_the_cpu_path_for_other_formats(tiny_clip_name, tiny_head):
    jpeg = encoded(200, 150, seed=3)
    items = {
        "jpeg": jpeg,
        "png": encoded(90, 70, "PNG", seed=1),
        "gray-jpeg": encoded(120, 90, seed=2, mode="L"),
        "corrupt": garbage_jpeg(),
        "truncated": jpeg[: len(jpeg) // 2],
        "empty": b"",
        "png-bomb": pixel_bomb(2000, 2000),
        "jpeg-bomb": encoded(1100, 1000, seed=4),  # over the cap: rejected from its header, never decoded
        "html": b"<!doctype html><html><body>not an image</body></html>",
        "webp": encoded(80, 120, "WEBP", seed=5),
    }
    pairs = [Pair(key, data, "c", "alt") for key, data in items.items()]
    device = ClipNsfwClassifier(embedder(tiny_clip_name, "device", batch_size=4), tiny_head)
    cpu = ClipNsfwClassifier(embedder(tiny_clip_name, "cpu", batch_size=4), tiny_head)
    ours = score_pairs(pairs, device, max_pixels=1_000_000, with_embeddings=True)
    reference = score_pairs(pairs, cpu, max_pixels=1_000_000, with_embeddings=True)
    assert ours.ids == reference.ids == ["jpeg", "png", "gray-jpeg", "webp"]
    assert ours.embeddings is not None and reference.embeddings is not None
    assert {(r.id, r.reason) for r in ours.rejected} == {(r.id, r.reason) for r in reference.rejected}
    assert {r.id for r in ours.rejected} == {"corrupt", "truncated", "empty", "png-bomb", "jpeg-bomb", "html"}
    np.testing.assert_array_equal(ours.embeddings[[1, 3]], reference.embeddings[[1, 3]])  # PNG, WebP: same CPU path
    np.testing.assert_allclose(ours.embeddings, reference.embeddings, atol=1e-2)
    alone = score_pairs([Pair("gray-jpeg", items["gray-jpeg"], "c", "alt")], device, with_embeddings=True)
    assert alone.embeddings is not None
    np.testing.assert_allclose(alone.embeddings[0], ours.embeddings[2], atol=1e-6)  # neighbours change nothing
