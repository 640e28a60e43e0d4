import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.errors import Rejection, SampleError
from curation.pairs.pair import Pair, PairColumns, make_pair
from curation.pairs.samples import embeddings_table, pair_sample, read_embeddings
from curation.pairs.sources import iter_webdataset_pairs
from curation.shards import PartitionShardWriter, sample_key

from .images import encoded, garbage_jpeg, pixel_bomb
from .outcomes import kept, rejected


def rgba_png():
    image = Image.new("RGBA", (30, 20), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 15, 20))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def gif():
    out = io.BytesIO()
    Image.new("P", (12, 10), 3).save(out, "GIF")
    return out.getvalue()


def test_caption_choice_falls_back_and_caps_length():
    synthetic = kept(make_pair("a", image=b"x", alt_text=" alt ", synthetic_caption="syn", caption="synthetic"))
    assert (synthetic.caption, synthetic.caption_source, synthetic.alt_text) == ("syn", "synthetic", "alt")
    alt = kept(make_pair("a", image=b"x", alt_text="alt", synthetic_caption="syn", caption="alt"))
    assert (alt.caption, alt.caption_source) == ("alt", "alt")
    fallback = kept(make_pair("a", image=b"x", alt_text="alt", synthetic_caption="  ", caption="synthetic"))
    assert (fallback.caption, fallback.caption_source) == ("alt", "alt")
    assert rejected(make_pair("a", image=b"x", alt_text=None, synthetic_caption="", caption="alt")).reason == "missing_caption"
    long = make_pair("a", image=b"x", alt_text="y" * 11, synthetic_caption="s", caption="alt", max_caption_chars=10)
    assert isinstance(long, Rejection) and long.reason == "caption_too_long"
    cut = kept(make_pair("a", image=b"x", alt_text="y" * 11, synthetic_caption="s", caption="synthetic", max_caption_chars=9))
    assert cut.caption == "s" and cut.alt_text == "y" * 9 and cut.metadata["truncated"] == ["alt_text"]
    assert kept(make_pair("a", image=b"x", alt_text="a", synthetic_caption=None, caption="alt", punsafe="nan")).scores == {}


def test_sample_keys_are_safe_and_distinct():
    assert sample_key("abc-123_x") == "abc-123_x"
    assert sample_key("a/b.c") != sample_key("a_b_c") and "." not in sample_key("a/b.c")


@pytest.mark.parametrize("image_format", ["jpg", "png", "webp"])
def test_shards_load_with_webdataset_and_datasets(tmp_path, image_format):
    import datasets
    import webdataset as wds

    inputs = {
        "jpeg": encoded(40, 30),
        "png": encoded(33, 21, "PNG"),
        "rgba": rgba_png(),
        "gif": gif(),
        "webp": encoded(16, 16, "WEBP"),
    }
    writer = PartitionShardWriter(tmp_path, "part", samples_per_shard=3)
    for pair_id, data in inputs.items():
        pair = Pair(pair_id, data, f"a {pair_id} picture", "synthetic", alt_text="alt", url=f"http://x/{pair_id}")
        pair.scores = {"nsfw": 0.125}
        writer.write(pair_sample(pair, image_format=image_format))
    manifest = writer.close()
    assert manifest["count"] == 5 and len(manifest["shards"]) == 2

    urls = [str(p) for p in sorted(tmp_path.glob("part-*.tar"))]
    rows = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert [r["__key__"] for r in rows] == list(inputs)
    for row in rows:
        meta = row["json"]
        original = Image.open(io.BytesIO(inputs[meta["id"]]))
        assert row[image_format].size == original.size == (meta["width"], meta["height"])
        assert row["txt"] == f"a {meta['id']} picture" and meta["scores"] == {"nsfw": 0.125}
        assert meta["caption_source"] == "synthetic" and meta["url"].endswith(meta["id"])
    if image_format == "jpg":
        assert rows[0][image_format].tobytes() == Image.open(io.BytesIO(inputs["jpeg"])).tobytes()  # kept as is
        assert rows[2]["jpg"].getpixel((25, 10)) == (255, 255, 255)  # transparency flattened on white

    loaded = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 5 and loaded[1][image_format].size == (33, 21)
    assert loaded[3]["json"]["id"] == "gif" and loaded[3]["txt"] == "a gif picture"


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty_image"), (garbage_jpeg(), "decode_error"), (encoded(64, 64)[:300], "decode_error")],
)
def test_bad_images_cannot_become_samples(data, reason):
    with pytest.raises(SampleError) as info:
        pair_sample(Pair("x", data, "c", "alt"))
    assert info.value.reason == reason


def test_pixel_cap_applies_when_writing():
    with pytest.raises(SampleError) as info:
        pair_sample(Pair("x", pixel_bomb(1200, 1000), "c", "alt"), max_pixels=1_000_000)
    assert info.value.reason == "too_many_pixels"


def test_webdataset_input_pairs_like_img2dataset_output(tmp_path):
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "in.tar")) as sink:
        sink.write({
            "__key__": "000000001", "jpg": encoded(20, 10), "txt": "alt words",
            "json": json.dumps({"url": "http://a/1.jpg", "top_caption": "a caption", "punsafe": 0.3, "key": "1"}),
        })  # fmt: skip
        sink.write({"__key__": "000000002", "txt": "no image"})
        sink.write({"__key__": "000000003", "jpg": encoded(20, 10), "json": b"[1, 2]"})
        sink.write({"__key__": "000000004", "png": encoded(20, 10, "PNG"), "txt": "", "json": "{}"})
    results = list(iter_webdataset_pairs(tmp_path / "in.tar", id_prefix="w/"))
    first = results[0]
    assert isinstance(first, Pair) and first.id == "w/000000001"
    assert (first.caption, first.alt_text, first.url) == ("a caption", "alt words", "http://a/1.jpg")
    assert first.scores == {"punsafe": 0.3}
    assert [(r.id, rejected(r).reason) for r in results[1:]] == [
        ("w/000000002", "missing_image"),
        ("w/000000003", "bad_metadata"),
        ("w/000000004", "missing_caption"),
    ]
    by_id = list(iter_webdataset_pairs(tmp_path / "in.tar", columns=PairColumns(id="key")))
    assert by_id[0].id == "1"


def test_embeddings_sidecar_round_trip(tmp_path):
    embeddings = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    pq.write_table(embeddings_table(["a", "b", "c", "d"], embeddings), tmp_path / "emb.parquet")
    ids, loaded = read_embeddings(tmp_path / "emb.parquet")
    assert ids == ["a", "b", "c", "d"] and loaded.dtype == np.float16
    np.testing.assert_array_equal(loaded, embeddings.astype(np.float16))
    with pytest.raises(ValueError):
        embeddings_table(["a"], embeddings)


def test_a_tar_sample_over_the_readers_caps_is_too_large(tmp_path):
    from curation.shards import DEFAULT_MAX_SAMPLE_MEMBERS
    from tests.hostile.craft_tars import END, member, one_key_many_members

    many = one_key_many_members(b"many", DEFAULT_MAX_SAMPLE_MEMBERS, 1) + member(b"many.jpg", encoded(20, 10))
    (tmp_path / "in.tar").write_bytes(many + member(b"ok.jpg", encoded(20, 10)) + member(b"ok.txt", b"alt") + END)
    results = list(iter_webdataset_pairs(tmp_path / "in.tar", caption="alt"))
    assert rejected(results[0]).reason == "too_large" and isinstance(results[1], Pair)
