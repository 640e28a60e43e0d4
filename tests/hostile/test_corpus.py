"""Every `curate` command over the hostile corpus: no traceback, every bad sample ledgered with a reason,
every unusable input named in one line while all the others are processed, and the accounting balanced
once the unusable inputs are gone.

Each test runs over the crafted corpus, and over the real public test files too when the environment
variable POTION_HOSTILE_CORPUS names a folder holding them (see SOURCES.md)."""

import io
import json
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from curation.ledger import read_ledger
from curation.readers import partition_name
from curation.shards import safe_key
from pipelines.cli import main as curate
from tests.hostile.corpus import (
    LONG_KEY,
    REAL_CORPUS_VARIABLE,
    Corpus,
    crafted_corpus,
    obelics_inputs,
    pairs_inputs,
    pdfs_inputs,
    real_corpus,
    real_corpus_folder,
)
from tests.ledger_reasons import undocumented_pairs

MODELS = Path(__file__).parents[2] / "examples" / "models"
SOURCES = Path(__file__).with_name("SOURCES.md")


@pytest.fixture(params=["crafted", "real"])
def corpus(request) -> Corpus:
    if request.param == "crafted":
        return crafted_corpus()
    folder = real_corpus_folder()
    if folder is None:
        pytest.skip(
            f"{REAL_CORPUS_VARIABLE} is not set: the real files the crafted cases were modelled on are not "
            "distributed with the project; point it at a folder laid out as SOURCES.md describes to run over them"
        )
    return real_corpus(folder)


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = curate(argv)
    return code, capsys.readouterr().err


def assert_names_each_unusable_input(code: int, err: str, command: str, unusable: list[str]) -> None:
    message = err.strip().splitlines()[-1]
    assert code == 1 and "Traceback" not in err
    assert message.startswith(f"curate {command}: error: {len(unusable)} partition(s) failed")
    failed = json.loads(Path(message.rsplit(" in ", 1)[1].split(". Fix")[0]).read_text())["failed"]
    assert sorted(failed) == sorted(unusable)
    assert all(": " in why for why in failed.values())  # each says why


def remove_inputs(root: Path, names: list[str]) -> None:
    for path in list(root.rglob("*")):
        relative = str(path.relative_to(root)).replace("/", "_")
        if path.is_file() and relative.split(".")[0] in names:
            path.unlink()


def ledger_rows(output: Path) -> list[dict]:
    """The run's ledger; every stage and reason in it must be a row of the ledger table in docs/formats.md."""
    rows = read_ledger(sorted((output / "ledger").glob("*.parquet"))).to_pylist()
    missing = undocumented_pairs({(row["stage"], row["reason"]) for row in rows})
    assert not missing, f"(stage, reason) missing from the ledger table of docs/formats.md: {missing}"
    return rows


