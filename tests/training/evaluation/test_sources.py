"""The registry and reading benchmark items from the files as the Hub publishes them."""

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.evaluation.registry import RegistryError, load_registry
from training.evaluation.sources import SourceError, count_rows, iter_items

BENCHMARKS = Path(__file__).resolve().parents[3] / "examples" / "benchmarks"
PAPER_BENCHMARKS = {"vqav2", "okvqa", "textvqa", "docvqa", "chartqa", "ai2d", "scienceqa", "mmmu", "mathvista", "mmbench", "coco"}


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_registry_lists_the_papers_benchmarks_with_their_metrics(registry):
    assert set(registry.benchmarks) == PAPER_BENCHMARKS
    metrics = {name: benchmark.metric for name, benchmark in registry.benchmarks.items()}
    assert metrics["docvqa"] == "anls" and metrics["chartqa"] == "relaxed_accuracy" and metrics["coco"] == "cider"
    assert {metrics[n] for n in ("vqav2", "okvqa", "textvqa")} == {"vqa_accuracy"}
    assert registry.protocol.stops("chat", "</s>") == ("Question", "User", "<end_of_utterance>", "</s>")
    assert registry.protocol.stops("base", "</s>")[-1] == "\n"


def test_registry_rejects_a_multiple_choice_benchmark_without_choices(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "benchmarks:\n  x: {paper_name: X, hub: h, split: test, task: multiple_choice, "
        "metric: choice_accuracy, columns: {question: q}, max_new_tokens: 4}\n"
        "protocol: {stop_words: [], chat: {open: a, multiple_choice: b, caption: c}}\n"
    )
    with pytest.raises(RegistryError, match="choices"):
        load_registry(bad)


def test_bundled_files_read_as_items(registry):
    textvqa = list(iter_items(registry["textvqa"], BENCHMARKS / "textvqa"))
    assert len(textvqa) == count_rows(BENCHMARKS / "textvqa", "validation") == 6
    assert textvqa[0].id == "34602" and len(textvqa[0].answers) == 10 and len(textvqa[0].images) == 1
    ai2d = list(iter_items(registry["ai2d"], BENCHMARKS / "ai2d"))
    assert [item.id for item in ai2d] == ["0", "1", "2", "3"]  # no id column: row numbers
    assert [item.answer_letter for item in ai2d] == ["B", "C", "A", "B"]  # 0-based index -> letter
    mmmu = list(iter_items(registry["mmmu"], BENCHMARKS / "mmmu"))
    assert [item.task for item in mmmu] == ["multiple_choice", "open", "multiple_choice"]
    assert mmmu[0].choices == ["Red", "Blue", "Green", "Yellow"] and mmmu[0].answer_letter == "B"
    assert mmmu[1].answers == ["42"] and len(mmmu[1].images) == 1  # the six empty image columns are skipped
    assert [len(item.answers) for item in iter_items(registry["coco"], BENCHMARKS / "coco")] == [5, 5, 5]


def test_save_to_disk_folder_reads_the_same_items(registry, tmp_path):
    import datasets

    parquet = str(BENCHMARKS / "docvqa" / "validation-00000-of-00001.parquet")
    datasets.DatasetDict({"validation": datasets.Dataset.from_parquet(parquet)}).save_to_disk(str(tmp_path / "hf"))
    from_parquet = list(iter_items(registry["docvqa"], BENCHMARKS / "docvqa"))
    from_folder = list(iter_items(registry["docvqa"], tmp_path / "hf"))
    assert from_folder == from_parquet and len(from_folder) == 4
    with pytest.raises(SourceError, match="no split 'test'"):
        list(iter_items(registry["docvqa"], tmp_path / "hf", split="test"))


def test_split_files_of_a_snapshot_folder_and_limit(registry, tmp_path):
    source = BENCHMARKS / "ai2d" / "test-00000-of-00001.parquet"
    (tmp_path / "data").mkdir()
    shutil.copy(source, tmp_path / "data" / "test-00000-of-00001.parquet")
    table = pq.read_table(source).slice(0, 1)
    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet")
    assert count_rows(tmp_path, "test") == 4 and count_rows(tmp_path, "train") == 1
    assert len(list(iter_items(registry["ai2d"], tmp_path, limit=2))) == 2


def test_missing_column_names_the_file_and_its_columns(registry, tmp_path):
    pq.write_table(pa.table({"question": ["q"]}), tmp_path / "test.parquet")
    with pytest.raises(SourceError, match="no column"):
        list(iter_items(registry["ai2d"], tmp_path / "test.parquet"))


def test_unusable_items_are_kept_with_their_problem(registry, tmp_path):
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "question": ["q1", "q2"],
            "options": [["x", "y"], ["x", "y"]],
            "answer": ["0", "7"],
            "image": pa.array([{"bytes": None, "path": "img/1.png"}, {"bytes": b"png", "path": None}], type=image),
        }
    )
    pq.write_table(table, tmp_path / "test.parquet")
    items = list(iter_items(registry["ai2d"], tmp_path / "test.parquet"))
    first, second = items[0].problem, items[1].problem
    assert first is not None and "path only" in first
    assert second is not None and "names none of the choices" in second


def test_bundled_files_are_what_the_builder_writes(tmp_path):
    from examples.build_eval_benchmarks import build_all

    built = build_all(tmp_path)
    for file in sorted(BENCHMARKS.rglob("*.parquet")):
        assert pq.read_table(built / file.relative_to(BENCHMARKS)).equals(pq.read_table(file)), file
    assert (built / "predictions.jsonl").read_text() == (BENCHMARKS / "predictions.jsonl").read_text()
