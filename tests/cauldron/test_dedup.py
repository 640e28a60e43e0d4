"""Eval-set dedup: exact pixels, perceptual hash (re-encoded + resized copies), n-grams; eval set loaders."""

import random

import datasets
import pytest
from PIL import Image, ImageDraw

from cauldron.dedup import EvalIndex, EvalMatch, FingerprintCache, build_eval_index, fingerprint_rows
from cauldron.phash import HammingIndex, hamming, nearest_brute_force, phash
from cauldron.schema import write_cauldron_parquet
from curation.errors import Rejection

from .conftest import encode, make_photo


def matched(match: EvalMatch | None) -> EvalMatch:
    """The match, which must have been found."""
    assert match is not None
    return match


SIZE = (256, 192)


def row(*images, text="What is shown?"):
    return {"images": list(images), "texts": [{"user": text, "assistant": "Something.", "source": "train"}]}


def text_row(user, assistant="Fine."):
    return {"images": [], "texts": [{"user": user, "assistant": assistant, "source": "openhermes"}]}


@pytest.mark.parametrize(("threshold", "bands"), [(0, None), (3, None), (8, None), (12, None), (8, 3), (8, 16)])
def test_hamming_index_finds_exactly_what_brute_force_finds(threshold, bands):
    rng = random.Random(threshold)
    stored = [rng.getrandbits(64) for _ in range(2000)]
    stored[5] = stored[9]  # a duplicate: the first stored wins ties
    queries = [rng.getrandbits(64) for _ in range(200)]
    for _ in range(200):  # planted neighbours at every distance up to threshold + 2
        base = rng.choice(stored)
        flips = rng.sample(range(64), rng.randint(0, threshold + 2))
        queries.append(base ^ sum(1 << bit for bit in flips))
    queries.append(stored[9])
    index = HammingIndex(stored, threshold, bands=bands)
    positions, distances = index.nearest_many(queries)
    for query, position, distance in zip(queries, positions, distances):
        expected = nearest_brute_force(stored, query, threshold)
        assert (position < 0) == (expected is None)
        if expected is not None:
            assert distance == expected[1] == hamming(query, stored[position])
    assert positions[-1] == 5
    assert index.nearest(queries[-1]) == (None if positions[-1] < 0 else (positions[-1], distances[-1]))


def test_hamming_index_with_big_buckets_in_small_batches(monkeypatch):
    import cauldron.phash

    monkeypatch.setattr(cauldron.phash, "_PAIRS_PER_BATCH", 7)  # buckets larger than a batch, too
    rng = random.Random(1)
    stored = [rng.getrandbits(64) for _ in range(500)] + [12345] * 30  # e.g. many blank images
    queries = [rng.getrandbits(64) for _ in range(100)] + [12345 ^ 0b101, stored[3] ^ 1]
    positions, distances = HammingIndex(stored, 8).nearest_many(queries)
    for query, position, distance in zip(queries, positions, distances):
        expected = nearest_brute_force(stored, query, 8)
        assert (position < 0) == (expected is None)
        assert expected is None or distance == expected[1]
    assert positions[-2:].tolist() == [500, 3] and distances[-2:].tolist() == [2, 1]


def test_hamming_index_probes_few_candidates():
    rng = random.Random(0)
    stored = [rng.getrandbits(64) for _ in range(20000)]
    index = HammingIndex(stored, 8)
    probed = index.candidate_count([rng.getrandbits(64) for _ in range(200)]) / 200
    assert index.band_count > 1
    assert probed < 0.02 * len(stored)  # a few hundred at most, not all 20000


def eval_index_with(*images, threshold=8):
    index = EvalIndex(phash_threshold=threshold)
    for number, image in enumerate(images):
        index.add_image("mmmu", f"validation#{number}/image", encode(image))
    return index


def test_exact_pixel_copy_in_another_format_is_caught():
    photo = make_photo(1, SIZE)
    index = eval_index_with(make_photo(0, SIZE), photo)
    match = index.match_row(row(encode(photo, "BMP")))
    assert (match.kind, match.eval_set, match.eval_item, match.distance) == ("exact_pixels", "mmmu", "validation#1/image", 0)


