"""Evaluation runs end to end on the bundled tiny model and benchmark files."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from training.cli import main as train
from training.evaluation.models import load_eval_model
from training.evaluation.predictions import PredictionsWriter, read_predictions, score_predictions
from training.evaluation.prompts import PromptSettings
from training.evaluation.registry import load_registry
from training.evaluation.runner import BenchmarkRun, RunSettings

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "examples" / "models" / "tiny-idefics2"
BENCHMARKS = ROOT / "examples" / "benchmarks"


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def predictions(model, registry, name, batch_size, tmp_path, **prompt):
    path = tmp_path / f"{name}-{batch_size}-{model.description[-12:]}.parquet".replace(" ", "_")
    writer = PredictionsWriter(path)
    settings = RunSettings(batch_size=batch_size, prompt=PromptSettings(image_seq_len=model.image_seq_len, **prompt))
    result = BenchmarkRun(model, registry.protocol, registry[name], BENCHMARKS / name, settings).run(writer)
    writer.close()
    return result, pq.read_table(path).to_pylist()


@pytest.mark.parametrize("name", ["textvqa", pytest.param("mmmu", marks=pytest.mark.slow), pytest.param("coco", marks=pytest.mark.slow)])
def test_batched_answers_equal_batch_size_one(registry, tmp_path, name):
    model = load_eval_model(TINY)
    alone, rows_alone = predictions(model, registry, name, 1, tmp_path)
    batched, rows_batched = predictions(model, registry, name, 4, tmp_path)
    assert [r["prediction"] for r in rows_batched] == [r["prediction"] for r in rows_alone]
    assert all(r["prediction"] for r in rows_alone)  # the tiny random model does write something
    assert batched == alone


def test_transformers_implementation_gives_the_same_answers(registry, tmp_path):
    ours = predictions(load_eval_model(TINY), registry, "ai2d", 2, tmp_path)[1]
    theirs = predictions(load_eval_model(TINY, "transformers"), registry, "ai2d", 2, tmp_path)[1]
    assert [r["prediction"] for r in theirs] == [r["prediction"] for r in ours]


@pytest.mark.slow  # two runs with 2-shot prompts
def test_few_shot_base_style_runs_and_is_seeded(registry, tmp_path):
    model = load_eval_model(TINY)
    first = predictions(model, registry, "textvqa", 3, tmp_path, style="base", shots=2, seed=1)[1]
    again = predictions(model, registry, "textvqa", 2, tmp_path, style="base", shots=2, seed=1)[1]
    assert [r["prediction"] for r in first] == [r["prediction"] for r in again]


def test_eval_command_writes_results_and_its_predictions_score_the_same(tmp_path, capsys):
    specs = [f"{name}={BENCHMARKS / name}" for name in ("textvqa", "docvqa", "ai2d", "mmmu", "coco")]
    args = ["eval", "--model", str(TINY), "--output", str(tmp_path / "run"), "--batch-size", "3"]
    assert train(args + [item for spec in specs for item in ("--benchmark", spec)]) == 0
    printed = capsys.readouterr().out
    assert "TextVQA" in printed and "CIDEr" in printed
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [b["name"] for b in results["benchmarks"]] == ["textvqa", "docvqa", "ai2d", "mmmu", "coco"]
    assert (tmp_path / "run" / "scores.png").stat().st_size > 0
    rows = pq.read_table(tmp_path / "run" / "predictions.parquet").to_pylist()
    assert len(rows) == 6 + 4 + 4 + 3 + 3 and all(r["score"] is not None for r in rows)

    rescored = ["eval", "--predictions", str(tmp_path / "run" / "predictions.parquet"), "--output", str(tmp_path / "rescored")]
    assert train(rescored + [item for spec in specs for item in ("--benchmark", spec)]) == 0
    again = json.loads((tmp_path / "rescored" / "results.json").read_text())
    assert [b["score"] for b in again["benchmarks"]] == pytest.approx([b["score"] for b in results["benchmarks"]])


def test_bundled_predictions_score_as_worked_out(registry, tmp_path):
    answers = read_predictions(BENCHMARKS / "predictions.jsonl")
    result, unknown = score_predictions(registry["textvqa"], BENCHMARKS / "textvqa", answers)
    # stop 1.0, Blue. 1.0, forty-two 0.3 (one annotator wrote "forty two"), orange 0.3, exit sign 0, one 1.0
    assert result.score == pytest.approx(60.0) and unknown == 0 and result.statuses == {"ok": 6}


def test_missing_and_unknown_predictions_are_counted(registry, tmp_path):
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"34602": "stop", "34607": "1", "999": "x"}))
    result, unknown = score_predictions(registry["textvqa"], BENCHMARKS / "textvqa", read_predictions(path))
    assert unknown == 1
    assert result.statuses == {"ok": 2, "missing_prediction": 4} and result.score == pytest.approx(200 / 6)


def test_unparsed_choices_count_as_wrong(registry, tmp_path):
    path = tmp_path / "choices.csv"
    path.write_text("id,prediction\n0,B\n1,circle\n2,I do not know\n3,Answer: A\n")
    result, _ = score_predictions(registry["ai2d"], BENCHMARKS / "ai2d", read_predictions(path))
    assert result.statuses == {"ok": 3, "unparsed": 1} and result.score == pytest.approx(50.0)


def test_bad_benchmark_argument_is_a_one_line_error(tmp_path, capsys):
    assert train(["eval", "--model", str(TINY), "--benchmark", "nosuch=" + str(BENCHMARKS / "ai2d"), "--output", str(tmp_path)]) == 2
    assert "unknown benchmark 'nosuch'" in capsys.readouterr().err
