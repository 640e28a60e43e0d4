"""`curate pdfs --step`: the user's filter runs on every rendered page; its drops are ledger rows under its
stage, the accounting still balances, and the step's settings key the run."""

import json

import pytest
import webdataset as wds

from curation.ledger import read_ledger
from pipelines.cli import main as curate
from tests.fixtures.pdf_writer import SyntheticPage, build_pdf

pytestmark = pytest.mark.slow

MIN_WORDS = 'examples.custom_step:MinWords:{"min_words": %d}'


def run(tmp_path, *steps: str) -> dict:
    argv = ["pdfs", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--max-side", "300", *steps]
    assert curate(argv) == 0
    return json.loads((tmp_path / "out" / "report.json").read_text())


def test_a_page_filter_from_the_command_line_drops_pages_into_the_ledger(tmp_path, ray_session):
    folder = tmp_path / "in"
    folder.mkdir()
    long_page = SyntheticPage(lines=["this page has quite a few words on it"])
    short_page = SyntheticPage(lines=["two words"])
    (folder / "a.pdf").write_bytes(build_pdf([long_page, short_page]))
    (folder / "b.pdf").write_bytes(build_pdf([short_page]))

    report = run(tmp_path, "--step", MIN_WORDS % 5)
    counts = report["counts"]
    assert counts["balanced"] and (counts["input"], counts["kept"], counts["dropped"]) == (3, 1, 2)
    rows = read_ledger(sorted((tmp_path / "out" / "ledger").glob("*.parquet"))).to_pylist()
    assert sorted((r["id"], r["stage"], r["reason"]) for r in rows) == [
        ("a_p00001", "custom", "too_few_words"),
        ("b_p00000", "custom", "too_few_words"),
    ]
    shards = sorted(str(p) for p in (tmp_path / "out" / "shards").glob("*.tar"))
    kept = [sample["txt"].decode() for sample in wds.WebDataset(shards, shardshuffle=False)]
    assert kept == ["this page has quite a few words on it"]

    assert run(tmp_path, "--step", MIN_WORDS % 5)["resumed_partitions"] == 1  # same step: nothing to redo
    again = run(tmp_path, "--step", MIN_WORDS % 1)  # another setting: the partition is written again
    assert again["resumed_partitions"] == 0 and again["counts"]["kept"] == 3
