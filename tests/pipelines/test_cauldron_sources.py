"""Every adapter through `curate cauldron build`, on sources in their published layouts and types."""

import json
from collections import Counter

import datasets
import pyarrow.parquet as pq
import pytest

from cauldron.schema import CAULDRON_FEATURES
from curation.ledger import read_ledger
from pipelines.cli import main

from .cauldron_sources import build_sources, source_arguments

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("sources")
    sources = build_sources(root)
    out = root / "built"
    code = main(["cauldron", "build", *source_arguments(root, sources), "--output", str(out), "--num-cpus", "2"])
    report = json.loads((out / "report.json").read_text())
    ledger = read_ledger(sorted((out / "ledger").glob("*.parquet"))).to_pylist()
    return code, out, report, ledger


def rows(out, subset):
    table = datasets.load_dataset("parquet", data_files=str(out / subset / "*.parquet"), split="train")
    assert table.features == CAULDRON_FEATURES
    return [{"images": row["images"], "texts": row["texts"]} for row in table]


def answers(out, subset):
    return [[turn["assistant"] for turn in row["texts"]] for row in rows(out, subset)]


def reasons(ledger, subset):
    return Counter(entry["reason"] for entry in ledger if entry["partition"] == subset)


def test_the_build_succeeds_and_accounts_for_every_row(built):
    code, _, report, _ = built
    assert code == 0
    assert report["counts"]["balanced"] and report["partitions"] == 23


def test_nlvr2_class_labels_keep_their_meaning(built):
    _, out, _, _ = built
    turns = {row["texts"][0]["user"]: row["texts"][0]["assistant"] for row in rows(out, "nlvr2")}
    assert [answer for user, answer in sorted(turns.items()) if "two dogs" in user] == ["Yes."]  # label True is stored as 0
    assert [answer for user, answer in sorted(turns.items()) if "no dogs" in user] == ["No."]
    assert all(len(row["images"]) == 2 for row in rows(out, "nlvr2"))


def test_vqav2_test_rows_are_refused_not_answered_none(built):
    _, out, report, ledger = built
    assert answers(out, "vqav2") == [["Red.", "Yes."], ["2."]] or sorted(answers(out, "vqav2")) == [["2."], ["Red.", "Yes."]]
    assert "None." not in json.dumps(answers(out, "vqav2"))
    assert reasons(ledger, "vqav2") == {"null_field": 1, "merged_by_image": 1}
    files = report["details"]["vqav2 files"]
    assert "testdev-00000-of-00001.parquet (evaluation split in the file name ('testdev'))" in files["refused"]
    assert "data/train-00000-of-00001.parquet (3 rows)" in files["read"]


def test_images_saved_as_paths_are_read_or_explained(built):
    _, out, _, ledger = built
    assert answers(out, "vqav2_paths") == [["A cat."]]
    (missing,) = [e for e in ledger if e["partition"] == "vqav2_paths"]
    assert missing["reason"] == "image_bytes_missing" and "COCO_train2014_000000000006.jpg" in missing["detail"]
    assert "save_to_disk" in missing["detail"]


def test_hub_layouts_of_each_adapter(built):
    _, out, _, ledger = built
    assert answers(out, "textvqa") == [["nokia"]]
    assert reasons(ledger, "textvqa") == {"eval_split_row": 1}  # set_name "val"
    assert answers(out, "docvqa") == [["May 5, 1999"]]
    assert answers(out, "chartqa") == [["2019"]]
    assert answers(out, "scienceqa") == [["Answer: B"]] and reasons(ledger, "scienceqa") == {"no_image": 1}
    assert answers(out, "ocrvqa") == [["Jane Doe", "No"]]
    assert answers(out, "textcaps")[0][0] in {"A sign says OPEN.", "An OPEN sign."}
    assert answers(out, "websight") == [["<html>\n  <body>hi</body>\n</html>"]]
    assert rows(out, "cocoqa")[0]["texts"] == [{"user": "What is shown?", "assistant": "A chart.", "source": "cocoqa"}]


def test_release_layouts(built):
    _, out, report, ledger = built
    assert answers(out, "chartqa_release") == [["62"]]
    # neither annotations/*.json nor the test split's test_human.json is read
    assert report["details"]["chartqa_release files"] == {"read": "train/train_human.json (1 rows)"}
    assert answers(out, "ai2d") == [["Answer: B"]]
    (listed,) = [e for e in ledger if e["partition"] == "ai2d"]
    assert listed["reason"] == "eval_split_row" and "ai2d_test_ids.csv" in listed["detail"]


def test_url_only_images_are_ledgered_without_fetch(built):
    _, _, _, ledger = built
    for subset in ("localized_narratives", "nlvr2_urls"):
        (entry,) = [e for e in ledger if e["partition"] == subset]
        assert entry["reason"] == "image_url_not_fetched" and "--fetch-images" in entry["detail"]


def test_text_only_sets_as_released(built):
    _, out, report, _ = built
    assert rows(out, "openhermes")[0]["texts"] == [{"user": "Be brief.\n\nName a prime.", "assistant": "7", "source": "openhermes"}]
    assert answers(out, "lima") == [["Hello"]] and "test.jsonl" in report["details"]["lima files"]["refused"]
    assert answers(out, "dolly") == [["Short."]]
    assert answers(out, "metamathqa") == [["2+2=4.\nThe answer is: 4"]]
    assert answers(out, "mathinstruct") == [["It is 3."]]
    assert answers(out, "orca_math") == [["9"]]
    assert answers(out, "camel_ai_math") == [["x = 1"]]
    assert answers(out, "goat") == [["12 + 30 = 42"]]
    assert all(row["images"] == [] for row in rows(out, "goat"))


def test_output_parquet_streams_in_row_groups(built):
    _, out, _, _ = built
    assert pq.ParquetFile(out / "vqav2" / "train-00000-of-00001.parquet").metadata.num_rows == 2
