"""`curate cauldron build` over the hostile corpus: every bad row ledgered, no traceback, one bad file
never stops the others, and a wholly unusable file is a one-line error naming it."""

import json
import os
import shutil
from collections import Counter

import pyarrow.parquet as pq
import pytest

from curation.ledger import read_ledger
from pipelines.cli import main
from tests.ledger_reasons import undocumented_pairs

from .cases import CORPUS, EXPECTED, SOURCES, UNUSABLE, dolly

pytestmark = pytest.mark.slow


def test_cauldron_build_survives_the_hostile_corpus(tmp_path, capsys, ray_session):
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    odd = os.fsencode(corpus / "odd_name") + b"/caf\xe9 \xff.jsonl"  # a file name that is not UTF-8
    os.makedirs(os.path.dirname(odd))
    with open(odd, "wb") as handle:
        handle.write(dolly(1))
    sources = [*(f"{name}:{adapter}={corpus / name}" for name, adapter in SOURCES.items()), f"odd_name:dolly={corpus / 'odd_name'}"]
    out = tmp_path / "out"
    code = main(
        [
            "cauldron",
            "build",
            *[arg for s in sources for arg in ("--source", s)],
            "--eval",
            f"hostile={corpus / 'evals'}",
            "--output",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("curate")]  # the rest is progress bars
    assert "Traceback" not in err and len(errors) == 1
    for name in UNUSABLE:
        assert f"source {name}: " in errors[0] and str(corpus / name) in errors[0]

    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["balanced"]
    ledger = read_ledger(sorted((out / "ledger").glob("*.parquet"))).to_pylist()
    assert not undocumented_pairs({(e["stage"], e["reason"]) for e in ledger}), "see the ledger table of docs/formats.md"
    for name, (kept, reasons) in {**EXPECTED, "odd_name": (1, {})}.items():
        manifest = json.loads((out / "manifests" / f"{name}.manifest.json").read_text())
        assert manifest["count"] == kept, name
        got = Counter(e["reason"] for e in ledger if e["partition"] == name)
        got.pop("merged_by_image", None)  # some modes decode to the same RGBA pixels (RGB and RGBA, ...)
        assert got == reasons, name
        assert pq.ParquetFile(out / name / "train-00000-of-00001.parquet").metadata.num_rows == kept
    for name in UNUSABLE:
        assert not (out / "manifests" / f"{name}.manifest.json").exists()
