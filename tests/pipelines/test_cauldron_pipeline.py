import json

import datasets
import pytest

from cauldron.schema import CAULDRON_FEATURES
from curation.ledger import read_ledger
from examples.build_demo_assets import build_cauldron_sample
from pipelines.cauldron import BuildConfig, SourceSpec, run_build
from pipelines.cauldron_mix import MixConfig, run_mix

pytestmark = pytest.mark.slow


def test_build_merges_dedups_and_mixes(tmp_path, ray_session, tiny_lm):
    build_cauldron_sample(tmp_path / "src")
    raw = tmp_path / "src" / "raw"
    config = BuildConfig(
        sources=[SourceSpec.parse(f"{name}={raw / name}") for name in ("vqav2", "ai2d", "openhermes")],
        output=tmp_path / "built",
        evals={"mmmu": tmp_path / "src" / "evals" / "mmmu"},
    )
    report = run_build(config)
    # 8 VQAv2 images with 3 questions each: the 3 rows of the leaked image are eval matches, the other
    # 7 images keep one row each with the 14 rows merged into them
    assert report["counts"] == {"input": 24 + 10 + 12, "kept": 7 + 10 + 12, "dropped": 3 + 14, "shards": 3, "balanced": True}
    assert report["dropped_by_reason"] == {"eval_phash": 3, "merged_by_image": 14}
    ledger = read_ledger(sorted((tmp_path / "built" / "ledger").glob("*.parquet"))).to_pylist()
    eval_rows = [r for r in ledger if r["stage"] == "eval_dedup"]
    assert len(eval_rows) == 3 and all("leaked_copy.jpg" in r["detail"] for r in eval_rows)
    assert report["details"]["vqav2 files"] == {"read": "train-00000.parquet (24 rows)"}

    vqa = datasets.load_dataset("parquet", data_files=str(tmp_path / "built" / "vqav2" / "*.parquet"), split="train")
    assert vqa.features == CAULDRON_FEATURES
    assert len(vqa) == 7 and all(len(r["texts"]) == 3 for r in vqa)  # three questions per image, merged

    mix = run_mix(
        MixConfig([tmp_path / "built"], tmp_path / "sft", str(tiny_lm), tmp_path / "src" / "demo_mixture.yaml", total_tokens=200_000)
    )
    assert mix["max_gap_points"] < 0.5
    assert (tmp_path / "sft" / "mixture_shares.png").stat().st_size > 1000
    assert run_build(config)["resumed_partitions"] == 3


def test_an_unusable_file_fails_only_its_subset_and_a_rerun_redoes_only_that(tmp_path, ray_session):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.errors import PipelineError

    good, bad = tmp_path / "dolly", tmp_path / "orca"
    good.mkdir()
    bad.mkdir()
    (good / "train.jsonl").write_text('{"instruction": "Say hi.", "context": "", "response": "Hi."}\n')
    table = pa.table({"question": ["What is 2+2?", "What is 3+3?"], "answer": ["4", "6"]})
    pq.write_table(table, bad / "a.parquet")
    pq.write_table(table, bad / "b.parquet")
    whole = (bad / "b.parquet").read_bytes()
    (bad / "b.parquet").write_bytes(whole[: len(whole) // 2])
    config = BuildConfig(sources=[SourceSpec.parse(f"dolly={good}"), SourceSpec.parse(f"orca_math={bad}")], output=tmp_path / "out")
    with pytest.raises(PipelineError, match=r"source orca_math: .*b\.parquet: not a readable parquet file"):
        run_build(config)
    assert (tmp_path / "out" / "manifests" / "dolly.manifest.json").exists()
    assert not (tmp_path / "out" / "manifests" / "orca_math.manifest.json").exists()
    pq.write_table(table, bad / "b.parquet")  # the file is fixed
    report = run_build(config)
    assert report["resumed_partitions"] == 1 and report["counts"] == {"input": 5, "kept": 5, "dropped": 0, "shards": 2, "balanced": True}


def test_an_eval_set_edited_in_place_redoes_the_dedup(tmp_path, ray_session):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, evals = tmp_path / "dolly", tmp_path / "evals"
    source.mkdir()
    evals.mkdir()
    answer = "The marbles left after giving three of the seven away to a friend number four in all."
    lines = [
        {"instruction": "Count the marbles.", "context": "", "response": answer},
        {"instruction": "Say hi.", "context": "", "response": "Hi."},
    ]
    (source / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    pq.write_table(pa.table({"question": ["An unrelated question about the colour of the sky at noon in June."]}), evals / "test.parquet")
    config = BuildConfig(sources=[SourceSpec.parse(f"dolly={source}")], output=tmp_path / "out", evals={"quiz": evals})
    assert run_build(config)["counts"]["kept"] == 2
    pq.write_table(pa.table({"question": [answer]}), evals / "test.parquet")  # same path, new content
    report = run_build(config)
    assert report["resumed_partitions"] == 0
    assert report["counts"]["kept"] == 1 and report["dropped_by_reason"] == {"eval_ngram": 1}