def test_jpeg_reencoded_and_resized_copy_is_caught_and_near_miss_is_not():
    photo = make_photo(2, SIZE)
    index = eval_index_with(make_photo(0, SIZE), photo, make_photo(3, SIZE))
    copy = encode(photo.resize((150, 110), Image.Resampling.BILINEAR), "JPEG", quality=60)
    match = index.match_row(row(encode(make_photo(4, SIZE)), copy))
    assert match.kind == "phash" and match.eval_item == "validation#1/image"
    assert match.train_image == 1 and match.distance <= 8
    # the same scene with other objects drawn on the same background is a different image
    near_miss = make_photo(2, SIZE, shapes_seed=1)
    assert hamming(phash(near_miss), phash(photo)) > 8
    assert index.match_row(row(encode(near_miss))) is None
    assert index.match_row(row(encode(make_photo(5, SIZE)))) is None


def test_ngram_overlap_catches_quoted_eval_text_only_in_text_rows():
    index = EvalIndex(ngram_size=13, min_ngram_words=8)
    question = (
        "A train leaves the station at nine in the morning travelling at sixty miles per hour "
        "towards a city two hundred miles away. When does it arrive?"
    )
    index.add_text("gsm_like", "test#17/question", question)
    index.add_text("gsm_like", "test#18/question", "Name the largest planet of the solar system please now.")
    index.add_text("gsm_like", "test#19/answer", "B")  # too short to index
    quoted = text_row("Solve: a train leaves the station at nine in the morning, travelling at sixty miles per hour!")
    match = matched(index.match_row(quoted))
    assert (match.kind, match.eval_item) == ("ngram", "test#17/question")
    assert match.detail == "a train leaves the station at nine in the morning travelling at sixty"
    short = matched(index.match_row(text_row("Hi", "Name the largest planet of the solar system please now. Jupiter.")))
    assert short.eval_item == "test#18/question"
    assert index.match_row(text_row("A train departs at 9 am going 60 mph to a city 200 miles off.")) is None
    assert index.match_row(text_row("B")) is None
    image_row = row(encode(make_photo(6)), text=question)
    assert index.match_row(image_row) is None
    assert matched(index.match_row(image_row, text_for_image_rows=True)).kind == "ngram"


def test_batch_matching_reports_the_eval_item_and_decode_errors():
    photo = make_photo(7, SIZE)
    index = eval_index_with(photo)
    rows = [row(encode(make_photo(8, SIZE))), row(encode(photo, "JPEG", quality=85)), row(b"broken")]
    kept, copy, broken = index.match_rows(rows)
    assert kept is None and isinstance(broken, Rejection)
    assert (copy.kind, copy.eval_item, copy.to_dict()["eval_set"]) == ("phash", "validation#0/image", "mmmu")
    cache = FingerprintCache(size=2)
    prints = fingerprint_rows(rows + rows, cache=cache)  # repeated images are decoded once
    assert prints[:2] == prints[3:5] and isinstance(prints[5], Rejection)
    again = index.match_fingerprinted(rows, prints[:3])
    assert again[:2] == [kept, copy] and isinstance(again[2], Rejection)


