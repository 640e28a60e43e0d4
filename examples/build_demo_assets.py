"""Rebuild the bundled demo assets: the tiny perplexity LM and the OBELICS-format sample.

    python -m examples.build_demo_assets            # everything (about 3 minutes on 2 cores)
    python -m examples.build_demo_assets --sample   # only the samples and the random models (seconds)

The sample mixes clean English prose, gibberish and spam documents; some images are on the bundled
do-not-train list (exact URLs and a whole domain); a few rows are malformed on purpose, and one carries
a corrupt image, so the demo shows every kind of ledger entry.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import string
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from examples.assets import english_paragraphs, train_tiny_lm

HERE = Path(__file__).resolve().parent
OPTED_OUT_DOMAIN = "optout-gallery.example"
SPAM = "buy cheap best price click here free shipping limited offer discount now subscribe win".split()


def _png(rng: random.Random, size: int = 32) -> bytes:
    image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _gibberish(rng: random.Random, words: int) -> str:
    return " ".join("".join(rng.choices(string.ascii_lowercase + "zxqj", k=rng.randint(2, 11))) for _ in range(words))


def _spam(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(SPAM) for _ in range(words)).capitalize() + "!!!"


def _document(rng: random.Random, doc_no: int, kind: str, prose: list[str], with_bytes: bool) -> tuple[dict, list[str]]:
    if kind == "prose":
        paragraphs = rng.sample(prose, rng.randint(2, 3))
    elif kind == "gibberish":
        paragraphs = [_gibberish(rng, rng.randint(30, 60)) for _ in range(2)]
    else:
        paragraphs = [_spam(rng, rng.randint(30, 60)) for _ in range(2)]
    texts: list[str | None] = []
    images: list[str | bytes | None] = []
    metadata: list[dict[str, object] | None] = []
    listed: list[str] = []
    for i, paragraph in enumerate(paragraphs):
        host = f"img{rng.randrange(5)}.photos.example"
        roll = rng.random()
        if roll < 0.03:
            host = OPTED_OUT_DOMAIN
        url = f"https://{host}/{doc_no:04d}/{i}.jpg"
        if roll > 0.97:
            listed.append(url)
        texts.append(None)
        images.append(_png(rng) if with_bytes else url)
        metadata.append(
            {"src": url, "alt_text": f"picture {i}", "original_width": 32, "original_height": 32, "format": "png" if with_bytes else "jpg"}
        )
        texts.append(paragraph)
        images.append(None)
        metadata.append(None)
    row = {
        "texts": texts,
        "images": images,
        "metadata": json.dumps(metadata),
        "general_metadata": json.dumps(
            {
                "url": f"https://site{doc_no % 17}.example/page/{doc_no}",
                "warc_filename": "demo.warc.gz",
                "warc_record_offset": doc_no * 1000,
                "warc_record_length": 1000,
            }
        ),
    }
    return row, listed


def _malformed_rows(rng: random.Random) -> list[dict]:
    ok_meta = json.dumps([{"src": "https://img0.photos.example/x.jpg"}, None])
    general = json.dumps({"url": "https://broken.example/"})
    return [
        {"texts": ["a", None], "images": [None], "metadata": ok_meta, "general_metadata": general},  # unequal lengths
        {"texts": ["both", "set"], "images": ["https://img0.photos.example/b.jpg", None], "metadata": ok_meta, "general_metadata": general},
        {
            "texts": [None, "text"],
            "images": ["https://img0.photos.example/c.jpg", None],
            "metadata": "{not json",
            "general_metadata": general,
        },
        {"texts": [], "images": [], "metadata": "[]", "general_metadata": general},  # empty document
    ]


def build_obelics_sample(output: Path, documents: int = 320, partitions: int = 4, seed: int = 0) -> None:
    rng = random.Random(seed)
    prose = english_paragraphs()
    output.mkdir(parents=True, exist_ok=True)
    listed_urls: list[str] = []
    per_partition = documents // partitions
    for part in range(partitions):
        rows = []
        with_bytes = part == partitions - 1  # the last partition carries image bytes instead of URLs
        for j in range(per_partition):
            doc_no = part * per_partition + j
            kind = rng.choices(["prose", "gibberish", "spam"], weights=[0.86, 0.07, 0.07])[0]
            row, listed = _document(rng, doc_no, kind, prose, with_bytes)
            rows.append(row)
            listed_urls.extend(listed)
        if part == 0:
            rows.extend(_malformed_rows(rng))
        if with_bytes:
            rows[0]["images"][0] = b"\x89PNG\r\n\x1a\n truncated"  # a corrupt image: removed, ledgered
        table = pa.Table.from_pylist(
            rows,
            schema=pa.schema(
                [
                    ("texts", pa.list_(pa.string())),
                    ("images", pa.list_(pa.binary() if with_bytes else pa.string())),
                    ("metadata", pa.string()),
                    ("general_metadata", pa.string()),
                ]
            ),
        )
        pq.write_table(table, output / f"part-{part:05d}.parquet")
    dnt = ["# Demo do-not-train list: exact image URLs and whole domains", OPTED_OUT_DOMAIN, *listed_urls]
    (output.parent / "do_not_train.txt").write_text("\n".join(dnt) + "\n")


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 32, "heads": 2, "layers": 1},
}


def build_nsfw_models(output: Path, seed: int = 0) -> None:
    """A tiny random open_clip architecture (as a model-config JSON) and a random NSFW head for it."""
    import torch

    from curation.pairs.nsfw_head import HeadSpec, NsfwHead, save_head

    output.mkdir(parents=True, exist_ok=True)
    (output / "tiny-clip.json").write_text(json.dumps(TINY_CLIP, indent=2) + "\n")
    torch.manual_seed(seed)
    save_head(NsfwHead(HeadSpec((32, 16, 1), ("relu", "sigmoid"), input_norm=False)), output / "tiny-nsfw-head.safetensors")


def build_pairs_sample(output: Path, pairs: int = 120, seed: int = 0) -> None:
    """PMD-style pairs with image bytes and both captions; a few broken rows on purpose."""
    rng = random.Random(seed)
    prose = english_paragraphs()
    rows = []
    for i in range(pairs):
        size = (rng.randint(48, 160), rng.randint(48, 160))
        image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        for _ in range(4):
            x, y = rng.randrange(size[0]), rng.randrange(size[1])
            image.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, min(size[0], x + 20), min(size[1], y + 20)))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        sentence = rng.choice(prose).split(". ")[0][:120]
        rows.append(
            {
                "image": buffer.getvalue(),
                "TEXT": f"img_{i:04d}.jpg",
                "top_caption": sentence,
                "URL": f"https://img{i % 5}.photos.example/{i}.jpg",
            }
        )
    rows[3]["image"] = b"\xff\xd8\xff truncated jpeg"
    rows[7]["image"] = b""
    rows[11]["top_caption"] = "spam " * 2000  # over the caption cap
    output.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), output / "pairs-00000.parquet")


def _photo(rng: random.Random, size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A photo-like image: a smooth colour gradient with a few shapes (distinct perceptual hashes)."""
    from PIL import ImageDraw

    width, height = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    tint = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    image = Image.blend(image, tint, 0.6)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.randrange(width - 20), rng.randrange(height - 20)
        draw.ellipse((x, y, x + rng.randint(10, 40), y + rng.randint(10, 40)), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def _encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def build_cauldron_sample(output: Path, seed: int = 0) -> None:
    """Raw sources in their Hub layouts (VQAv2, AI2D, OpenHermes) and an eval image folder.

    Every VQAv2 image carries three questions (merged into one row by the build); the eval folder holds a
    resized JPEG re-encoding of one VQAv2 image, which the build removes as an eval duplicate.
    """
    rng = random.Random(seed)
    raw = output / "raw"
    photos = [_photo(rng) for _ in range(8)]
    colours = ["red", "blue", "green", "white", "black"]
    vqav2 = []
    for i, photo in enumerate(photos):
        for q, question in enumerate(["what color is the ball?", "is there a cat?", "how many balls are there?"]):
            answer = [rng.choice(colours), rng.choice(["yes", "no"]), str(rng.randint(1, 4))][q]
            vqav2.append(
                {
                    "question_type": question.split()[0],
                    "multiple_choice_answer": answer,
                    "question": question,
                    "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": k} for k in range(1, 4)],
                    "image_id": i,
                    "answer_type": "other",
                    "question_id": i * 10 + q,
                    "image": {"bytes": _encoded(photo), "path": None},
                }
            )
    ai2d = []
    for i in range(10):
        options = rng.sample(["fox", "rabbit", "hawk", "sun", "grass", "owl"], 4)
        ai2d.append(
            {
                "question": f"Which of these is part of food web {i}?",
                "options": options,
                "answer": str(rng.randrange(4)),
                "image": {"bytes": _encoded(_photo(rng)), "path": None},
            }
        )
    prose = english_paragraphs()
    hermes = [
        {
            "conversations": [{"from": "human", "value": f"Explain this, please: {p.split('. ')[0]}."}, {"from": "gpt", "value": p}],
            "source": "demo",
        }
        for p in rng.sample(prose, 12)
    ]
    for name, rows in (("vqav2", vqav2), ("ai2d", ai2d), ("openhermes", hermes)):
        (raw / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), raw / name / "train-00000.parquet")
    evals = output / "evals" / "mmmu"
    evals.mkdir(parents=True, exist_ok=True)
    copy = photos[2].resize((100, 75))
    (evals / "leaked_copy.jpg").write_bytes(_encoded(copy, "JPEG", quality=70))
    (evals / "unrelated.png").write_bytes(_encoded(_photo(rng)))
    (output / "demo_mixture.yaml").write_text(
        "# A small mixture for the demo: target shares of answer tokens, in percent.\n"
        "name: demo\nunit: percent\ndatasets:\n  vqav2: 30\n  ai2d: 20\n  openhermes: 50\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", action="store_true", help="only rebuild the OBELICS sample")
    args = parser.parse_args()
    build_obelics_sample(HERE / "obelics")
    build_pairs_sample(HERE / "pairs")
    build_cauldron_sample(HERE / "cauldron")
    build_nsfw_models(HERE / "models")
    print(f"wrote {HERE / 'obelics'}, {HERE / 'do_not_train.txt'}, {HERE / 'pairs'} and the tiny CLIP/NSFW head")
    if not args.sample:
        print("training the tiny perplexity LM on Python's documentation prose ...")
        train_tiny_lm(HERE / "models" / "tiny-falcon", steps=600)
        print(f"wrote {HERE / 'models' / 'tiny-falcon'}")


if __name__ == "__main__":
    main()
