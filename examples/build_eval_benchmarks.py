"""Rebuild the tiny benchmark files the demo evaluates on, in the Hub releases' own layouts.

    python -m examples.build_eval_benchmarks

Each folder holds one `<split>-00000-of-00001.parquet` written by `datasets` with the columns (and
the `Image` feature) of the release the registry names: lmms-lab/textvqa, lmms-lab/DocVQA,
lmms-lab/ai2d, lmms-lab/MMMU and lmms-lab/COCO-Caption2017. The pictures are drawn here (shapes,
colours, a few words), so the questions have true answers; a tiny random model will not find them.
`predictions.jsonl` is another system's answers to the TextVQA items, to be scored without a model.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent / "benchmarks"
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 200, 30)}


def picture(colour: str, shape: str = "square", words: str = "", size: tuple[int, int] = (64, 48)) -> bytes:
    image = Image.new("RGB", size, (250, 250, 250))
    draw = ImageDraw.Draw(image)
    box = (8, 8, size[0] // 2 + 8, size[1] - 8)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    if words:
        draw.text((size[0] // 2 + 12, size[1] // 2 - 6), words, fill=(0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image(data: bytes) -> dict:
    return {"bytes": data, "path": None}


def ten(*answers: str) -> list[str]:
    """Ten annotator answers: the given ones, the first repeated to fill."""
    return list(answers) + [answers[0]] * (10 - len(answers))


def textvqa() -> dict[str, list]:
    rows = [
        ("What word is written?", picture("red", words="STOP"), ten("stop", "stop sign")),
        ("What colour is the square?", picture("blue"), ten("blue", "dark blue", "blue")),
        ("What number is shown?", picture("green", words="42"), ten("42", "forty two")),
        ("What colour is the circle?", picture("yellow", "circle"), ten("yellow", "orange")),
        ("What does the label say?", picture("green", words="EXIT"), ten("exit")),
        ("How many shapes are there?", picture("red", "circle"), ten("1", "one")),
    ]
    return {
        "image_id": [f"img{i}" for i in range(len(rows))],
        "question_id": list(range(34602, 34602 + len(rows))),
        "question": [q for q, _, _ in rows],
        "image": [image(p) for _, p, _ in rows],
        "answers": [a for _, _, a in rows],
        "ocr_tokens": [[] for _ in rows],
    }


def docvqa() -> dict[str, list]:
    rows = [
        ("What is the title?", picture("blue", words="Report"), ["Report", "report"]),
        ("What is the year?", picture("red", words="1998"), ["1998"]),
        ("Who signed it?", picture("green", words="J. Smith"), ["J. Smith", "John Smith"]),
        ("What is the total?", picture("yellow", words="$12.50"), ["$12.50", "12.50"]),
    ]
    return {
        "questionId": [str(49153 + i) for i in range(len(rows))],
        "question": [q for q, _, _ in rows],
        "question_types": [["layout"] for _ in rows],
        "image": [image(p) for _, p, _ in rows],
        "docId": list(range(len(rows))),
        "ucsf_document_id": [f"doc{i}" for i in range(len(rows))],
        "ucsf_document_page_no": ["1"] * len(rows),
        "answers": [a for _, _, a in rows],
        "data_split": ["validation"] * len(rows),
    }


def ai2d() -> dict[str, list]:
    rows = [
        ("Which colour is the shape?", picture("red"), ["blue", "red", "green", "yellow"], "1"),
        ("What shape is drawn?", picture("blue", "circle"), ["square", "triangle", "circle", "star"], "2"),
        ("Which colour is the circle?", picture("green", "circle"), ["green", "red", "blue", "black"], "0"),
        ("What shape is drawn?", picture("yellow"), ["circle", "square", "line", "star"], "1"),
    ]
    return {
        "question": [q for q, _, _, _ in rows],
        "options": [o for _, _, o, _ in rows],
        "answer": [a for _, _, _, a in rows],
        "image": [image(p) for _, p, _, _ in rows],
    }


def mmmu() -> dict[str, list]:
    rows = [
        (
            "validation_Art_1",
            "<image 1> Which colour fills the shape?",
            "['Red', 'Blue', 'Green', 'Yellow']",
            "B",
            "multiple-choice",
            picture("blue"),
        ),
        ("validation_Math_2", "<image 1> The label shows a number. What is it?", "[]", "42", "open", picture("green", words="42")),
        ("validation_Design_3", "<image 1> What shape is drawn?", "['Circle', 'Square']", "A", "multiple-choice", picture("red", "circle")),
    ]
    columns: dict[str, list] = {
        "id": [r[0] for r in rows],
        "question": [r[1] for r in rows],
        "options": [r[2] for r in rows],
        "explanation": [""] * len(rows),
        "image_1": [image(r[5]) for r in rows],
    }
    for index in range(2, 8):
        columns[f"image_{index}"] = [None] * len(rows)
    columns.update(
        {
            "img_type": ["['Diagrams']"] * len(rows),
            "answer": [r[3] for r in rows],
            "topic_difficulty": ["Easy"] * len(rows),
            "question_type": [r[4] for r in rows],
            "subfield": ["Shapes"] * len(rows),
        }
    )
    return columns


def coco() -> dict[str, list]:
    rows = [
        (
            picture("red"),
            [
                "A red square on a white background.",
                "A red box.",
                "A square that is red.",
                "A red rectangle drawn on white.",
                "Red square.",
            ],
        ),
        (
            picture("blue", "circle"),
            ["A blue circle.", "A blue ball on white.", "A round blue shape.", "A blue disc on a white background.", "Blue circle drawn."],
        ),
        (
            picture("green", words="GO"),
            [
                "A green square next to the word go.",
                "A green box and text.",
                "The word GO beside a green square.",
                "Green square with letters.",
                "A green shape and the word go.",
            ],
        ),
    ]
    ids = [f"00000000{139 + i}.jpg" for i in range(len(rows))]
    return {
        "question_id": ids,
        "image": [image(p) for p, _ in rows],
        "question": ["Please carefully observe the image and come up with a caption for the image."] * len(rows),
        "answer": [c for _, c in rows],
        "id": list(range(len(rows))),
        "license": [1] * len(rows),
        "file_name": ids,
        "coco_url": [""] * len(rows),
        "height": [48] * len(rows),
        "width": [64] * len(rows),
        "date_captured": [""] * len(rows),
    }


def features(name: str):
    from datasets import Features, List, Value
    from datasets import Image as ImageFeature

    text, integer = Value("string"), Value("int64")
    if name == "textvqa":
        return Features(
            {
                "image_id": text,
                "question_id": Value("int32"),
                "question": text,
                "image": ImageFeature(),
                "answers": List(text),
                "ocr_tokens": List(text),
            }
        )
    if name == "docvqa":
        return Features(
            {
                "questionId": text,
                "question": text,
                "question_types": List(text),
                "image": ImageFeature(),
                "docId": integer,
                "ucsf_document_id": text,
                "ucsf_document_page_no": text,
                "answers": List(text),
                "data_split": text,
            }
        )
    if name == "ai2d":
        return Features({"question": text, "options": List(text), "answer": text, "image": ImageFeature()})
    if name == "mmmu":
        return Features(
            {
                "id": text,
                "question": text,
                "options": text,
                "explanation": text,
                **{f"image_{i}": ImageFeature() for i in range(1, 8)},
                "img_type": text,
                "answer": text,
                "topic_difficulty": text,
                "question_type": text,
                "subfield": text,
            }
        )
    return Features(
        {
            "question_id": text,
            "image": ImageFeature(),
            "question": text,
            "answer": List(text),
            "id": integer,
            "license": Value("int8"),
            "file_name": text,
            "coco_url": text,
            "height": integer,
            "width": integer,
            "date_captured": text,
        }
    )


BENCHMARKS = {
    "textvqa": ("validation", textvqa),
    "docvqa": ("validation", docvqa),
    "ai2d": ("test", ai2d),
    "mmmu": ("validation", mmmu),
    "coco": ("val", coco),
}
OTHER_SYSTEM = {"34602": "stop", "34603": "Blue.", "34604": "forty-two", "34605": "orange", "34606": "exit sign", "34607": "one"}


def build_all(output: Path = HERE) -> Path:
    from datasets import Dataset

    for name, (split, build) in BENCHMARKS.items():
        folder = output / name
        folder.mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(build(), features=features(name)).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    lines = [json.dumps({"question_id": key, "answer": value}) for key, value in OTHER_SYSTEM.items()]
    (output / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    return output


def main() -> None:
    print(f"benchmark files written under {build_all()}")


if __name__ == "__main__":
    main()
