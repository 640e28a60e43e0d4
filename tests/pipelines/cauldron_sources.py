"""Small copies of The Cauldron's sources in their published layouts, written the way they are published.

Hub datasets are built with the exact `datasets.Features` of their loading scripts or cards and written
by `datasets` itself (`to_parquet`, `save_to_disk`, `to_json`); release files are written as their
releases ship them (JSON arrays, JSON lines, zip of JSON, image folders). Where the features come from:

- VQAv2: HuggingFaceM4/VQAv2's loading script (test and test-dev rows have null answers)
- TextVQA: facebook/textvqa's loading script
- NLVR2: HuggingFaceM4/NLVR2's loading script (`label: ClassLabel(names=["True", "False"])`), and its
  card's URL-only JSON lines (sentence, left_url, right_url, label, identifier)
- Localized Narratives: HuggingFaceM4/LocalizedNarratives' loading script (image_url, no image)
- AI2D: the release `ai2d-all.zip` (questions/<n>.png.json, images/, annotations/) with ai2d_test_ids.csv
- ChartQA: HuggingFaceM4/ChartQA's card, and the release's train/train_*.json with train/png/
- DocVQA, ScienceQA, OCR-VQA, TextCaps, WebSight: their Hub cards
- OpenHermes-2.5, LIMA, Dolly, MetaMathQA, MathInstruct, Orca-Math, CamelAI math, Goat: their released files
- the_cauldron: `cauldron.schema.CAULDRON_FEATURES`
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import datasets
from PIL import Image

from cauldron.schema import CAULDRON_FEATURES
from tests.cauldron.conftest import make_photo

V, S = datasets.Value, datasets.Sequence


def png(seed: int, size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    make_photo(seed, size).save(buffer, format="PNG")
    return buffer.getvalue()


def image(seed: int) -> Image.Image:
    return Image.open(io.BytesIO(png(seed)))


FEATURES = {
    "vqav2": datasets.Features(
        {
            "question_type": V("string"),
            "multiple_choice_answer": V("string"),
            "answers": [{"answer": V("string"), "answer_confidence": V("string"), "answer_id": V("int64")}],
            "image_id": V("int64"),
            "answer_type": V("string"),
            "question_id": V("int64"),
            "question": V("string"),
            "image": datasets.Image(),
        }
    ),
    "textvqa": datasets.Features(
        {
            "image_id": V("string"),
            "question_id": V("int32"),
            "question": V("string"),
            "question_tokens": S(V("string")),
            "image": datasets.Image(),
            "image_width": V("int32"),
            "image_height": V("int32"),
            "flickr_original_url": V("string"),
            "flickr_300k_url": V("string"),
            "answers": S(V("string")),
            "image_classes": S(V("string")),
            "set_name": V("string"),
        }
    ),
    "docvqa": datasets.Features(
        {
            "questionId": V("int32"),
            "question": V("string"),
            "question_types": S(V("string")),
            "image": datasets.Image(),
            "docId": V("int32"),
            "ucsf_document_id": V("string"),
            "ucsf_document_page_no": V("string"),
            "answers": S(V("string")),
        }
    ),
    "chartqa": datasets.Features(
        {
            "image": datasets.Image(),
            "query": V("string"),
            "label": S(V("string")),
            "human_or_machine": datasets.ClassLabel(names=["human", "machine"]),
        }
    ),
    "scienceqa": datasets.Features(
        {
            "image": datasets.Image(),
            "question": V("string"),
            "choices": S(V("string")),
            "answer": V("int8"),
            "hint": V("string"),
            "task": V("string"),
            "grade": V("string"),
            "subject": V("string"),
            "topic": V("string"),
            "category": V("string"),
            "skill": V("string"),
            "lecture": V("string"),
            "solution": V("string"),
        }
    ),
    "ocrvqa": datasets.Features(
        {
            "image": datasets.Image(),
            "image_id": V("string"),
            "questions": S(V("string")),
            "answers": S(V("string")),
            "ocr_tokens": S(V("string")),
            "ocr_info": [
                {
                    "word": V("string"),
                    "bounding_box": {"width": V("float32"), "height": V("float32"), "top_left_x": V("float32"), "top_left_y": V("float32")},
                }
            ],
            "title": V("string"),
            "authorName": V("string"),
            "genre": V("string"),
            "image_width": V("int64"),
            "image_height": V("int64"),
            "image_url": V("string"),
            "set_name": V("string"),
        }
    ),
    "textcaps": datasets.Features(
        {
            "image_id": V("string"),
            "image_classes": S(V("string")),
            "flickr_original_url": V("string"),
            "flickr_300k_url": V("string"),
            "image_width": V("int64"),
            "image_height": V("int64"),
            "set_name": V("string"),
            "image_name": V("string"),
            "image_path": V("string"),
            "reference_strs": S(V("string")),
            "image": datasets.Image(),
        }
    ),
    "localized_narratives": datasets.Features(
        {
            "dataset_id": V("string"),
            "image_id": V("string"),
            "annotator_id": V("int32"),
            "caption": V("string"),
            "original_caption": V("string"),
            "image_url": V("string"),
        }
    ),
    "nlvr2": datasets.Features(
        {
            "identifier": V("string"),
            "sentence": V("string"),
            "left_image": datasets.Image(),
            "right_image": datasets.Image(),
            "label": datasets.ClassLabel(names=["True", "False"]),
            "directory": V("string"),
        }
    ),
    "websight": datasets.Features({"image": datasets.Image(), "text": V("string"), "llm_generated_idea": V("string")}),
    "orca_math": datasets.Features({"question": V("string"), "answer": V("string")}),
}


def vqa_row(question_id: int, img, question: str, answer: str | None) -> dict:
    answers = None if answer is None else [{"answer": answer, "answer_confidence": "yes", "answer_id": k} for k in (1, 2, 3)]
    return {
        "question_type": None if answer is None else "what",
        "multiple_choice_answer": answer,
        "answers": answers,
        "image_id": question_id // 10,
        "answer_type": None if answer is None else "other",
        "question_id": question_id,
        "question": question,
        "image": img,
    }


def hub(name: str, rows: list[dict], path: Path, how: str = "parquet") -> Path:
    dataset = datasets.Dataset.from_list(rows, features=FEATURES[name])
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "parquet":
        dataset.to_parquet(str(path))
    else:
        dataset.save_to_disk(str(path))
    return path


def write_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def build_sources(root: Path) -> dict[str, str]:
    """Write every source under `root`; returns `LABEL=path under root` by subset name."""
    sources: dict[str, str] = {}

    # VQAv2 (parquet from the Hub script): two questions on one image, a test file, and null-answer rows
    hub(
        "vqav2",
        [
            vqa_row(10, image(1), "what color is it?", "red"),
            vqa_row(11, image(1), "is it round?", "yes"),
            vqa_row(20, image(2), "how many?", "2"),
        ],
        root / "vqav2" / "data" / "train-00000-of-00001.parquet",
    )
    hub("vqav2", [vqa_row(30, image(3), "what is it?", None)], root / "vqav2" / "data" / "testdev-00000-of-00001.parquet")
    hub("vqav2", [vqa_row(40, image(4), "what is it?", None)], root / "vqav2" / "data" / "extra-00000-of-00001.parquet")
    sources["vqav2"] = "vqav2=vqav2"

    # VQAv2 whose images were saved as paths (`to_parquet` of a dataset built from local files)
    # (one image is next to the parquet; the other stayed on the machine that wrote it)
    folder, elsewhere = root / "vqav2_paths", root.parent / f"{root.name}-elsewhere" / "train2014"
    for path, seed in ((folder / "train2014" / "COCO_train2014_000000000005.jpg", 5), (elsewhere / "COCO_train2014_000000000006.jpg", 6)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(seed))
    hub(
        "vqav2",
        [
            vqa_row(50, str(folder / "train2014" / "COCO_train2014_000000000005.jpg"), "what is it?", "a cat"),
            vqa_row(60, str(elsewhere / "COCO_train2014_000000000006.jpg"), "what is it?", "a dog"),
        ],
        folder / "train.parquet",
    )
    (elsewhere / "COCO_train2014_000000000006.jpg").unlink()
    sources["vqav2_paths"] = "vqav2_paths:vqav2=vqav2_paths"

    hub(
        "textvqa",
        [
            {
                "image_id": "a1",
                "question_id": 1,
                "question": "what brand is this?",
                "question_tokens": ["what"],
                "image": image(7),
                "image_width": 40,
                "image_height": 30,
                "flickr_original_url": "",
                "flickr_300k_url": "",
                "answers": ["nokia"] * 7 + ["NOKIA"] * 3,
                "image_classes": ["phone"],
                "set_name": "train",
            },
            {
                "image_id": "a2",
                "question_id": 2,
                "question": "what does it say?",
                "question_tokens": [],
                "image": image(8),
                "image_width": 40,
                "image_height": 30,
                "flickr_original_url": "",
                "flickr_300k_url": "",
                "answers": [],
                "image_classes": [],
                "set_name": "val",
            },
        ],
        root / "textvqa",
        how="save_to_disk",
    )
    sources["textvqa"] = "textvqa=textvqa"

    hub(
        "docvqa",
        [
            {
                "questionId": 3,
                "question": "What is the date?",
                "question_types": ["form"],
                "image": image(9),
                "docId": 4,
                "ucsf_document_id": "abc",
                "ucsf_document_page_no": "1",
                "answers": ["May 5, 1999"],
            }
        ],
        root / "docvqa" / "train-00000-of-00001.parquet",
    )
    sources["docvqa"] = "docvqa=docvqa"

    hub(
        "chartqa",
        [{"image": image(10), "query": "Which year is highest?", "label": ["2019"], "human_or_machine": "machine"}],
        root / "chartqa" / "data" / "train-00000-of-00001.parquet",
    )
    sources["chartqa"] = "chartqa=chartqa"
    release = root / "ChartQA Dataset"
    write_json(release / "train" / "train_human.json", [{"imgname": "41.png", "query": "What is the peak value?", "label": "62"}])
    write_json(release / "test" / "test_human.json", [{"imgname": "99.png", "query": "q?", "label": "1"}])
    write_json(release / "train" / "annotations" / "41.json", {"models": []})
    (release / "train" / "png").mkdir(parents=True)
    (release / "train" / "png" / "41.png").write_bytes(png(11))
    sources["chartqa_release"] = "chartqa_release:chartqa=ChartQA Dataset"

    ai2d = root / "ai2d"
    for number in (0, 1):
        write_json(
            ai2d / "questions" / f"{number}.png.json",
            {
                "imageName": f"{number}.png",
                "questions": {
                    f"What eats grass in web {number}?": {
                        "abcLabel": False,
                        "answerTexts": ["fox", "rabbit", "hawk"],
                        "correctAnswer": 1,
                        "questionId": f"{number}.png-0",
                    }
                },
            },
        )
        write_json(ai2d / "annotations" / f"{number}.png.json", {"text": {}})
        (ai2d / "images").mkdir(parents=True, exist_ok=True)
        (ai2d / "images" / f"{number}.png").write_bytes(png(20 + number))
    (ai2d / "ai2d_test_ids.csv").write_text("1\n")
    sources["ai2d"] = "ai2d=ai2d"

    hub(
        "scienceqa",
        [
            {
                "image": image(12),
                "question": "Which is a mammal?",
                "choices": ["frog", "whale"],
                "answer": 1,
                "hint": "",
                "task": "closed choice",
                "grade": "grade4",
                "subject": "natural science",
                "topic": "biology",
                "category": "",
                "skill": "",
                "lecture": "",
                "solution": "",
            },
            {
                "image": None,
                "question": "Which word is a noun?",
                "choices": ["run", "cat"],
                "answer": 1,
                "hint": "",
                "task": "closed choice",
                "grade": "grade2",
                "subject": "language science",
                "topic": "grammar",
                "category": "",
                "skill": "",
                "lecture": "",
                "solution": "",
            },
        ],
        root / "scienceqa" / "data" / "train-00000-of-00001.parquet",
    )
    sources["scienceqa"] = "scienceqa=scienceqa"

    hub(
        "ocrvqa",
        [
            {
                "image": image(13),
                "image_id": "b1",
                "questions": ["Who wrote this book?", "Is this a cookbook?"],
                "answers": ["Jane Doe", "No"],
                "ocr_tokens": [],
                "ocr_info": [],
                "title": "T",
                "authorName": "Jane Doe",
                "genre": "G",
                "image_width": 40,
                "image_height": 30,
                "image_url": "",
                "set_name": "train",
            }
        ],
        root / "ocrvqa" / "train-00000.parquet",
    )
    sources["ocrvqa"] = "ocrvqa=ocrvqa"

    hub(
        "textcaps",
        [
            {
                "image_id": "c1",
                "image_classes": [],
                "flickr_original_url": "",
                "flickr_300k_url": "",
                "image_width": 40,
                "image_height": 30,
                "set_name": "train",
                "image_name": "c1",
                "image_path": "train/c1.jpg",
                "reference_strs": ["a sign says OPEN", "an OPEN sign"],
                "image": image(14),
            }
        ],
        root / "textcaps" / "train-00000.parquet",
    )
    sources["textcaps"] = "textcaps=textcaps"

    hub(
        "localized_narratives",
        [
            {
                "dataset_id": "open_images",
                "image_id": "d1",
                "annotator_id": 3,
                "caption": "In this image we can see a dog.",
                "original_caption": "In this image we can see a dog.",
                "image_url": "https://s3.amazonaws.com/open-images-dataset/train/d1.jpg",
            }
        ],
        root / "localized_narratives" / "train-00000.parquet",
    )
    sources["localized_narratives"] = "localized_narratives=localized_narratives"

    hub(
        "nlvr2",
        [
            {
                "identifier": "train-1-0-0",
                "sentence": "There are two dogs.",
                "left_image": image(15),
                "right_image": image(16),
                "label": "True",
                "directory": "1",
            },
            {
                "identifier": "train-1-0-1",
                "sentence": "There are no dogs.",
                "left_image": image(17),
                "right_image": image(18),
                "label": "False",
                "directory": "1",
            },
        ],
        root / "nlvr2",
        how="save_to_disk",
    )
    sources["nlvr2"] = "nlvr2=nlvr2"
    write_jsonl(
        root / "nlvr2_urls" / "train.json",
        [
            {
                "sentence": "One bird.",
                "left_url": "http://x.org/l.png",
                "right_url": "http://x.org/r.png",
                "label": "True",
                "identifier": "train-2-0-0",
            }
        ],
    )
    sources["nlvr2_urls"] = "nlvr2_urls:nlvr2=nlvr2_urls"

    hub(
        "websight",
        [{"image": image(19), "text": "<html>\n  <body>hi</body>\n</html>", "llm_generated_idea": "a page"}],
        root / "websight" / "train-00000.parquet",
    )
    sources["websight"] = "websight=websight"

    write_json(
        root / "openhermes" / "openhermes2_5.json",
        [
            {
                "conversations": [
                    {"from": "system", "value": "Be brief.", "weight": None},
                    {"from": "human", "value": "Name a prime.", "weight": 0.0},
                    {"from": "gpt", "value": "7", "weight": 1.0},
                ],
                "source": "glaive-code-assist",
                "category": None,
            }
        ],
    )
    sources["openhermes"] = "openhermes=openhermes"
    write_jsonl(root / "lima" / "train.jsonl", [{"conversations": ["Hi", "Hello", "Bye"], "source": "stackexchange"}])
    write_jsonl(root / "lima" / "test.jsonl", [{"conversations": ["Q"], "source": "x"}])
    sources["lima"] = "lima=lima"
    write_jsonl(
        root / "dolly" / "databricks-dolly-15k.jsonl",
        [{"instruction": "Summarise.", "context": "Text.", "response": "Short.", "category": "summarization"}],
    )
    sources["dolly"] = "dolly=dolly"
    write_json(
        root / "metamathqa" / "MetaMathQA-395K.json",
        [{"query": "What is 2+2?", "response": "2+2=4.\nThe answer is: 4", "type": "GSM_Rephrased", "original_question": "2+2?"}],
    )
    sources["metamathqa"] = "metamathqa=metamathqa"
    write_json(
        root / "mathinstruct" / "MathInstruct.json",
        [{"source": "data/CoT/gsm_rft.json", "output": "It is 3.", "instruction": "What is 1+2?"}],
    )
    sources["mathinstruct"] = "mathinstruct=mathinstruct"
    hub("orca_math", [{"question": "What is 3*3?", "answer": "9"}], root / "orca_math" / "data" / "train-00000-of-00001.parquet")
    sources["orca_math"] = "orca_math=orca_math"
    (root / "camel_ai_math").mkdir()
    with zipfile.ZipFile(root / "camel_ai_math" / "math.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "1_1.json",
            json.dumps(
                {
                    "role_1": "Mathematician_RoleType.ASSISTANT",
                    "topic;": "Algebra",
                    "sub_topic": "Linear",
                    "message_1": "Solve x+1=2.",
                    "message_2": "x = 1",
                }
            ),
        )
    sources["camel_ai_math"] = "camel_ai_math=camel_ai_math"
    write_json(root / "goat" / "dataset.json", [{"instruction": "12 + 30", "output": "12 + 30 = 42", "answer": "42", "input": ""}])
    sources["goat"] = "goat=goat"

    cauldron = datasets.Dataset.from_list(
        [{"images": [image(30)], "texts": [{"user": "What is shown?", "assistant": "A chart.", "source": "cocoqa"}]}],
        features=CAULDRON_FEATURES,
    )
    cauldron.to_parquet(str(root / "the_cauldron" / "cocoqa" / "train-00000-of-00001.parquet"))
    sources["cocoqa"] = "cocoqa:cauldron=the_cauldron/cocoqa"
    return sources


def source_arguments(root: Path, sources: dict[str, str]) -> list[str]:
    """`--source LABEL=PATH` arguments for sources given as `LABEL=path under root`."""
    arguments = []
    for value in sources.values():
        label, _, path = value.partition("=")
        arguments += ["--source", f"{label}={root / path}"]
    return arguments
