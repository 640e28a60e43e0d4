"""`curate obelics` with the user's own steps: their drops are in the ledger, and the run fingerprint follows them."""

import json

import pytest
import webdataset as wds

from curation.ledger import read_ledger
from pipelines.cli import main as curate
from tests.pipelines.obelics_data import BLOCKED, write_partitions

pytestmark = pytest.mark.slow


def run(tmp_path, tiny_lm, *steps: str) -> dict:
    argv = [
        "obelics",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--ppl-model",
        str(tiny_lm),
        "--drop-top-ppl",
        "0.1",
        "--do-not-train",
        str(tmp_path / "dnt.txt"),
        "--images",
        "keep-urls",
        *steps,
    ]
    assert curate(argv) == 0
    return json.loads((tmp_path / "out" / "report.json").read_text())


def ledger(tmp_path) -> list[dict]:
    return read_ledger(sorted((tmp_path / "out" / "ledger").glob("*.parquet"))).to_pylist()


def kept_texts(tmp_path) -> list[str]:
    urls = sorted(str(p) for p in (tmp_path / "out" / "shards").glob("*.tar"))
    return [" ".join(t for t in json.loads(s["json"])["texts"] if t) for s in wds.WebDataset(urls, shardshuffle=False)]


def test_a_step_from_the_command_line_drops_into_the_ledger_and_keys_the_run(tmp_path, tiny_lm, ray_session):
    facts = write_partitions(tmp_path / "in")
    (tmp_path / "dnt.txt").write_text(f"{BLOCKED}\n")
    first = run(tmp_path, tiny_lm, "--step", 'examples.custom_step:MinWords:{"min_words": 30}')
    short = [row for row in ledger(tmp_path) if row["reason"] == "too_few_words"]
    assert short and all(row["stage"] == "custom" for row in short)
    assert all(int(row["detail"].split()[0]) < 30 for row in short)
    assert all(len(text.split()) >= 30 for text in kept_texts(tmp_path))
    assert first["counts"]["balanced"] and first["counts"]["input"] == facts["input"]

    again = run(tmp_path, tiny_lm, "--step", 'examples.custom_step:MinWords:{"min_words": 30}')
    assert again["resumed_partitions"] == 3 and again["scoring"]["scored"] == 0

    (tmp_path / "steps.yaml").write_text(
        "- step: examples.custom_step:MinWords\n  args: {min_words: 30}\n"
        "- step: examples.custom_step:BlockedWords\n  args: {words: [interpreter]}\n"
    )
    changed = run(tmp_path, tiny_lm, "--steps-file", str(tmp_path / "steps.yaml"))
    assert changed["resumed_partitions"] == 0  # a new step: every partition is written again
    assert changed["scoring"]["scored"] == 0  # a filter changes no text: the perplexity scores are reused
    assert changed["dropped_by_reason"]["blocked_word"] > 0 and changed["counts"]["balanced"]
    assert not any("interpreter" in text.lower() for text in kept_texts(tmp_path))


def test_a_bad_step_is_one_line_before_any_work(tmp_path, tiny_lm, capsys):
    write_partitions(tmp_path / "in", partitions=1, docs=3)
    (tmp_path / "dnt.txt").write_text("")
    argv = [
        "obelics",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--ppl-model",
        str(tiny_lm),
        "--step",
        'examples.custom_step:MinWords:{"words": 3}',
    ]
    assert curate(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("curate obelics: error: step examples.custom_step:MinWords: bad arguments") and "Traceback" not in err
    assert not (tmp_path / "out").exists()