def shard_samples(output: Path) -> list[dict]:
    urls = sorted(str(p) for p in (output / "shards").glob("*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False)) if urls else []


def finish(argv: list[str], root: Path, unusable: list[str], command: str, capsys) -> dict:
    code, err = run(argv, capsys)
    assert_names_each_unusable_input(code, err, command, unusable)
    remove_inputs(root, unusable)
    code, err = run(argv, capsys)
    assert code == 0 and "Traceback" not in err, err[-2000:]
    report = json.loads((Path(argv[argv.index("--output") + 1]) / "report.json").read_text())
    assert report["counts"]["balanced"] and not report["unbalanced_partitions"]
    return report


@pytest.mark.slow
def test_curate_pairs_over_the_corpus(tmp_path, ray_session, capsys, corpus):
    unusable = pairs_inputs(tmp_path / "in", corpus)
    out = tmp_path / "out"
    argv = [
        "pairs",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(out),
        "--input-kind",
        "auto",
        "--clip-model",
        str(MODELS / "tiny-clip.json"),
        "--clip-pretrained",
        "none",
        "--nsfw-head",
        str(MODELS / "tiny-nsfw-head.safetensors"),
        "--drop-top-nsfw",
        "0.05",
        "--image-format",
        "png",
    ]
    report = finish(argv, tmp_path / "in", unusable, "pairs", capsys)
    ledger = {r["id"]: r["reason"] for r in ledger_rows(out)}
    assert {"unreadable_input", "duplicate_id", "bad_metadata", "missing_image", "decode_error", "too_many_pixels"} <= set(ledger.values())
    assert "encode_error" not in ledger.values()  # every colour mode is stored
    assert ledger["images/deep"] == ledger["images/surrogate"] == "bad_metadata"
    assert [r for i, r in ledger.items() if i.startswith("images/img00#sample")] == ["duplicate_id"]
    for damaged in ("truncated", "checksum", "absurd", "appended", "bad-row-group"):
        assert any(i.startswith(f"{damaged}/#") and r == "unreadable_input" for i, r in ledger.items()), damaged
    kept = {json.loads(s["json"])["id"] for s in shard_samples(out)}
    for index, image in enumerate(corpus.images):  # Pillow is the reference for which images are usable
        outcome = "kept" if f"images/img{index:02d}" in kept else ledger[f"images/img{index:02d}"]
        verdict = pillow_verdict(image.data)
        assert outcome in (("kept", "nsfw_top_fraction") if verdict == "decodes" else (verdict,)), (image.name, outcome)
    assert {"images/cmyk", f"images/{LONG_KEY}", "images/caf\\xe9-latin1-name"} <= kept | set(ledger)
    assert report["counts"]["kept"] == len(kept)
    assert_every_readable_tar_accounted_for(corpus, corpus.pairs_tars, tmp_path / "in", out)


def pillow_verdict(data: bytes) -> str:
    """`decodes`, or the ledger reason Pillow's failure must become: `too_many_pixels` for its
    decompression-bomb check, `decode_error` for anything else."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Image.DecompressionBombError:
        return "too_many_pixels"
    except Exception:
        return "decode_error"
    return "decodes"


def decodes(data: bytes) -> bool:
    return pillow_verdict(data) == "decodes"


def assert_every_readable_tar_accounted_for(corpus: Corpus, stems: tuple[str, ...], root: Path, output: Path) -> None:
    """Each crafted tar that is not unusable gives at least one sample (test_craft.py checks it), so its
    partition must have kept or ledgered something. `root` is the input root, holding the tars in tars/."""
    if corpus.kind != "crafted":
        return  # most real tars hold no member a sample is made of
    partitions = {r["partition"] for r in ledger_rows(output)}
    partitions |= {p.name.rsplit("-", 1)[0] for p in (output / "shards").glob("*.tar")}
    for tar in corpus.tars:
        if tar.stem in stems and tar.stem not in corpus.unusable_tars:
            tars = next(root.rglob("tars"))
            assert partition_name(tars / tar.stem, root) in partitions, tar.name


@pytest.mark.slow
def test_curate_obelics_over_the_corpus(tmp_path, ray_session, capsys, corpus):
    unusable = obelics_inputs(tmp_path / "in", corpus)
    out = tmp_path / "out"
    argv = [
        "obelics",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(out),
        "--ppl-model",
        str(MODELS / "tiny-falcon"),
        "--drop-top-ppl",
        "0.1",
        "--ppl-actors",
        "1",
        "--images",
        "keep-urls",
    ]
    report = finish(argv, tmp_path / "in", unusable, "obelics", capsys)
    ledger = {r["id"]: r["reason"] for r in ledger_rows(out)}
    assert {"unreadable_input", "malformed", "duplicate_id", "decode_error", "too_many_pixels"} <= set(ledger.values())
    assert sum(r == "unreadable_input" for i, r in ledger.items() if i.startswith("bad-row-group#row")) == 2
    assert any(i.startswith("truncated#row") and i.endswith("+") and i != "truncated#row0+" for i in ledger)  # a broken stream's rest
    assert report["dropped_by_reason"]["malformed"] >= 2 + 2 + 3  # wrong types, wrong columns, bad JSON/nodes
    kept = {json.loads(s["json"])["id"] for s in shard_samples(out)}
    assert {"same.key", "same_key", "L" * 300, "cmyk"} <= kept | {i for i, r in ledger.items() if r == "ppl_top_fraction"}
    for image in corpus.images:
        outcome = "kept" if f"doc-{image.name}" in kept else ledger[f"doc-{image.name}"]
        verdict = pillow_verdict(image.data)
        assert outcome in (("kept", "ppl_top_fraction") if verdict == "decodes" else (verdict,)), (image.name, outcome)


@pytest.mark.slow
def test_curate_pdfs_over_the_corpus(tmp_path, ray_session, capsys, corpus):
    unusable = pdfs_inputs(tmp_path / "in", corpus)
    out = tmp_path / "out"
    argv = ["pdfs", "--input", str(tmp_path / "in"), "--output", str(out), "--max-side", "120", "--time-limit", "5"]
    code, err = run(argv, capsys)
    assert_names_each_unusable_input(code, err, "pdfs", [f"shards_{n}" for n in unusable])
    remove_inputs(tmp_path / "in", [f"shards_{n}" for n in unusable])
    code, err = run(argv, capsys)
    assert code == 0 and "Traceback" not in err
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["balanced"] and report["resumed_partitions"] > 0
    ledger = {r["id"]: r["reason"] for r in ledger_rows(out)}
    assert {"corrupt_pdf", "unreadable_input", "duplicate_id", "bad_annotation", "no_document", "decode_error"} <= set(ledger.values())
    assert ledger["deep-ocr"] == ledger["surrogate-ocr"] == "bad_annotation"
    pages = shard_samples(out)
    assert len(pages) == report["counts"]["kept"] > 10
    for index, image in enumerate(corpus.images):  # page images in every colour mode render; broken ones are ledgered
        failures = {r for i, r in ledger.items() if i.split("_p0")[0] == f"page{index:02d}"}
        assert failures <= ({"too_many_pixels"} if decodes(image.data) else {"decode_error", "too_many_pixels"}), (image.name, failures)
        assert bool(failures) != decodes(image.data), image.name
    documents = {json.loads(p["json"])["doc_id"] for p in pages} | set(ledger)
    for pdf in corpus.pdfs:  # each kept, or ledgered with its reason as a document or page by page
        doc = f"loose/{pdf.stem}"
        assert doc in documents or any(i.startswith(f"{safe_key(doc)}_p") for i in ledger), pdf.name
    assert_every_readable_tar_accounted_for(corpus, tuple(t.stem for t in corpus.tars), tmp_path / "in", out)


def test_every_case_is_described_in_sources(corpus):
    sources = SOURCES.read_text()
    for named in corpus.images + corpus.pdfs + corpus.tars:
        assert f"`{named.name}`" in sources, named.name
