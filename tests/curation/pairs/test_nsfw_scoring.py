import io

import numpy as np
import pytest
import torch
from PIL import Image

from curation.errors import Rejection
from curation.images import open_image
from curation.models import ModelUnavailableError
from curation.pairs.clip_embedder import ClipConfig, ClipImageEmbedder
from curation.pairs.model_input import prepare_image
from curation.pairs.nsfw import (
    NSFW_FRACTION_REASON,
    NSFW_THRESHOLD_REASON,
    ClipNsfwClassifier,
    column_scores,
    score_pairs,
    select_nsfw,
)
from curation.pairs.pair import Pair, PairColumns
from curation.pairs.sources import iter_parquet_pairs

from .images import encoded, garbage_jpeg, pixel_bomb
from .outcomes import kept

SIZES = [(64, 64), (100, 60), (60, 100), (77, 131), (300, 200)]


def pair(pair_id, image, **kwargs):
    return Pair(pair_id, image, f"caption {pair_id}", "alt", **kwargs)


@pytest.fixture
def embedder(tiny_clip_name):
    torch.manual_seed(0)
    return ClipImageEmbedder(ClipConfig(model=tiny_clip_name, pretrained=None, batch_size=3))


def open_clip_reference(embedder, head, data):
    """The plain open_clip way, one image at a time: PIL decode, open_clip's transform, encode_image."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(embedder.model))
    transform = image_transform_v2(cfg, is_train=False)
    with torch.no_grad():
        pixels = transform(Image.open(io.BytesIO(data))).unsqueeze(0)
        features = torch.nn.functional.normalize(embedder.model.encode_image(pixels), dim=-1)
        return features[0].numpy(), float(head(features)[0])


def test_preprocessing_equals_open_clips_transform(embedder):
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    transform = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(embedder.model)), is_train=False)
    spec = embedder.spec
    for seed, (w, h) in enumerate(SIZES):
        image = Image.open(io.BytesIO(encoded(w, h, "PNG", seed=seed)))
        ours = torch.from_numpy(np.array(prepare_image(image, spec))).permute(2, 0, 1).float() / 255
        ours = (ours - torch.tensor(spec.mean).view(3, 1, 1)) / torch.tensor(spec.std).view(3, 1, 1)
        torch.testing.assert_close(ours, transform(image), rtol=0, atol=1e-5)


def test_batched_scores_equal_open_clip_one_image_at_a_time(embedder, tiny_head):
    classifier = ClipNsfwClassifier(embedder, tiny_head)
    images = [encoded(w, h, "PNG", seed=i) for i, (w, h) in enumerate(SIZES * 2)]  # PNG: no reduced decode
    scored = score_pairs([pair(str(i), b) for i, b in enumerate(images)], classifier, with_embeddings=True)
    assert scored.ids == [str(i) for i in range(len(images))] and not scored.rejected
    assert scored.embeddings is not None
    for i, data in enumerate(images):
        embedding, score = open_clip_reference(embedder, tiny_head, data)
        np.testing.assert_allclose(scored.embeddings[i], embedding, atol=1e-5)
        assert scored.scores[i] == pytest.approx(score, abs=1e-5)
    np.testing.assert_allclose(np.linalg.norm(scored.embeddings, axis=1), 1.0, atol=1e-5)


def test_bad_images_are_rejected_with_reasons_and_never_raise(embedder, tiny_head):
    classifier = ClipNsfwClassifier(embedder, tiny_head)
    good = encoded(90, 70, "PNG", seed=1)
    jpeg = encoded(200, 150)
    pairs = [
        pair("good", good),
        pair("corrupt", garbage_jpeg()),
        pair("truncated", jpeg[: len(jpeg) // 2]),
        pair("empty", b""),
        pair("missing", None),
        pair("bomb", pixel_bomb(2000, 2000)),
        pair("html", b"<!doctype html><html><body>not an image</body></html>"),
        pair("jpeg", jpeg),
    ]
    scored = score_pairs(pairs, classifier, max_pixels=1_000_000)
    assert scored.ids == ["good", "jpeg"]
    reasons = {r.id: r.reason for r in scored.rejected}
    assert reasons == {
        "corrupt": "decode_error",
        "truncated": "decode_error",
        "empty": "empty_image",
        "missing": "empty_image",
        "bomb": "too_many_pixels",
        "html": "decode_error",
    }
    alone = score_pairs([pair("good", good)], classifier)
    assert scored.scores[0] == pytest.approx(alone.scores[0], abs=1e-6)  # failures do not shift batches


def test_large_jpegs_decode_at_a_reduced_scale():
    image = open_image(encoded(800, 600), max_pixels=10**7, draft_side=64)
    assert image.size == (100, 75)  # 1/8 scale still covers a 64-pixel model input
    image = open_image(encoded(800, 600), max_pixels=10**7, draft_side=224)
    assert image.size == (400, 300)


def test_a_plugged_in_classifier_is_used_as_is():
    class Brightness:
        name = "brightness"

        def score(self, images):
            return np.array([np.asarray(im.convert("L"), dtype=np.float32).mean() / 255 for im in images])

    dark = Image.new("RGB", (8, 8), (10, 10, 10))
    out = io.BytesIO()
    dark.save(out, "PNG")
    scored = score_pairs([pair("dark", out.getvalue()), pair("bad", b"xx")], Brightness())
    assert scored.ids == ["dark"] and scored.scores[0] == pytest.approx(10 / 255, abs=1e-3)
    assert scored.rejected == [Rejection("decode_error", scored.rejected[0].detail, "bad")]
    with pytest.raises(TypeError):
        score_pairs([pair("dark", out.getvalue())], Brightness(), with_embeddings=True)


def test_precomputed_punsafe_column_is_used_without_a_model(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = encoded(20, 20, "PNG")
    table = pa.table(
        {
            "image": [{"bytes": image, "path": None}] * 4,
            "TEXT": ["a", "b", "c", "d"],
            "top_caption": ["sa", "sb", "sc", None],
            "punsafe": [0.1, 0.9, None, 0.4],
        }
    )
    pq.write_table(table, tmp_path / "part.parquet")
    pairs = [kept(result) for result in iter_parquet_pairs(tmp_path / "part.parquet", id_prefix="p-")]
    scored = column_scores(pairs)
    assert scored.ids == ["p-0", "p-1", "p-3"]
    np.testing.assert_allclose(scored.scores, [0.1, 0.9, 0.4])
    assert [(r.id, r.reason) for r in scored.rejected] == [("p-2", "missing_nsfw_score")]
    selection = select_nsfw(scored.ids, scored.scores, threshold=0.5)
    assert selection.drop_ids == {"p-1"}


def test_top_fraction_selection_is_exact_and_combines_with_a_threshold():
    rng = np.random.default_rng(0)
    ids = [f"id{i:03d}" for i in range(200)]
    scores = rng.uniform(size=200).astype(np.float32)
    selection = select_nsfw(ids, scores, drop_top_fraction=0.07)
    top = {ids[i] for i in np.argsort(-scores)[:14]}
    assert selection.drop_ids == top and selection.dropped_fraction == pytest.approx(0.07)
    assert set(selection.reasons.values()) == {NSFW_FRACTION_REASON}
    both = select_nsfw(ids, scores, drop_top_fraction=0.07, threshold=0.8)
    above = {ids[i] for i in np.flatnonzero(scores > 0.8)}
    assert both.drop_ids == top | above
    assert {both.reasons[i] for i in above - top} == {NSFW_THRESHOLD_REASON}


def test_weights_from_a_local_checkpoint_file(tmp_path, tiny_clip_name, embedder):
    torch.save(embedder.model.state_dict(), tmp_path / "tiny.pt")
    reloaded = ClipImageEmbedder(ClipConfig(model=tiny_clip_name, pretrained=str(tmp_path / "tiny.pt")))
    images = [Image.open(io.BytesIO(encoded(70, 50, "PNG")))]
    np.testing.assert_allclose(reloaded.embed(images), embedder.embed(images), atol=1e-6)


def test_missing_weights_name_the_flag(tiny_clip_name):
    with pytest.raises(ModelUnavailableError, match="--clip-pretrained"):
        ClipImageEmbedder(ClipConfig(model=tiny_clip_name, pretrained="no-such-tag"))


def test_head_and_clip_sizes_must_agree(embedder):
    from curation.pairs.nsfw_head import HeadSpec, NsfwHead

    with pytest.raises(ValueError, match="768-d"):
        ClipNsfwClassifier(embedder, NsfwHead(HeadSpec((768, 1), ("sigmoid",))))


def test_iter_parquet_pairs_reads_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"uid": ["x", "y"], "jpg": [encoded(8, 8), None], "caption": ["a cat", "a dog"], "src": ["s", "t"]}),
        tmp_path / "pmd.parquet",
    )
    columns = PairColumns(id="uid", image="jpg", alt_text="caption", synthetic_caption=None, url="src")
    results = list(iter_parquet_pairs(tmp_path / "pmd.parquet", columns=columns, caption="synthetic"))
    assert isinstance(results[0], Pair) and results[0].id == "x" and results[0].caption == "a cat"
    assert results[0].caption_source == "alt" and results[0].url == "s"
    assert results[1] == Rejection("missing_image", "no bytes in column 'jpg'", "y")