def test_eval_sets_from_parquet_hf_folder_and_image_folder(tmp_path):
    photos = [make_photo(20 + number, SIZE) for number in range(4)]
    # 1. the_cauldron parquet
    question = "Which option is the capital of France? Paris London Rome Berlin"
    write_cauldron_parquet([row(encode(photos[0]), text=question)], tmp_path / "cauldron_eval" / "test-00000.parquet")
    # 2. a HF dataset folder with a split, an Image column and a text column
    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string")})
    split = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": encode(photos[1]), "path": None}],
            "question": ["How many red marbles remain after giving away three of the seven marbles?"],
        },
        features=features,
    )
    datasets.DatasetDict({"validation": split}).save_to_disk(str(tmp_path / "hf_eval"))
    # 3. an image folder
    (tmp_path / "folder_eval" / "sub").mkdir(parents=True)
    (tmp_path / "folder_eval" / "sub" / "q1.jpg").write_bytes(encode(photos[2], "JPEG", quality=90))
    (tmp_path / "folder_eval" / "notes.txt").write_text("not an image")

    index = build_eval_index({"cauldron": tmp_path / "cauldron_eval", "hf": tmp_path / "hf_eval", "folder": tmp_path / "folder_eval"})
    assert index.image_count == 3 and index.skipped == []
    found = [index.match_row(row(encode(photo.resize((200, 150)), "JPEG", quality=75))) for photo in photos]
    assert [(matched(m).eval_set, matched(m).eval_item) for m in found[:3]] == [
        ("cauldron", "test-00000.parquet#0/images[0]"),
        ("hf", "validation#0/image"),
        ("folder", "sub/q1.jpg"),
    ]
    assert found[3] is None
    text = matched(index.match_row(text_row("Tell me: how many red marbles remain after giving away three of the seven marbles?")))
    assert (text.eval_set, text.eval_item) == ("hf", "validation#0/question")
    cauldron_text = matched(index.match_row(text_row("x", question)))
    assert cauldron_text.eval_item == "test-00000.parquet#0/texts[0].user"


def test_the_index_digest_follows_content_not_paths(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "q1.png").write_bytes(encode(make_photo(1)))
    first = build_eval_index({"evals": tmp_path / "a"}).digest()
    assert build_eval_index({"evals": tmp_path / "b"}).digest() == first  # moved, same content
    assert build_eval_index({"other": tmp_path / "b"}).digest() != first  # matches name another set
    assert build_eval_index({"evals": tmp_path / "b"}, phash_threshold=2).digest() != first
    (tmp_path / "b" / "q1.png").write_bytes(encode(make_photo(2)))  # edited in place
    assert build_eval_index({"evals": tmp_path / "b"}).digest() != first
    (tmp_path / "b" / "q1.png").write_bytes(b"broken")
    assert build_eval_index({"evals": tmp_path / "b"}).digest() != first


def write_eval_parquet_with_paths(folder, photo):
    """An eval parquet whose images are stored as paths only: one next to it, one outside the eval set."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "images").mkdir(parents=True)
    (folder / "images" / "q1.png").write_bytes(encode(photo))
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = pa.array([{"bytes": None, "path": "images/q1.png"}, {"bytes": None, "path": "../outside.png"}], type=struct)
    pq.write_table(pa.table({"image": images}), folder / "test.parquet")


def test_eval_images_stored_as_paths_are_read_from_the_eval_set(tmp_path):
    photo = make_photo(3)
    (tmp_path / "outside.png").write_bytes(encode(make_photo(4)))
    write_eval_parquet_with_paths(tmp_path / "evals", photo)
    index = build_eval_index({"quiz": tmp_path / "evals"})
    assert index.image_count == 1
    assert [(item, reason.split(":")[0]) for _, item, reason in index.skipped] == [("test.parquet#1/image", "image_bytes_missing")]
    assert matched(index.match_row(row(encode(photo, "JPEG", quality=90)))).eval_item == "test.parquet#0/image"


def test_flat_images_match_by_exact_pixels_only():
    white, dark = Image.new("L", (64, 48), 255), Image.new("L", (64, 48), 29)
    assert hamming(phash(white), phash(dark)) <= 8  # the collision: rounding noise sets a flat image's bits
    page = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(page).text((20, 20), "one short line", fill="black")  # nearly blank: flat at pHash scale
    index = eval_index_with(white, page)
    for other in (dark, Image.new("RGB", (80, 60), (250, 250, 250)), white.resize((128, 96)), Image.new("RGB", (400, 300), "white")):
        assert index.match_row(row(encode(other))) is None
    assert matched(index.match_row(row(encode(white.convert("RGB"), "BMP")))).kind == "exact_pixels"
    assert matched(index.match_row(row(encode(page)))).kind == "exact_pixels"
    photo = make_photo(7, SIZE)  # images with structure still match by pHash
    assert matched(eval_index_with(white, photo).match_row(row(encode(photo, "JPEG", quality=80)))).kind == "phash"
