"""The registry's per-subset commands: every dataset documents its train split and a --source; the prepare
commands, run verbatim on miniature copies of the release files, give sources that `cauldron build` reads."""

import json
import shlex
import shutil
import subprocess
import zipfile

import pyarrow.parquet as pq
import pytest

from cauldron.registry import load_registry
from curation.ledger import read_ledger
from pipelines.cauldron import SourceSpec
from pipelines.cli import main

from .cauldron_sources import png


def test_every_dataset_documents_a_train_split_and_a_source_argument():
    for info in load_registry():
        source = info.source
        assert source is not None and source.split == "train", info.name
        assert source.commands(info.name) and (source.hub or source.urls), info.name
        argument = source.source_argument(info.name, info.adapter)
        spec = SourceSpec.parse(shlex.split(argument)[1])
        assert spec.name == info.name and spec.adapter == (info.adapter or info.name)


def prepare(tmp_path, name):
    """Run the registry's prepare command for `name` in tmp_path (where `raw/<name>/` holds the downloads)."""
    source = load_registry()[name].source
    assert source is not None
    command = source.commands(name)[-1]
    subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True)


def zip_with(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


needs_tools = pytest.mark.skipif(not (shutil.which("jq") and shutil.which("unzip")), reason="needs jq and unzip")


@needs_tools
@pytest.mark.slow
def test_release_files_become_sources(tmp_path, monkeypatch, ray_session):
    raw = tmp_path / "raw"
    vqa = raw / "vqav2"
    vqa.mkdir(parents=True)
    questions = {
        "info": {},
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "data_subtype": "train2014",
        "questions": [
            {"image_id": 9, "question": "What color is the cat?", "question_id": 90},
            {"image_id": 9, "question": "Is it sleeping?", "question_id": 91},
        ],
    }
    annotations = {
        "info": {},
        "license": {},
        "data_subtype": "train2014",
        "annotations": [
            {
                "question_type": "what color",
                "multiple_choice_answer": "white",
                "image_id": 9,
                "answer_type": "other",
                "question_id": 90,
                "answers": [{"answer": "white", "answer_confidence": "yes", "answer_id": 1}],
            },
            {
                "question_type": "is it",
                "multiple_choice_answer": "yes",
                "image_id": 9,
                "answer_type": "yes/no",
                "question_id": 91,
                "answers": [{"answer": "yes", "answer_confidence": "yes", "answer_id": 1}],
            },
        ],
    }
    zip_with(vqa / "v2_Questions_Train_mscoco.zip", {"v2_OpenEnded_mscoco_train2014_questions.json": json.dumps(questions)})
    zip_with(vqa / "v2_Annotations_Train_mscoco.zip", {"v2_mscoco_train2014_annotations.json": json.dumps(annotations)})
    zip_with(vqa / "train2014.zip", {"train2014/COCO_train2014_000000000009.jpg": png(9)})
    prepare(tmp_path, "vqav2")

    ai2d = raw / "ai2d"
    ai2d.mkdir()
    question = {
        "imageName": "{n}.png",
        "questions": {
            "Which eats grass?": {"abcLabel": False, "answerTexts": ["fox", "rabbit"], "correctAnswer": 1, "questionId": "{n}.png-0"}
        },
    }
    members: dict[str, str | bytes] = {f"ai2d/questions/{n}.png.json": json.dumps(question).replace("{n}", str(n)) for n in (0, 1)}
    members.update({f"ai2d/images/{n}.png": png(40 + n) for n in (0, 1)})
    members["ai2d/annotations/0.png.json"] = json.dumps({"text": {}})
    zip_with(ai2d / "ai2d-all.zip", members)
    (ai2d / "ai2d_test_ids.csv").write_text("1\n")
    prepare(tmp_path, "ai2d")

    narratives = raw / "localized_narratives" / "data"
    narratives.mkdir(parents=True)
    (narratives / "ln_open_images_train_v6_captions_multi.jsonl").write_text(
        json.dumps({"dataset_id": "open_images", "image_id": "0a1b", "annotator_id": 3, "caption": "A dog.", "original_caption": "A dog."})
        + "\n"
    )
    prepare(tmp_path, "localized_narratives")

    registry = load_registry()
    sources = {name: registry[name].source for name in ("vqav2", "ai2d", "localized_narratives")}
    arguments = []
    for name, source in sources.items():
        assert source is not None
        arguments += shlex.split(source.source_argument(name, registry[name].adapter))[:2]
    monkeypatch.chdir(tmp_path)
    assert main(["cauldron", "build", *arguments, "--output", "out"]) == 0
    (row,) = pq.read_table(tmp_path / "out" / "vqav2" / "train-00000-of-00001.parquet").to_pylist()
    assert [t["assistant"] for t in row["texts"]] == ["White.", "Yes."] and row["images"][0]["bytes"] == png(9)
    (diagram,) = pq.read_table(tmp_path / "out" / "ai2d" / "train-00000-of-00001.parquet").to_pylist()
    assert diagram["images"][0]["bytes"] == png(40)  # diagram 1 is in ai2d_test_ids.csv
    ledger = read_ledger(sorted((tmp_path / "out" / "ledger").glob("*.parquet"))).to_pylist()
    (url_row,) = [e for e in ledger if e["partition"] == "localized_narratives"]
    assert url_row["reason"] == "image_url_not_fetched" and "open-images-dataset/train/0a1b.jpg" in url_row["detail"]
    assert {e["reason"] for e in ledger if e["partition"] == "ai2d"} == {"eval_split_row"}
