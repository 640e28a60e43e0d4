"""Every shard kind the `curate` commands write loads whole in webdataset, datasets and Ray Data.

The shards come from the CLI itself; each library is driven by the reader snippets in docs/formats.md
(executed as written), and what it returns is compared, key by key, with our own reader: every sample
the manifests count, every image byte for byte (Ray decodes `.jpg`/`.png` members, so there the pixel
size is compared), every JSON member as written.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cauldron.sft_shards import row_to_sample, sample_to_row
from curation.image_tar import IMAGES_MEMBER
from curation.interleaved_format import sample_to_document
from curation.shards import PartitionShardWriter, iter_tar_samples
from pipelines.cli import main as curate
from tests.pipelines.curate_inputs import encoded, write_obelics, write_pdfs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SINGLE_IMAGE = {"pairs": "jpg", "pdfs": "png"}  # the image member each run below writes


def write_pairs_input(folder: Path) -> None:
    """Pairs whose first rows have no alt text (null in the JSON of the first samples)."""
    folder.mkdir()
    rows = [
        {
            "image": encoded(i, "PNG" if i % 2 else "JPEG", (30 + i, 20)),
            "TEXT": f"alt {i}" if i >= 6 else None,
            "top_caption": f"a synthetic caption {i}",
            "punsafe": i / 20,
        }
        for i in range(16)
    ]
    pq.write_table(pa.Table.from_pylist(rows), folder / "pairs.parquet")


def write_multi_image_sft(folder: Path) -> None:
    """Conversations with 0 to 3 images (`cauldron mix` of the bundled sample has at most one)."""
    writer = PartitionShardWriter(folder, "multi", samples_per_shard=5)
    for i in range(12):
        row = {
            "images": [encoded(7 * i + k, ("PNG", "JPEG")[k % 2]) for k in range(i % 4)],
            "texts": [{"user": f"Question {i}?", "assistant": f"Answer {i}.", "source": "synthetic"}],
        }
        writer.write(row_to_sample(f"row-{i}", row, dataset="synthetic"))
    writer.close()


def run(argv: list[str]) -> None:
    assert curate(argv) == 0, argv


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory, ray_session) -> dict[str, Path]:
    """kind -> folder of shards and manifests, each written by its `curate` command (sft-multi by the writer)."""
    root = tmp_path_factory.mktemp("curated")
    model = str(EXAMPLES / "models" / "tiny-falcon")
    write_obelics(root / "obelics-in", url_only_first=6)
    run(
        [
            "obelics",
            "--input",
            str(root / "obelics-in"),
            "--output",
            str(root / "obelics"),
            "--ppl-model",
            model,
            "--drop-top-ppl",
            "0",
            "--docs-per-shard",
            "5",
        ]
    )
    write_pairs_input(root / "pairs-in")
    run(
        [
            "pairs",
            "--input",
            str(root / "pairs-in"),
            "--output",
            str(root / "pairs"),
            "--nsfw-source",
            "column",
            "--nsfw-threshold",
            "0.9",
            "--samples-per-shard",
            "6",
        ]
    )
    write_pdfs(root / "pdfs-in")
    run(["pdfs", "--input", str(root / "pdfs-in"), "--output", str(root / "pdfs"), "--max-side", "200"])
    cauldron = EXAMPLES / "cauldron"
    run(
        [
            "cauldron",
            "build",
            "--output",
            str(root / "cauldron"),
            *[arg for name in ("vqav2", "openhermes") for arg in ("--source", f"{name}={cauldron / 'raw' / name}")],
        ]
    )
    run(
        [
            "cauldron",
            "mix",
            "--input",
            str(root / "cauldron"),
            "--output",
            str(root / "sft"),
            "--tokenizer",
            model,
            "--config",
            str(cauldron / "demo_mixture.yaml"),
        ]
    )
    write_multi_image_sft(root / "sft-multi")
    return {
        "obelics": root / "obelics" / "shards",
        "pairs": root / "pairs" / "shards",
        "pdfs": root / "pdfs" / "shards",
        "sft": root / "sft" / "shards",
        "sft-multi": root / "sft-multi",
    }


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected(kind: str, folder: Path) -> tuple[dict[str, list], dict[str, dict]]:
    """What our own reader finds: key -> image digests in order, key -> the JSON member."""
    images: dict[str, list] = {}
    records: dict[str, dict] = {}
    for shard in sorted(folder.glob("*.tar")):
        for sample in iter_tar_samples(shard):
            key = sample["__key__"]
            if kind == "obelics":
                found = [digest(i) for i in sample_to_document(sample).images if isinstance(i, bytes)]
            elif kind.startswith("sft"):
                found = [digest(i) for i in sample_to_row(sample)["images"]]
            else:
                found = [digest(sample[SINGLE_IMAGE[kind]])]
            images[key] = found
            records[key] = json.loads(sample["json"])
    manifests = [json.loads(p.read_text()) for p in folder.glob("*.manifest.json")]
    assert len(images) == sum(m["count"] for m in manifests) > 0
    assert sum(map(len, images.values())) > 0
    return images, records


def reader_snippets() -> dict[str, str]:
    """The `# reader: ...` code blocks of docs/formats.md, by the text after `reader:`."""
    text = (ROOT / "docs" / "formats.md").read_text()
    blocks = re.findall(r"```python\n# reader: ([^\n]*)\n(.*?)```", text, flags=re.S)
    return {name.split(" (")[0]: code for name, code in blocks}


def run_snippet(name: str, **names) -> dict:
    namespace = dict(names)
    exec(compile(reader_snippets()[name], f"docs/formats.md: {name}", "exec"), namespace)
    return namespace


def multi_image_digests(images_tar: bytes) -> list[str]:
    unpacked = run_snippet("images.tar")["unpack_images"](images_tar)
    return [digest(unpacked[n]) for n in sorted(unpacked)]


def same_json(got, want) -> bool:
    """Equal JSON, floats within 1e-9 relative: `datasets`' Json() writes floats with 10 significant digits."""
    if isinstance(want, float) and isinstance(got, float):
        return math.isclose(got, want, rel_tol=1e-9)
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(same_json(got[k], want[k]) for k in want)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(map(same_json, got, want))
    return type(got) is type(want) and got == want


KINDS = ["obelics", "pairs", "pdfs", "sft", "sft-multi"]


@pytest.mark.parametrize("kind", KINDS)
def test_webdataset_returns_every_sample_and_image(shard_dirs, kind):
    images, records = expected(kind, shard_dirs[kind])
    shards = sorted(str(p) for p in shard_dirs[kind].glob("*.tar"))
    samples = run_snippet("webdataset", shards=shards)["samples"]
    got = {
        s["__key__"]: (
            multi_image_digests(s[IMAGES_MEMBER]) if kind in ("obelics", "sft", "sft-multi") else [digest(s[SINGLE_IMAGE[kind]])]
        )
        for s in samples
    }
    assert len(samples) == len(images) and got == images
    assert {s["__key__"]: json.loads(s["json"]) for s in samples} == records


def load_with_datasets(kind: str, shards: list[str]):
    if kind in SINGLE_IMAGE:
        rows = run_snippet("datasets, pairs and pages", shards=shards, image=SINGLE_IMAGE[kind])["rows"]
        from datasets import Image as ImageFeature

        return rows.cast_column(SINGLE_IMAGE[kind], ImageFeature(decode=False))  # the stored bytes, not PIL
    return run_snippet("datasets, documents and conversations", shards=shards)["rows"]


@pytest.mark.parametrize("kind", KINDS)
def test_datasets_returns_every_sample_and_image(shard_dirs, kind, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    images, records = expected(kind, shard_dirs[kind])
    shards = sorted(str(p) for p in shard_dirs[kind].glob("*.tar"))
    rows = list(load_with_datasets(kind, shards))
    got = {
        r["__key__"]: (multi_image_digests(r[IMAGES_MEMBER]) if kind not in SINGLE_IMAGE else [digest(r[SINGLE_IMAGE[kind]]["bytes"])])
        for r in rows
    }
    assert len(rows) == len(images) and got == images
    assert same_json({r["__key__"]: r["json"] for r in rows}, records)


@pytest.mark.parametrize("kind", ["obelics", "sft", "sft-multi"])
def test_datasets_without_features_keeps_documents_and_conversations_whole(shard_dirs, kind, tmp_path, monkeypatch):
    """Our multi-image JSON never changes type between samples, so the plain call loads them too."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    images, records = expected(kind, shard_dirs[kind])
    shards = sorted(str(p) for p in shard_dirs[kind].glob("*.tar"))
    rows = list(datasets.load_dataset("webdataset", data_files={"train": shards}, split="train"))
    assert {r["__key__"]: multi_image_digests(r[IMAGES_MEMBER]) for r in rows} == images
    assert {r["__key__"]: r["json"] for r in rows} == records  # no key dropped, no value re-typed


@pytest.mark.parametrize("kind", KINDS)
def test_ray_data_returns_every_sample_and_image(shard_dirs, kind):
    images, records = expected(kind, shard_dirs[kind])
    shards = sorted(str(p) for p in shard_dirs[kind].glob("*.tar"))
    rows = run_snippet("ray", shards=shards)["dataset"].take_all()
    assert len(rows) == len(images)
    if kind in SINGLE_IMAGE:  # decoded to arrays: compare each pixel size with the stored image's
        sizes = {}
        for shard in sorted(shard_dirs[kind].glob("*.tar")):
            for sample in iter_tar_samples(shard):
                width, height = Image.open(io.BytesIO(sample[SINGLE_IMAGE[kind]])).size
                sizes[sample["__key__"]] = (height, width)
        assert {r["__key__"]: tuple(np.asarray(r[SINGLE_IMAGE[kind]]).shape[:2]) for r in rows} == sizes
    else:
        assert {r["__key__"]: multi_image_digests(r[IMAGES_MEMBER]) for r in rows} == images
    assert {r["__key__"]: r["json"] for r in rows} == records
